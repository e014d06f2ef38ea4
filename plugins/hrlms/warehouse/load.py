"""Append-only loading into raw_hris with snapshot metadata, by COPY.

One snapshot = one file (or one HTTP extract). The same bytes twice is a no-op (unique checksum per
entity). A load is one transaction: a failure leaves nothing behind.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg import sql

# entity -> (schema, table): HR data in raw_hris, LMS transcripts (same landing + mapping) in raw_lms.
RAW_TABLES = {"workers": ("raw_hris", "workers"), "org_units": ("raw_hris", "org_units"),
              "transcripts": ("raw_lms", "transcripts")}
PG_ENCODINGS = {"utf-8": "UTF8", "utf8": "UTF8", "utf-8-sig": "UTF8", "latin-1": "LATIN1",
                "latin1": "LATIN1", "iso-8859-1": "LATIN1", "cp1252": "WIN1252",
                "windows-1252": "WIN1252", "iso-8859-15": "LATIN9"}


class IngestError(ValueError):
    """Input that cannot be loaded. Names the source, line and field so HR can find it."""

    def __init__(self, source: str, message: str, line: int | None = None, field: str | None = None):
        self.source, self.line, self.field, self.detail = source, line, field, message
        where = source
        if line is not None:
            where += f", line {line}"
        if field:
            where += f", field {field}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class LoadResult:
    snapshot_id: int
    entity: str
    rows: int
    source_uri: str
    checksum: str
    already_loaded: bool


def find_snapshot(conn: psycopg.Connection, entity: str, checksum: str) -> tuple[int, int] | None:
    row = conn.execute(
        "select snapshot_id, row_count from raw_hris.snapshots where entity = %s and checksum = %s",
        (entity, checksum),
    ).fetchone()
    return (row[0], row[1]) if row else None


@dataclass(frozen=True)
class SnapshotMeta:
    entity: str
    source_kind: str
    source_uri: str
    checksum: str
    mapping_name: str
    hints: dict
    source_columns: dict[str, str]
    logical_date: date
    extracted_at: datetime
    byte_size: int | None = None     # of a landed file (None: an HTTP source)


def _insert_snapshot(conn: psycopg.Connection, meta: SnapshotMeta) -> int:
    return conn.execute(
        """insert into raw_hris.snapshots (entity, source_kind, source_uri, checksum, mapping_name, hints,
                                            source_columns, row_count, logical_date, extracted_at, byte_size)
           values (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s) returning snapshot_id""",
        (meta.entity, meta.source_kind, meta.source_uri, meta.checksum, meta.mapping_name,
         json.dumps(meta.hints), json.dumps(meta.source_columns), meta.logical_date, meta.extracted_at,
         meta.byte_size),
    ).fetchone()[0]


@contextmanager
def _stamped(conn: psycopg.Connection, table: str, snapshot_id: int, first_line: int) -> Iterator[None]:
    """Make COPY stamp every row with the snapshot id and its line number (column defaults).

    The defaults exist only inside this transaction (set and dropped before commit, under an
    exclusive lock), so no other session ever sees them. Cheaper than COPY into a temp table + INSERT.
    """
    ident = sql.Identifier(*table)
    conn.execute(sql.SQL("lock table {} in access exclusive mode").format(ident))
    conn.execute(sql.SQL("alter sequence raw_hris.load_line_seq restart with {}").format(sql.Literal(first_line)))
    conn.execute(sql.SQL("alter table {} alter column _snapshot_id set default {}, "
                         "alter column _line_no set default nextval('raw_hris.load_line_seq')")
                 .format(ident, sql.Literal(snapshot_id)))
    yield
    conn.execute(sql.SQL("alter table {} alter column _snapshot_id drop default, "
                         "alter column _line_no drop default").format(ident))


_CONTEXT_RE = re.compile(r"line (\d+)(?:, column ([a-z_]+))?")


def _copy_error(exc: psycopg.Error, source: str, to_source: dict[str, str], line_offset: int = 0) -> IngestError:
    ctx = (exc.diag.context or "") if exc.diag else ""
    m = _CONTEXT_RE.search(ctx)
    line = int(m.group(1)) + line_offset if m else None
    msg = (exc.diag.message_primary if exc.diag and exc.diag.message_primary else str(exc)).strip()
    col = (m.group(2) if m else None) or next(iter(re.findall(r'column "([a-z_]+)"', msg)), None)
    field = f"{to_source.get(col, col)} ({col})" if col else None
    if "missing data for column" in msg or "extra data after last expected column" in msg:
        msg += " — the row has the wrong number of fields (truncated file or wrong delimiter?)"
    return IngestError(source, msg, line=line, field=field)


def copy_csv(conn: psycopg.Connection, meta: SnapshotMeta, chunks: Iterable[bytes], file_columns: list[str | None],
             delimiter: str, encoding: str) -> LoadResult:
    """COPY a CSV byte stream (header line included) into raw_hris.<entity>.

    `file_columns` names the canonical field for each column of the file in order (None = not mapped:
    such files go through a temp table so unmapped columns are dropped).
    """
    table = RAW_TABLES[meta.entity]
    to_source = {c: s for c, s in meta.source_columns.items()}
    pg_encoding = PG_ENCODINGS.get(encoding.lower(), encoding)
    opts = sql.SQL("(format csv, header true, delimiter {}, encoding {})").format(
        sql.Literal(delimiter), sql.Literal(pg_encoding))
    with conn.transaction():
        snapshot_id = _insert_snapshot(conn, meta)
        mapped = [c for c in file_columns if c]
        try:
            if all(file_columns):
                with _stamped(conn, table, snapshot_id, first_line=2):
                    stmt = sql.SQL("copy {} ({}) from stdin {}").format(
                        sql.Identifier(*table), sql.SQL(", ").join(map(sql.Identifier, mapped)), opts)
                    with conn.cursor() as cur:
                        with cur.copy(stmt) as cp:
                            for chunk in chunks:
                                cp.write(chunk)
                        rows = cur.rowcount
            else:
                temp_cols = [c if c else f"_unmapped_{i}" for i, c in enumerate(file_columns)]
                conn.execute(sql.SQL("create temp table _landing ({}, _line_no bigserial) on commit drop").format(
                    sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in temp_cols)))
                stmt = sql.SQL("copy _landing ({}) from stdin {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, temp_cols)), opts)
                with conn.cursor().copy(stmt) as cp:
                    for chunk in chunks:
                        cp.write(chunk)
                rows = conn.execute(sql.SQL("insert into {} (_snapshot_id, _line_no, {}) select {}, _line_no + 1, {} "
                                            "from _landing order by _line_no").format(
                    sql.Identifier(*table), sql.SQL(", ").join(map(sql.Identifier, mapped)),
                    sql.Literal(snapshot_id), sql.SQL(", ").join(map(sql.Identifier, mapped)))).rowcount
        except psycopg.Error as exc:
            raise _copy_error(exc, meta.source_uri, to_source) from None
        _finish(conn, table, snapshot_id, rows)
    return LoadResult(snapshot_id, meta.entity, rows, meta.source_uri, meta.checksum, False)


def copy_records(conn: psycopg.Connection, meta: SnapshotMeta, records: Iterable[tuple[int, dict]],
                 ) -> LoadResult:
    """COPY already-parsed records (JSON Lines, HTTP pages): (line/record number, {canonical: value})."""
    table = RAW_TABLES[meta.entity]
    cols = list(meta.source_columns)
    with conn.transaction():
        snapshot_id = _insert_snapshot(conn, meta)
        stmt = sql.SQL("copy {} (_snapshot_id, _line_no, {}) from stdin").format(
            sql.Identifier(*table), sql.SQL(", ").join(map(sql.Identifier, cols)))
        with conn.cursor() as cur:
            with cur.copy(stmt) as cp:
                for line_no, rec in records:
                    cp.write_row((snapshot_id, line_no, *(rec.get(c) for c in cols)))
            rows = cur.rowcount
        _finish(conn, table, snapshot_id, rows)
    return LoadResult(snapshot_id, meta.entity, rows, meta.source_uri, meta.checksum, False)


def _finish(conn: psycopg.Connection, table: str, snapshot_id: int, rows: int) -> None:
    """`rows`: the COPY's (or INSERT's) own row count — every row it wrote is this snapshot's."""
    conn.execute("update raw_hris.snapshots set row_count = %s where snapshot_id = %s", (rows, snapshot_id))
    # Fresh statistics: the gate's and dbt's queries over this snapshot plan badly without them.
    conn.execute(sql.SQL("analyze {}").format(sql.Identifier(*table)))
