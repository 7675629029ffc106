"""Who owns a data directory that root restored.

PostgreSQL refuses to start as root and refuses a data directory its OS user does not own, so
a restore run as root gives everything it wrote (the data directory, the tablespace locations,
every file, directory and link under them) to the cluster's OS user: the one that owned the
backed-up data directory (its name, recorded by the backup as ``pgdata_owner``) when this host
has that user, else the owner of the directory the target is made in, when that is not root.
When neither names a user, the files stay root's and the restore says what to run. A restore
by any other user writes files it owns, which is what the server then needs: nothing changes.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from pgkura.repository.manifest import Manifest


def data_directory_owner(pgdata: Path) -> str | None:
    """The name of the OS user that owns ``pgdata`` (for the manifest); None when it has
    none here."""
    try:
        return pwd.getpwuid(pgdata.stat().st_uid).pw_name
    except KeyError:
        return None


def owner_for(manifest: Manifest, target: Path) -> pwd.struct_passwd | None:
    """The OS user a restore run as root gives ``target`` to (the module's docstring); None
    when not run as root, or when no user other than root can be named."""
    if os.geteuid() != 0:
        return None
    recorded = manifest.extra.get("pgdata_owner")
    if isinstance(recorded, str):
        try:
            user = pwd.getpwnam(recorded)
        except KeyError:
            user = None
        if user is not None and user.pw_uid != 0:
            return user
    parent = target.resolve().parent
    try:
        user = pwd.getpwuid(parent.stat().st_uid)
    except (KeyError, OSError):
        return None
    return user if user.pw_uid != 0 else None


def give_to(user: pwd.struct_passwd, roots: list[Path]) -> None:
    """Make ``user`` (and its primary group) the owner of each of ``roots`` and of everything
    under it; links are changed themselves, never followed (a restored tree's links point
    where the backup said: tablespaces, whose locations are among ``roots``)."""
    uid, gid = user.pw_uid, user.pw_gid
    for root in roots:
        os.chown(root, uid, gid, follow_symlinks=False)
        for top, dirs, files in os.walk(root, followlinks=False):
            for name in (*dirs, *files):
                os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)
