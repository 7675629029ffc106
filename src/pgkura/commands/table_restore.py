"""`pgkura restore --table S.T [--schema S] --to-... --dbname DB`: one table (or schema) as it
was at a point in time, brought into the live database (the work is logical/table_restore.py's;
the sandbox's restore takes the repository's shared lock)."""

from __future__ import annotations

import time as time  # the clock free_schema_name reads (tests set it)
from collections.abc import Callable

from pgkura.config import Config
from pgkura.logical.table_restore import RestoredTable as RestoredTable
from pgkura.logical.table_restore import TableRestoreRequest as TableRestoreRequest
from pgkura.logical.table_restore import TableRestoreResult as TableRestoreResult
from pgkura.logical.table_restore import free_schema_name as _free_schema_name
from pgkura.logical.table_restore import restore_tables
from pgkura.logical.table_restore import split_name as split_name


def run_table_restore(
    cfg: Config, req: TableRestoreRequest, say: Callable[[str], None]
) -> TableRestoreResult:
    """Restore the tables ``req`` asks for into the live database ``req.dbname``."""
    return restore_tables(cfg, req, say)


__all__ = [
    "RestoredTable",
    "TableRestoreRequest",
    "TableRestoreResult",
    "_free_schema_name",
    "run_table_restore",
    "split_name",
    "time",
]
