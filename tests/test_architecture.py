"""The import rules of docs/architecture.md, read from the source with ``ast``: a lazy import
inside a function counts as much as one at the top of a module.

- an engine (physical, logical, wal, monitor, repository, codec, storage, pg) never imports
  ``commands`` or the CLI; nothing but the CLI itself imports the CLI;
- ``pg/`` imports nothing of pgkura but ``errors`` (and itself);
- outside ``repository/`` and ``storage/`` nothing touches a store (``.storage``), seals or
  unseals, builds object keys (``layout.*_key``, ``layout.*_prefix``) or imports a storage
  backend's module: the repository is the only door to what is stored.

Modules other helpers are rewriting are on named pending lists; each entry must still be a
violation, so that a list that has gone stale fails and is removed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pgkura"

ENGINES = ("physical", "logical", "wal", "monitor", "repository", "codec", "storage", "pg")
# The CLI: what parses arguments, prints and exits.
CLI = ("pgkura.cli", "pgkura.entry")
# Where stored objects may be named, sealed and touched.
DOOR = ("repository", "storage")
SEALING = {"seal", "unseal", "unseal_to"}
BACKEND_MODULES = ("pgkura.repository.sealed", "pgkura.storage.posix", "pgkura.storage.s3")

# pg/ imports nothing of pgkura but errors (LSNs in pg/lsn.py, pid checks in pg/procs.py,
# connect() takes the connection string): nothing is pending any more.
PENDING_PG_LEAF: dict[str, set[str]] = {}

# Rewritten by another change (retention), which routes gc through repository APIs. Remove
# an entry when it is gone.
PENDING_DOOR: dict[str, set[str]] = {}


@dataclass(frozen=True)
class Module:
    rel: str  # path below src/pgkura, "wal/archive.py"
    name: str  # dotted, "pgkura.wal.archive"
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.rel.split("/", 1)[0] if "/" in self.rel else ""


def _modules() -> list[Module]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        dotted = "pgkura." + rel[: -len(".py")].replace("/", ".")
        dotted = dotted.removesuffix(".__init__")
        out.append(Module(rel, dotted, ast.parse(path.read_text(), str(path))))
    return out


MODULES = _modules()


def imports_of(module: Module) -> list[str]:
    """Every pgkura module ``module`` imports, wherever the import statement is."""
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.name.rsplit(".", node.level)[0]
                if module.rel.endswith("__init__.py") and node.level == 1:
                    base = module.name
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append(target)
            # "from pgkura import commands" imports the module pgkura.commands
            found += [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
    return sorted({n for n in found if n == "pgkura" or n.startswith("pgkura.")})


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (SRC / rel).is_dir() or (SRC / rel).with_suffix(".py").is_file()


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def door_violations(module: Module) -> set[str]:
    """What ``module`` does that only the repository may: '.storage', a sealing call, a key
    built with layout, an import of a backend or the envelope."""
    found: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute):
            if node.attr == "storage":
                found.add(".storage")
            if node.attr in SEALING:
                found.add(node.attr)
            if (
                isinstance(node.value, ast.Name)
                and node.value.id == "layout"
                and (node.attr.endswith("_key") or node.attr.endswith("_prefix"))
            ):
                found.add(f"layout.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in SEALING:
            found.add(node.id)
    found |= {
        f"import {name}"
        for name in imports_of(module)
        if any(_under(name, b) for b in BACKEND_MODULES)
    }
    return found


def _by_rel(rel: str) -> Module:
    return next(m for m in MODULES if m.rel == rel)


def test_the_source_is_found() -> None:
    rels = {m.rel for m in MODULES}
    assert {"repository/repo.py", "wal/archive.py", "commands/restore.py"} <= rels


def test_engines_never_import_commands_or_the_cli() -> None:
    offending = [
        f"{m.rel}: {name}"
        for m in MODULES
        if m.package in ENGINES
        for name in imports_of(m)
        if _under(name, "pgkura.commands") or any(_under(name, c) for c in CLI)
    ]
    assert offending == []


def test_only_the_cli_imports_the_cli() -> None:
    offending = [
        f"{m.rel}: {name}"
        for m in MODULES
        if not any(m.name.startswith(c) for c in CLI)
        for name in imports_of(m)
        if any(name.startswith(c) for c in CLI)
    ]
    assert offending == []


def _pg_violations(module: Module) -> set[str]:
    return {
        name
        for name in imports_of(module)
        if not (_under(name, "pgkura.errors") or _under(name, "pgkura.pg"))
    }


def test_pg_imports_nothing_of_pgkura_but_errors() -> None:
    offending = []
    for m in MODULES:
        if m.package != "pg":
            continue
        unexpected = _pg_violations(m) - PENDING_PG_LEAF.get(m.rel, set())
        offending += [f"{m.rel}: {name}" for name in sorted(unexpected)]
    assert offending == []


def test_the_pending_pg_list_is_not_stale() -> None:
    stale = [
        f"{rel}: {name} (no longer imported: remove it from PENDING_PG_LEAF)"
        for rel, names in PENDING_PG_LEAF.items()
        for name in sorted(names)
        if not any(m.rel == rel for m in MODULES) or name not in _pg_violations(_by_rel(rel))
    ]
    assert stale == []


def test_only_the_repository_touches_stored_objects() -> None:
    offending = []
    for m in MODULES:
        if m.package in DOOR:
            continue
        unexpected = door_violations(m) - PENDING_DOOR.get(m.rel, set())
        offending += [f"{m.rel}: {what}" for what in sorted(unexpected)]
    assert offending == []


def test_the_pending_door_list_is_not_stale() -> None:
    stale = [
        f"{rel}: {what} (gone: remove it from PENDING_DOOR)"
        for rel, whats in PENDING_DOOR.items()
        for what in sorted(whats)
        if not any(m.rel == rel for m in MODULES) or what not in door_violations(_by_rel(rel))
    ]
    assert stale == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(repo):\n    return repo.storage.get('x')\n", {".storage"}),
        ("from pgkura.repository.sealed import seal\n", {"import pgkura.repository.sealed"}),
        ("def f(repo, d):\n    return repo.unseal(d)\n", {"unseal"}),
        ("def f(a, n):\n    return layout.wal_key(a, n)\n", {"layout.wal_key"}),
        (
            "def f():\n    from pgkura.storage.posix import fsync_dir\n",
            {"import pgkura.storage.posix"},
        ),
        ("def f(a):\n    return layout.describe_archive(a)\n", set()),
        ("from pgkura.storage import open_storage\n", set()),
    ],
)
def test_the_door_check_sees_what_it_must(source: str, expected: set[str]) -> None:
    module = Module("commands/x.py", "pgkura.commands.x", ast.parse(source))
    assert door_violations(module) == expected


def test_the_import_check_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from pgkura.commands import open_repository\nfrom . import names\n"
    module = Module("wal/x.py", "pgkura.wal.x", ast.parse(source))
    assert imports_of(module) == ["pgkura.commands", "pgkura.wal", "pgkura.wal.names"]
