"""The shape of the code: a size budget for every module and function of src/pgkura, and a CLI
built from one module per verb.

The budget (issue 14): no module over 450 lines, no function over 80 (counted from its
``def`` line to its last line; decorators left out). What exceeds it today is named in
OVER_BUDGET, and the test fails both when something new exceeds the budget and when a
named item no longer does, so that the list only ever shrinks: when you bring one under
the budget, delete its line.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import click

from runner import run_pgkura

SRC = Path(__file__).resolve().parent.parent / "src" / "pgkura"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80

#: Modules ("physical/restore.py") and functions ("commands/demo.py:Demo.run") over the
#: budget, each to be split and then deleted from here. Nothing is over it any more.
OVER_BUDGET: frozenset[str] = frozenset()


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method, nested ones included."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            assert node.end_lineno is not None
            found.append((name, node.end_lineno - node.lineno + 1))
            found += _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, prefix + node.name + ".")
        else:
            found += _functions(node, prefix)
    return found


def over_budget() -> dict[str, int]:
    """Every module and function of src/pgkura over the budget, with its length in lines."""
    over = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            over[rel] = lines
        for name, length in _functions(ast.parse(text, filename=str(path))):
            if length > MAX_FUNCTION_LINES:
                over[f"{rel}:{name}"] = length
    return over


def test_the_counting_sees_functions_methods_and_nested_ones() -> None:
    source = (
        "def f():\n    def g():\n        pass\n\nclass C:\n    async def m(self):\n        pass\n"
    )
    assert _functions(ast.parse(source)) == [("f", 3), ("f.g", 2), ("C.m", 2)]


def test_no_new_module_or_function_exceeds_the_size_budget() -> None:
    over = over_budget()
    new = {name: lines for name, lines in over.items() if name not in OVER_BUDGET}
    assert not new, (
        f"over the budget ({MAX_MODULE_LINES} lines a module, {MAX_FUNCTION_LINES} a "
        f"function): {new}; split them by responsibility"
    )


def test_the_allow_list_names_only_what_still_exceeds_the_budget() -> None:
    over = over_budget()
    shrunk = sorted(OVER_BUDGET - over.keys())
    assert not shrunk, f"now within the budget, delete from OVER_BUDGET: {shrunk}"


def test_the_cli_modules_have_no_allowance() -> None:
    assert not [name for name in OVER_BUDGET if name.startswith("cli/")]


def test_every_verb_module_registers_its_commands() -> None:
    from pgkura.cli.app import VERB_MODULES, cli

    modules = sorted(p.stem for p in (SRC / "cli").glob("*.py"))
    helpers = {
        "__init__",
        "app",
        "context",
        "options",
        "output",
        "plain",
        "progress",
        "repeats",
        "table_restore",
    }
    assert sorted(VERB_MODULES) == sorted(set(modules) - helpers), (
        "a module of pgkura/cli that declares COMMANDS must be listed in VERB_MODULES, "
        "and a helper module named in the helpers set of this test"
    )
    for name in VERB_MODULES:
        commands = importlib.import_module(f"pgkura.cli.{name}").COMMANDS
        assert commands, f"pgkura.cli.{name} registers no command"
        for command in commands:
            assert isinstance(command, click.Command)
            assert cli.commands[str(command.name)] is command


def test_pgkura_help_lists_every_command() -> None:
    from pgkura.cli.app import VERB_MODULES

    listed = run_pgkura("--help", user=None).stdout
    section = listed.split("Commands:", 1)[1]
    names = {line.split()[0] for line in section.splitlines() if line.strip()}
    expected = set()
    for module in VERB_MODULES:
        for command in importlib.import_module(f"pgkura.cli.{module}").COMMANDS:
            expected.add(str(command.name))
            if isinstance(command, click.Group):
                # A family of verbs: its own --help lists its subcommands.
                sub = run_pgkura(str(command.name), "--help", user=None).stdout
                for child in command.commands:
                    assert f"  {child} " in sub, (command.name, child, sub)
    assert expected <= names, f"missing from pgkura --help: {sorted(expected - names)}"
    assert {"backup", "restore", "archive-push", "archive-get", "verify", "info"} <= names


#: What the CLI may import of pgkura besides itself: it parses options, calls commands and
#: renders their results; it reads no manifest and touches no storage (issue 14, point 2).
CLI_MAY_IMPORT = (
    "pgkura.cli",
    "pgkura.commands",
    "pgkura.config",
    "pgkura.errors",
    "pgkura.progress",
    "pgkura.scratch",
    "pgkura.physical.targets",
    "pgkura.repository.locks",  # set_command: which verb a lock record names
)


def test_the_cli_imports_only_commands_and_its_own_helpers() -> None:
    wrong = []
    for path in sorted((SRC / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("pgkura") and not any(
                    name == ok or name.startswith(ok + ".") for ok in CLI_MAY_IMPORT
                ):
                    wrong.append(f"{path.name}: {name}")
    assert not wrong, f"the CLI imports below the commands: {wrong}"
