"""Files that hold a secret (the passphrase of an encrypted repository, S3 credentials): a
secret that other users can read or replace protects nothing, so such a file must be a
regular file that only its owner may read or write (mode 0600 or stricter). One rule, one
message, whichever secret it is. Plain ``os`` only: archive-push reads a key file per segment.
"""

from __future__ import annotations

import os
import stat

from pgkura.errors import ConfigError


def check_private(path: str, what: str, unreadable_hint: str) -> None:
    """Raise ConfigError unless ``path`` is a regular file closed to other users. ``what``
    names the file in the message ("the key file /x (--key-file)"); ``unreadable_hint`` says
    what to do when it cannot be read at all."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what}: {exc.strerror or 'unreadable'}", hint=unreadable_hint
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} is not a regular file", hint=unreadable_hint)
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{what} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            "pgkura refuses to use it",
            hint=f"chmod 600 {path}",
        )
