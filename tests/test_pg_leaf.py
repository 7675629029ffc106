"""pg/ is the leaf every layer may use: it imports nothing of pgkura but errors and itself.

Read from the source (ast), so that a lazy import inside a function counts as much as one at
the top of the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PG_DIR = Path(__file__).resolve().parents[1] / "src" / "pgkura" / "pg"
ALLOWED = ("pgkura.errors", "pgkura.pg")


def _pgkura_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):
            names = ["pgkura.pg." + (node.module or "")]  # relative: inside pg/
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "pgkura" or n.startswith("pgkura.")]
    return found


def _allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def test_pg_imports_nothing_of_pgkura_but_errors() -> None:
    modules = sorted(PG_DIR.glob("*.py"))
    assert len(modules) > 5, f"no pg/ modules found under {PG_DIR}"
    offending = [
        f"{path.name}:{line}: {module}"
        for path in modules
        for line, module in _pgkura_imports(path)
        if not _allowed(module)
    ]
    assert offending == []


def test_the_check_sees_a_lazy_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pgkura.wal.names import parse_lsn\n")
    assert _pgkura_imports(source) == [(2, "pgkura.wal.names")]
    assert not _allowed("pgkura.wal.names")
    assert _allowed("pgkura.pg.lsn") and _allowed("pgkura.errors")


def test_wal_names_uses_the_lsn_of_pg() -> None:
    from pgkura.pg import lsn
    from pgkura.wal import names

    assert names.parse_lsn is lsn.parse_lsn
    assert names.format_lsn(names.parse_lsn("16/B374D848")) == "16/B374D848"
