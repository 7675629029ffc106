"""A repository in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph), through obstore.

Every write is one PUT, which S3 makes visible whole or not at all: put-if-absent is a
conditional PUT (``If-None-Match: *``), replace a plain PUT. There are no temporary objects to
sweep. obstore retries transient failures of each request (5xx, connection errors) with
exponential backoff; this module adds what it does not do, within the same time budget
(``s3-retry-seconds``): the 409 ConditionalRequestConflict of a conditional PUT (AWS: "retry
the upload"), which obstore reports as "already exists", and 429/503 SlowDown answers that
reach it. Then it turns what is left into one StorageError that names the operation, the key,
the location and the setting to fix.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from pgkura.errors import ObjectNotFound, StorageError
from pgkura.storage.base import ObjectInfo, Storage
from pgkura.storage.requests import count
from pgkura.storage.s3_config import CREDENTIALS_HINT, S3Options, store_arguments

T = TypeVar("T")

DELETE_BATCH = 1000  # the most keys one DeleteObjects request may name

_STATUS_RE = re.compile(r"status code: (\d{3})|\((\d{3}) [A-Z][A-Za-z ]+\)")
_CODE_RE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
# rustls's words for a certificate it refuses, as obstore's error text carries them.
_TLS_RE = re.compile(r"InvalidCertificate\(\s*(\w+)|(certificate|handshake)", re.IGNORECASE)


class _Transient(Exception):
    """A failure worth another try while the budget lasts."""


class S3Storage(Storage):
    fork_safe = False

    def __init__(self, location: str, options: S3Options | None = None) -> None:
        self.options = options or S3Options()
        self.max_connections = self.options.max_connections
        self.location = location.rstrip("/")
        kwargs = store_arguments(location, self.options)
        self.bucket: str = kwargs["bucket"]
        self._store = S3Store(**kwargs)
        self._pid = os.getpid()

    # -- the operations ------------------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._check_key(key)

        def once() -> bool:
            try:
                count("put", key)
                obstore.put(self._store, key, data, mode="create", use_multipart=False)
                return True
            except (AlreadyExistsError, PreconditionError):
                pass
            # obstore reports 412 (the key exists) and 409 (a concurrent write or delete of the
            # key was in progress: AWS says retry) alike; the object tells them apart. And a
            # PUT whose answer was lost may have landed, the retry then meeting our own object:
            # the same bytes count as written by this call (a lock record names its pid, other
            # objects are named by their content).
            try:
                count("get", key)
                stored = bytes(obstore.get(self._store, key).bytes())
            except FileNotFoundError:
                raise _Transient("409 ConditionalRequestConflict") from None
            return stored == bytes(data)

        return self._call("write", key, once)

    def put(self, key: str, data: bytes) -> None:
        self._check_key(key)

        def once() -> None:
            count("put", key)
            obstore.put(self._store, key, data, use_multipart=False)

        self._call("write", key, once)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self._check_key(key)

        def once() -> bytes:
            if length == 0:
                count("head", key)
                obstore.head(self._store, key)  # ObjectNotFound when absent, as a read would
                return b""
            count("get", key)
            if length is not None:
                return bytes(obstore.get_range(self._store, key, start=start, length=length))
            options: Any = {"range": {"offset": start}} if start else None
            return bytes(obstore.get(self._store, key, options=options).bytes())

        try:
            return self._call("read", key, once)
        except _RangeNotSatisfiable:
            return b""  # from at or past the end: nothing, as a file read gives

    def size(self, key: str) -> int | None:
        self._check_key(key)
        try:
            return int(self._call("stat", key, lambda: self._head(key))["size"])
        except ObjectNotFound:
            return None
        except StorageError as exc:
            if "HTTP 403" not in exc.message:
                raise
            # A HEAD's answer has no body, so no S3 error code: wrong credentials and a
            # missing permission look alike. A one-byte read of the key tells them apart.
            try:
                self.get(key, 0, 1)
            except ObjectNotFound:
                return None
            raise exc from None

    def _head(self, key: str) -> Any:
        count("head", key)
        return obstore.head(self._store, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # S3 lists by any prefix, object_store by whole path segments: list the directory
        # part, keep the keys that start with the whole prefix. A listing broken off by a
        # transient failure resumes after the last key it gave (S3's start-after).
        directory = prefix.rpartition("/")[0]
        last: str | None = None
        deadline = time.monotonic() + self.options.retry_seconds
        delay = 0.1
        while True:
            try:
                stream = obstore.list(self._store, directory or None, offset=last, chunk_size=1000)
                count("list", prefix)  # the first page; each further page below
                for pages, chunk in enumerate(stream):
                    if pages:
                        count("list", prefix)
                    for meta in chunk:
                        path = meta["path"]
                        last = path
                        if path.startswith(prefix):
                            mtime = meta["last_modified"].timestamp()
                            yield ObjectInfo(path, int(meta["size"]), mtime)
                return
            except Exception as exc:
                failure = self._classify(exc, "list", prefix or "/")
                if isinstance(failure, ObjectNotFound):
                    return  # a listing reports no absence: nothing there
                if not isinstance(failure, _Transient) or time.monotonic() > deadline:
                    raise self._storage_error(failure, "list", prefix or "/") from None
                delay = _pause(delay, deadline)

    def delete(self, key: str) -> None:
        self._check_key(key)

        def once() -> None:
            count("delete", key)
            obstore.delete(self._store, key)

        self._call("delete", key, once)

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            self._check_key(key)
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: Sequence[str]) -> None:
        what = keys[0] if len(keys) == 1 else f"{keys[0]} and {len(keys) - 1} more"

        def once() -> None:
            count("delete", keys[0])
            obstore.delete(self._store, keys)

        self._call("delete", what, once)

    # -- retries and errors --------------------------------------------------------------

    def _check_key(self, key: str) -> None:
        if not key or key.startswith("/") or ".." in key.split("/") or "//" in key:
            raise ValueError(f"invalid storage key {key!r}")
        if os.getpid() != self._pid:
            # obstore's I/O threads are not in a forked child: a request would hang forever.
            raise StorageError(
                f"the S3 client of {self.location} was used in a forked process",
                hint="this is a bug in pgkura: run with --jobs 1 and report it",
            )

    def _call(self, op: str, key: str, once: Callable[[], T]) -> T:
        """``once()`` until it succeeds, fails for good, or the time budget runs out."""
        deadline = time.monotonic() + self.options.retry_seconds
        delay = 0.1
        while True:
            try:
                return once()
            except Exception as exc:
                failure = self._classify(exc, op, key)
                if isinstance(failure, (ObjectNotFound, _RangeNotSatisfiable)):
                    raise failure from None
                if not isinstance(failure, _Transient) or time.monotonic() > deadline:
                    raise self._storage_error(failure, op, key) from None
                delay = _pause(delay, deadline)

    def _classify(self, exc: Exception, op: str, key: str) -> Exception:
        """What ``exc`` from obstore means: ObjectNotFound (absent), _Transient (retry), or
        the exception to describe."""
        if isinstance(exc, (_Transient, StorageError, ValueError)) and not _is_obstore(exc):
            return exc
        text = str(exc)
        status, code = _status(text), _code(text)
        if code == "NoSuchBucket":
            return exc
        if isinstance(exc, FileNotFoundError) or code == "NoSuchKey":
            return ObjectNotFound(f"{key} does not exist in {self.location}")
        if status == 416 or code == "InvalidRange":
            return _RangeNotSatisfiable()
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
            return exc
        if status is not None and (status >= 500 or status in (408, 429)):
            return _Transient(text)
        tls = _TLS_RE.search(text) is not None
        if (
            status is None
            and not tls
            and ("error sending request" in text or "connection" in text.lower())
        ):
            return _Transient(text)
        return exc

    def _storage_error(self, exc: Exception, op: str, key: str) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        text = str(exc)
        code, status = _code(text), _status(text)
        where = f"cannot {op} {key} in {self.location}"
        retried = f"; retried for {self.options.retry_seconds:g} s"
        endpoint = self.options.endpoint or f"AWS S3 ({self.options.region})"
        if code == "NoSuchBucket":
            return StorageError(
                f"{where}: the bucket {self.bucket!r} does not exist at {endpoint}",
                hint=f"create the bucket, or fix --repo s3://{self.bucket}/... or --s3-endpoint",
            )
        if code in _CREDENTIAL_CODES or isinstance(exc, UnauthenticatedError):
            return StorageError(
                f"{where}: the server refused the S3 credentials ({code or status})",
                hint=CREDENTIALS_HINT,
            )
        if code in (
            "AuthorizationHeaderMalformed",
            "PermanentRedirect",
            "IllegalLocationConstraintException",
        ):
            return StorageError(
                f"{where}: the bucket is in another region ({code})",
                hint="set --s3-region (PGKURA_S3_REGION) to the bucket's region",
            )
        if isinstance(exc, PermissionDeniedError) or code == "AccessDenied":
            detail = code or f"HTTP {status}: wrong credentials, or no permission"
            return StorageError(
                f"{where}: access denied ({detail})",
                hint="give these credentials access to the bucket and prefix, or use others: "
                + CREDENTIALS_HINT,
            )
        tls = _TLS_RE.search(text)
        if tls and status is None:
            return StorageError(
                f"{where}: the TLS certificate of {endpoint} does not verify "
                f"({tls.group(1) or tls.group(2)})",
                hint="give the CA that signed the server's certificate with --s3-ca-file, "
                "or, for a test server only, --s3-verify-tls off",
            )
        if isinstance(exc, _Transient) or (status is None and _is_obstore(exc)):
            reason = f"HTTP {status}" if status else "the server did not answer"
            return StorageError(
                f"{where}: {reason} at {endpoint}{retried}",
                hint="check --s3-endpoint (PGKURA_S3_ENDPOINT) and that the server runs; "
                "--s3-retry-seconds sets how long pgkura retries",
            )
        return StorageError(
            f"{where}: {code or 'HTTP ' + str(status)} ({_first_line(text)})",
            hint="check --repo, --s3-endpoint and --s3-region",
        )


class _RangeNotSatisfiable(Exception):
    """A read that starts at or past the end of the object (HTTP 416)."""


def _is_obstore(exc: Exception) -> bool:
    return type(exc).__module__.startswith("obstore")


def _status(text: str) -> int | None:
    match = _STATUS_RE.search(text)
    return int(match.group(1) or match.group(2)) if match else None


def _code(text: str) -> str | None:
    match = _CODE_RE.search(text)
    return match.group(1) if match else None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line[-200:]


def _pause(delay: float, deadline: float) -> float:
    """Sleep about ``delay`` (full jitter, never past ``deadline``); the next delay."""
    jitter = int.from_bytes(os.urandom(2), "big") / 65535  # random costs archive-push 1 ms
    pause = delay / 2 + jitter * delay / 2
    time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    return min(delay * 2, 4.0)
