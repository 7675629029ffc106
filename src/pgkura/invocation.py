"""pgkura command lines that other programs run: what they say, and what pgkura makes of them.

PostgreSQL runs ``archive_command`` and ``restore_command`` through ``/bin/sh``, as its own OS
user, in the data directory, with the postmaster's environment; the async pusher is started by
pgkura itself. All three are written by :func:`child_args` and read back by :func:`resolve`,
which takes the settings the way that pgkura would take them when it runs: its flags, the
config file it names (or ``PGKURA_CONFIG``, or the default one), then ``PGKURA_*`` variables.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Mapping

from pgkura.config import Config, resolve_settings, split_global

# Shell operators that end one simple command and start another.
SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "\n", "(", ")"}
# Words a simple command may start with before the program it runs.
PREFIXES = {"exec", "env", "nice", "nohup", "command"}


class Invocation:
    """One pgkura command line: variables set on it, global flags, the command and the rest."""

    __slots__ = ("command", "config_file", "env", "flags", "rest")

    def __init__(
        self,
        env: dict[str, str],
        flags: dict[str, str],
        config_file: str | None,
        command: str | None,
        rest: list[str],
    ) -> None:
        self.env = env
        self.flags = flags
        self.config_file = config_file
        self.command = command
        self.rest = rest


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell command line (``a && b; c | d`` gives four)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _program_words(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """The variables assigned before the program, and the words from the program on."""
    env: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, sep, value = word.partition("=")
        if sep and name.isidentifier():
            env[name] = value
        elif word not in PREFIXES:
            break
        i += 1
    return env, words[i:]


def _pgkura_args(words: list[str]) -> list[str] | None:
    """The arguments after the pgkura program in ``words``, or None when it runs another."""
    if not words:
        return None
    if os.path.basename(words[0]) == "pgkura":
        return words[1:]
    if len(words) >= 3 and words[1] == "-m" and words[2] in ("pgkura", "pgkura.entry"):
        return words[3:]  # python -m pgkura.entry, as the spool starts its daemons
    return None


def find_invocation(text: str, command: str) -> Invocation | None:
    """The first simple command of shell text ``text`` that runs ``pgkura ... COMMAND``.
    Raises ValueError when that command line does not parse."""
    try:
        commands = shell_commands(text)
    except ValueError as exc:
        raise ValueError(f"it does not parse as a shell command ({exc})") from None
    for words in commands:
        env, program = _program_words(words)
        args = _pgkura_args(program)
        if args is None:
            continue
        flags, config_file, found, rest = split_global(args)
        if found == command:
            return Invocation(env, flags, config_file, found, rest)
    return None


def resolve(
    invocation: Invocation, environ: Mapping[str, str], cwd: str
) -> tuple[Config, dict[str, str]]:
    """The settings ``invocation`` runs with in the environment ``environ`` and directory
    ``cwd`` (relative paths are taken from there), and where each came from."""
    env = {**environ, **invocation.env}
    flags: dict[str, str] = dict(invocation.flags)
    config_file = invocation.config_file
    if config_file is not None:
        config_file = os.path.join(cwd, config_file)
    elif env.get("PGKURA_CONFIG"):
        env["PGKURA_CONFIG"] = os.path.join(cwd, env["PGKURA_CONFIG"])
    cfg, sources = resolve_settings(flags, config_file, env)
    if cfg.repo and "://" not in cfg.repo:
        cfg.repo = os.path.normpath(os.path.join(cwd, cfg.repo))
    return cfg, sources


def same_repository(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def child_args(cfg: Config, *, spool_path: str | None = None) -> list[str]:
    """Global flags that make a pgkura started elsewhere (by PostgreSQL's restore_command, or
    by pgkura as its background archiver) use this repository, stanza and settings, whatever
    that process's environment holds: flags win over it. Secrets are never among them."""
    out: list[str] = []
    if cfg.config_file:
        out += ["--config", os.path.abspath(cfg.config_file)]
    repo = cfg.require_repo()
    out += ["--repo", repo if "://" in repo else os.path.abspath(repo), *cfg.storage_flags()]
    out += ["--stanza", cfg.stanza]
    if cfg.key_file:  # the file's path: the passphrase stays in it
        out += ["--key-file", os.path.abspath(cfg.key_file)]
    if cfg.pg_bin:
        out += ["--pg-bin", cfg.pg_bin]
    if cfg.archive_async:
        out += ["--archive-async", "on"]
    spool = spool_path or cfg.spool_path
    if spool:
        out += ["--spool-path", os.path.abspath(spool)]
    return out


def pgkura_executable() -> str:
    """The pgkura program of this installation (its virtual environment's), by full path."""
    candidate = os.path.join(os.path.dirname(sys.executable), "pgkura")
    return candidate if os.path.exists(candidate) else "pgkura"


def command_line(cfg: Config, command: list[str]) -> str:
    """A shell command line that runs pgkura ``command`` with ``cfg``'s settings."""
    return shlex.join([pgkura_executable(), *child_args(cfg), *command])


def readable_by(path: str, uid: int, gids: set[int]) -> bool:
    """Whether the OS user ``uid`` (in groups ``gids``) may read ``path``: read permission on
    it and search permission on each directory above it. Judged from the mode bits (root
    reads everything), because pgkura may run as another user than the one that reads."""
    if uid == 0:
        return True
    try:
        checks = [(os.path.realpath(path), stat.S_IRUSR)]
        parent = os.path.dirname(checks[0][0])
        while True:
            checks.append((parent, stat.S_IXUSR))
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
        for where, user_bit in checks:
            st = os.stat(where)
            if st.st_uid == uid:
                bit = user_bit
            elif st.st_gid in gids:
                bit = user_bit >> 3
            else:
                bit = user_bit >> 6
            if not st.st_mode & bit:
                return False
    except OSError:
        return False
    return True
