"""HR files from a landing folder (CSV, JSON Lines) → raw_hris, checked before a byte is loaded.

What is checked here is what makes a file unloadable (empty, unreadable header, wrong delimiter,
missing required columns, wrong encoding, ragged rows); everything about values is the quality
gate's job.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import psycopg

from hrlms.sources.mapping import EntityMapping
from hrlms.warehouse.load import IngestError, LoadResult, SnapshotMeta, copy_csv, copy_records, find_snapshot

CHUNK = 1 << 20
BOM = codecs.BOM_UTF8


def landing_path(landing_dir: str | Path, em: EntityMapping, logical_date: date) -> Path:
    return Path(landing_dir) / em.file_pattern.format(ds=logical_date.isoformat())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def match_columns(source: str, em: EntityMapping, header: list[str]) -> tuple[list[str | None], dict[str, str]]:
    """Map the file's header to canonical fields. Returns (canonical per file column, canonical->source)."""
    by_norm = {h.strip().lower(): i for i, h in enumerate(header)}
    per_column: list[str | None] = [None] * len(header)
    present: dict[str, str] = {}
    missing = []
    for canonical, src in em.columns.items():
        i = by_norm.get(src.strip().lower())
        if i is None:
            if canonical in em.required:
                missing.append(f"{src} ({canonical})")
            continue
        if per_column[i] is not None:
            raise IngestError(source, f"column '{header[i]}' is mapped twice", line=1, field=header[i])
        per_column[i] = canonical
        present[canonical] = header[i]
    if missing:
        hint = ""
        if len(header) == 1:
            for d in (";", "\t", "|", ","):
                if d != em.delimiter and d in header[0]:
                    hint = f" — the header looks {d!r}-delimited but the mapping says {em.delimiter!r} (wrong delimiter?)"
                    break
        raise IngestError(source, f"required column(s) missing: {', '.join(missing)}; "
                                  f"header has {len(header)} column(s){hint}", line=1, field=missing[0])
    return per_column, present


def read_csv_header(path: Path, em: EntityMapping) -> list[str]:
    source = str(path)
    with path.open("rb") as f:
        first = f.readline()
    if not first.strip():
        raise IngestError(source, "file is empty (no header line)" if not first else "header line is blank", line=1)
    if first.startswith(BOM):
        first = first[len(BOM):]
    try:
        text = first.decode(em.encoding)
    except UnicodeDecodeError as exc:
        raise IngestError(source, f"header is not valid {em.encoding} (byte {exc.start}): wrong encoding?", line=1) from None
    return next(csv.reader(io.StringIO(text), delimiter=em.delimiter))


def _check_encoding(path: Path, encoding: str) -> None:
    """Fail with the exact line of the first undecodable byte (COPY would report it too, less clearly)."""
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8", "utf-8-sig"):
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk.count(b"\n", 0, exc.start)
                raise IngestError(str(path), f"invalid UTF-8 byte 0x{chunk[exc.start]:02x}: the file is not "
                                             f"UTF-8 (set 'encoding' in the mapping)", line=line) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise IngestError(str(path), "file ends inside a UTF-8 character (truncated?)", line=line) from None


def ingest_file(conn: psycopg.Connection, em: EntityMapping, mapping_name: str, path: str | Path,
                logical_date: date) -> LoadResult:
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise IngestError(source, "file not found in the landing folder")
    if path.stat().st_size == 0:
        raise IngestError(source, "file is empty (0 bytes)", line=1)
    checksum = sha256_file(path)
    existing = find_snapshot(conn, em.entity, checksum)
    if existing:
        return LoadResult(existing[0], em.entity, existing[1], source, checksum, True)
    extracted_at = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    if em.format == "jsonl":
        return _ingest_jsonl(conn, em, mapping_name, path, logical_date, checksum, extracted_at)
    header = read_csv_header(path, em)
    per_column, present = match_columns(source, em, header)
    _check_encoding(path, em.encoding)
    meta = SnapshotMeta(em.entity, "file", source, checksum, mapping_name, em.hints(), present,
                        logical_date, extracted_at)
    return copy_csv(conn, meta, _chunks(path), per_column, em.delimiter, em.encoding)


def _ingest_jsonl(conn, em, mapping_name, path, logical_date, checksum, extracted_at) -> LoadResult:
    source = str(path)
    present = {c: s for c, s in em.columns.items()}

    def records() -> Iterator[tuple[int, dict]]:
        with path.open("r", encoding=em.encoding, newline="") as f:
            for line_no, line in enumerate(f, start=1):
                if line_no == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                if not line.strip():
                    continue
                yield line_no, parse_record(source, line_no, line, em)

    meta = SnapshotMeta(em.entity, "file", source, checksum, mapping_name, em.hints(), present,
                        logical_date, extracted_at)
    try:
        return copy_records(conn, meta, records())
    except UnicodeDecodeError as exc:
        raise IngestError(source, f"not valid {em.encoding}: wrong encoding? ({exc.reason})") from None


def parse_record(source: str, line_no: int, line: str | dict, em: EntityMapping) -> dict:
    """One JSON object → {canonical: text}. Required fields must be present as keys."""
    if isinstance(line, str):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(source, f"not a JSON object: {exc.msg} (truncated file?)", line=line_no) from None
    else:
        obj = line
    if not isinstance(obj, dict):
        raise IngestError(source, "expected a JSON object per line", line=line_no)
    out = {}
    for canonical, src in em.columns.items():
        if src not in obj:
            if canonical in em.required:
                raise IngestError(source, "required field missing", line=line_no, field=f"{src} ({canonical})")
            continue
        value = obj[src]
        if isinstance(value, (dict, list)):
            raise IngestError(source, "expected a scalar value", line=line_no, field=f"{src} ({canonical})")
        out[canonical] = None if value is None else str(value)
    return out
