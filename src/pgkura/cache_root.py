"""Where pgkura's local cache lives (the cache-dir setting): a module of its own, without
logging or the repository, so that archive-push can find its hints at no import cost."""

from __future__ import annotations

import os
import pwd


def default_cache_root() -> str:
    """``$XDG_CACHE_HOME/pgkura``, else ``~/.cache/pgkura`` of the user this process runs as:
    the home directory from the password database, since ``runuser`` and ``su`` keep the
    caller's ``$HOME`` (root's, which the postgres user cannot write)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "pgkura")
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return os.path.join(home, ".cache", "pgkura")


def cache_root(setting: str | None) -> str | None:
    """The cache directory the cache-dir setting names: None when it is ``off``."""
    if setting is None or setting == "":
        return default_cache_root()
    if setting.lower() == "off":
        return None
    return os.path.abspath(os.path.expanduser(setting))
