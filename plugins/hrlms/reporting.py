"""What the HTML/JSON reports share (the compliance report, the access timeliness page): escaping, a
relation check, and atomic file replacement (a reader never sees half a report)."""
from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

T = TypeVar("T")


def escape(v: Any) -> str:
    """A value from HR or the LMS shown inert in HTML ('' for None)."""
    return "" if v is None else html.escape(str(v), quote=True)


def relation_exists(conn: psycopg.Connection, relation: str) -> bool:
    return conn.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is not None


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, synced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def query_rows(conn: psycopg.Connection, sql: str, params: dict[str, Any] | None,
               plain: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """The rows of a query as dicts, each value passed through `plain` (JSON-safe, stable)."""
    cur = conn.execute(sql, params or {})
    cols = [d.name for d in cur.description]
    return [{c: plain(v) for c, v in zip(cols, row)} for row in cur.fetchall()]


def section(conn: psycopg.Connection, name: str, unavailable: list[str], fn: Callable[[], T], empty: T) -> T:
    """Run one section's queries under a savepoint; a missing table/column (a warehouse from before the
    models the section reads) leaves the section empty and names it in ``unavailable``."""
    try:
        with conn.transaction():
            return fn()
    except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn, pg_errors.InvalidSchemaName):
        unavailable.append(name)
        return empty
