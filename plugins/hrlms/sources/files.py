"""HR files from a landing folder (CSV, JSON Lines) → raw_hris, checked before anything is committed.

What is checked here is what makes a file unloadable (empty, unreadable header, wrong delimiter,
missing required columns, wrong encoding, ragged rows); everything about values is the quality
gate's job.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import NoReturn

import psycopg

from hrlms.sources.mapping import EntityMapping
from hrlms.warehouse.load import IngestError, LoadResult, SnapshotMeta, copy_csv, copy_records, find_snapshot

CHUNK = 1 << 20
_UTF8_BLOCK = 4096
BOM = codecs.BOM_UTF8
# Files that are recognisably something else than text (the first bytes say so).
_NOT_TEXT = ((b"PK\x03\x04", "the file is a ZIP archive (an Excel .xlsx workbook saved as .csv?)"),
             (b"\xd0\xcf\x11\xe0", "the file is an OLE2 document (an Excel .xls workbook saved as .csv?)"),
             (codecs.BOM_UTF16_LE, "the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark)"),
             (codecs.BOM_UTF16_BE, "the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark)"))


def landing_path(landing_dir: str | Path, em: EntityMapping, logical_date: date) -> Path:
    return Path(landing_dir) / em.file_pattern.format(ds=logical_date.isoformat())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _without_trailing_blank_lines(raw: Iterable[bytes]) -> Iterator[bytes]:
    """The file's bytes, without blank lines at its very end (an export artefact COPY would reject as a
    row with missing fields); line numbers are unchanged."""
    held = b""
    for chunk in raw:
        chunk = held + chunk
        body = chunk.rstrip(b"\r\n")
        held = chunk[len(body):]
        if body:
            yield body
    if held:
        yield held[:2] if held.startswith(b"\r\n") else held[:1]   # the last line's own line end


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


class _OnePass:
    """The one read of a landing file, feeding COPY: every chunk is hashed (sha256, the snapshot checksum)
    and, for a UTF-8 mapping, checked before it is sent — no separate read for either.

    The UTF-8 check is an incremental decoder (a character split between two chunks is fine) fed in 4 KiB
    blocks, skipping pure-ASCII blocks when no character is pending (they cannot be invalid): about half
    the cost of decoding every chunk whole on the synthetic export. An invalid byte raises the same error
    as `_check_encoding` (line of the first bad byte), which re-reads the file to find it.
    """

    def __init__(self, path: Path, encoding: str, hashed: bool = True):
        self.path, self.encoding = path, encoding
        self._sha = hashlib.sha256() if hashed else None
        self._decoder = codecs.getincrementaldecoder("utf-8")() if _is_utf8(encoding) else None
        self._pending = False          # the decoder holds the first bytes of a character
        self.failed = False
        self.complete = False
        self._raw = self._read()

    def chunks(self) -> Iterator[bytes]:
        """What COPY is sent: the file's bytes, checked, without trailing blank lines."""
        return _without_trailing_blank_lines(self._raw)

    def finish(self) -> str | None:
        """Read and check what COPY did not consume (an error stops it early), then the file's sha256
        (None if not hashed, or if the read stopped on a bad byte)."""
        if not self.failed:
            for _chunk in self._raw:
                pass
        return self._sha.hexdigest() if self._sha is not None and self.complete else None

    def _read(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK):
                self._check(chunk)
                yield chunk
        if self._decoder is not None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self._fail()
        self.complete = True

    def _check(self, chunk: bytes) -> None:
        if self._sha is not None:
            self._sha.update(chunk)
        if self._decoder is None or (not self._pending and chunk.isascii()):
            return
        decode, state, pending = self._decoder.decode, self._decoder.getstate, self._pending
        try:
            for i in range(0, len(chunk), _UTF8_BLOCK):
                block = chunk[i:i + _UTF8_BLOCK]
                if pending or not block.isascii():
                    decode(block)
                    pending = bool(state()[0])
        except UnicodeDecodeError:
            self._fail()
        self._pending = pending

    def _fail(self) -> NoReturn:
        self.failed = True
        _check_encoding(self.path, self.encoding)      # raises with the line of the first bad byte
        raise IngestError(str(self.path), "the file is not valid UTF-8 (set 'encoding' in the mapping)")


def _unterminated_quote_line(path: Path, em: EntityMapping) -> int | None:
    """The line where the record with the unclosed quote starts (COPY reports the end of the file)."""
    with path.open("r", encoding=em.encoding, errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=em.delimiter, strict=True)
        start = 1
        try:
            for _row in reader:
                start = reader.line_num + 1
        except csv.Error:
            return start
    return None


def _line_is_blank(path: Path, line_no: int) -> bool:
    with path.open("rb") as f:
        line = next(itertools.islice(f, line_no - 1, None), None)
    return line is not None and not line.strip()


def match_columns(source: str, em: EntityMapping, header: list[str]) -> tuple[list[str | None], dict[str, str]]:
    """Map the file's header to canonical fields. Returns (canonical per file column, canonical->source)."""
    by_norm = {h.strip().lower(): i for i, h in enumerate(header)}
    mapped = {s.strip().lower() for s in em.columns.values()}
    seen: set[str] = set()
    for h in header:     # two columns with a mapped name: which one holds the data is anyone's guess
        norm = h.strip().lower()
        if norm in seen and norm in mapped:
            raise IngestError(source, f"column '{h.strip()}' appears more than once in the header", line=1,
                              field=h.strip())
        seen.add(norm)
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
        if not hint and not present:
            hint = " — no column of the mapping is in it (no header line, or not this export?)"
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
    for magic, what in _NOT_TEXT:
        if first.startswith(magic):
            raise IngestError(source, f"{what}, not a {em.encoding} CSV export", line=1)
    if b"\x00" in first:
        raise IngestError(source, f"the header contains NUL bytes: UTF-16 or binary data, not a {em.encoding} "
                                  f"CSV export", line=1)
    try:
        text = first.decode(em.encoding)
    except UnicodeDecodeError as exc:
        raise IngestError(source, f"header is not valid {em.encoding} (byte {exc.start}): wrong encoding?", line=1) from None
    try:
        return next(csv.reader(io.StringIO(text), delimiter=em.delimiter))
    except csv.Error as exc:
        hint = (" — the lines end in a carriage return (CR) alone; export with LF or CRLF line ends"
                if "\r" in text.rstrip("\r\n") else "")
        raise IngestError(source, f"the header cannot be read as CSV: {exc}{hint}", line=1) from None


def _check_columns_kept(conn: psycopg.Connection, source: str, em: EntityMapping, mapping_name: str,
                        present: dict[str, str]) -> None:
    """A mapped column that the previous file of this export had and this one lacks would blank that
    attribute for everyone (titles, managers…): reject; removing it from the mapping is the deliberate way."""
    row = conn.execute(
        """select source_columns from raw_hris.snapshots where entity = %s and mapping_name = %s
           and source_kind = 'file' order by snapshot_id desc limit 1""", (em.entity, mapping_name)).fetchone()
    lost = [c for c in (row[0] if row else {}) if c in em.columns and c not in present]
    if lost:
        names = ", ".join(f"{em.columns[c]} ({c})" for c in lost)
        raise IngestError(source, f"column(s) {names} were in the previous file of this export but are missing from "
                                  f"this one: their values would be blanked for everyone. Restore them in the export, "
                                  f"or remove them from the mapping if they are gone for good",
                          line=1, field=f"{em.columns[lost[0]]} ({lost[0]})")


def _check_encoding(path: Path, encoding: str) -> None:
    """Fail with the exact line of the first undecodable byte (COPY would report it too, less clearly).
    Reads the whole file: ingest calls it only once the stream that feeds COPY has found a bad byte."""
    if not _is_utf8(encoding):
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:     # exc.object: the bytes held from the last chunk + this one
                line += exc.object.count(b"\n", 0, exc.start)
                raise IngestError(str(path), f"invalid UTF-8 byte 0x{exc.object[exc.start]:02x}: the file is not "
                                             f"UTF-8 (set 'encoding' in the mapping)", line=line) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise IngestError(str(path), "file ends inside a UTF-8 character (truncated?)", line=line) from None


def ingest_file(conn: psycopg.Connection, em: EntityMapping, mapping_name: str, path: str | Path,
                logical_date: date) -> LoadResult:
    """Load one landing file as a snapshot. The same bytes as a snapshot of the entity already loaded are a
    no-op: already_loaded=True, that snapshot, nothing written (whatever the checks would say of the file now).

    CSV: the file is read once, by the COPY, which hashes and checks it on the way; whether the checksum is
    a duplicate is known after the COPY, inside its transaction (a duplicate is rolled back). If the entity
    already has a snapshot for this logical date or path (a rerun: most likely the same file), or one of
    the same size in bytes (an unchanged export landed again under a new date), the file is hashed first
    instead, so loading the same file again stays a read of the file, not a load and a rollback.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise IngestError(source, "file not found in the landing folder")
    stat = path.stat()
    size = stat.st_size
    if size == 0:
        raise IngestError(source, "file is empty (0 bytes)", line=1)
    checksum = None
    if em.format == "jsonl" or _loaded_before(conn, em.entity, source, logical_date, size):
        checksum = sha256_file(path)
        existing = find_snapshot(conn, em.entity, checksum)
        if existing:
            return LoadResult(existing[0], em.entity, existing[1], source, checksum, True)
    extracted_at = datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)
    if em.format == "jsonl":
        return _ingest_jsonl(conn, em, mapping_name, path, logical_date, checksum, extracted_at, size)
    return _ingest_csv(conn, em, mapping_name, path, logical_date, checksum, extracted_at, size)


def _loaded_before(conn: psycopg.Connection, entity: str, source: str, logical_date: date, size: int) -> bool:
    """The entity has a snapshot for this logical date or from this path (probably a rerun), or of this
    size in bytes (or of unknown size: loaded before sizes were kept): the file may be one already loaded."""
    return conn.execute(
        """select exists (select 1 from raw_hris.snapshots
                          where entity = %s and (logical_date = %s or source_uri = %s
                                                 or byte_size = %s or byte_size is null))""",
        (entity, logical_date, source, size)).fetchone()[0]


def _ingest_csv(conn: psycopg.Connection, em: EntityMapping, mapping_name: str, path: Path, logical_date: date,
                checksum: str | None, extracted_at: datetime, size: int) -> LoadResult:
    """Check and COPY the CSV. `checksum` None: not known to be new yet — the stream hashes the file, the
    snapshot row carries a placeholder until the COPY is done, then the real checksum, or the whole load
    is rolled back if a snapshot of the entity has that checksum."""
    source = str(path)
    try:
        header = read_csv_header(path, em)
        per_column, present = match_columns(source, em, header)
        _check_columns_kept(conn, source, em, mapping_name, present)
    except IngestError:
        if checksum is None and (loaded := _loaded_as(conn, em, path, None)):
            return loaded
        raise
    stream = _OnePass(path, em.encoding, hashed=checksum is None)
    meta = SnapshotMeta(em.entity, "file", source, checksum or f"pending:{uuid.uuid4().hex}", mapping_name,
                        em.hints(), present, logical_date, extracted_at, size)
    duplicate = None
    try:
        with conn.transaction() as tx:       # copy_csv's own transaction is a savepoint inside this one
            res = copy_csv(conn, meta, stream.chunks(), per_column, em.delimiter, em.encoding)
            if checksum is None:
                checksum = stream.finish()
                duplicate = find_snapshot(conn, em.entity, checksum)
                if duplicate:
                    raise psycopg.Rollback(tx)
                conn.execute("update raw_hris.snapshots set checksum = %s where snapshot_id = %s",
                             (checksum, res.snapshot_id))
    except IngestError as exc:      # a bad byte (from the stream), or COPY's own words
        try:
            err = _explained(exc, path, em, stream)
        except IngestError as bad_byte:
            err = bad_byte
        if checksum is None and (loaded := _loaded_as(conn, em, path, stream.finish())):
            return loaded
        if err is exc:
            raise
        raise err from None
    if duplicate:
        return LoadResult(duplicate[0], em.entity, duplicate[1], source, checksum, True)
    return LoadResult(res.snapshot_id, res.entity, res.rows, res.source_uri, checksum, False)


def _loaded_as(conn: psycopg.Connection, em: EntityMapping, path: Path, digest: str | None) -> LoadResult | None:
    """For a file that failed a check before its checksum was looked up: the snapshot with the same bytes,
    if any (loading it again is a no-op, whatever today's checks say)."""
    digest = digest or sha256_file(path)
    existing = find_snapshot(conn, em.entity, digest)
    return LoadResult(existing[0], em.entity, existing[1], str(path), digest, True) if existing else None


def _explained(exc: IngestError, path: Path, em: EntityMapping, stream: _OnePass) -> IngestError:
    """The error to report for a failed COPY. A bad byte anywhere in the file comes first, as when the
    check read the file before the COPY (raised from here: the rest of the file is checked if COPY stopped
    early); then COPY's own words, made specific where they mislead."""
    stream.finish()
    source = str(path)
    if "unterminated CSV quoted field" in exc.detail:
        start = _unterminated_quote_line(path, em)
        if start is not None:
            return IngestError(source, f"unterminated CSV quoted field: the quote opened on line {start} is "
                                       f"never closed (the rest of the file was read as one value)", line=start)
    elif "missing data for column" in exc.detail and exc.line and _line_is_blank(path, exc.line):
        return IngestError(source, "the line is blank: missing data for every column after the first "
                                   "(rows lost in the export?)", line=exc.line)
    return exc


def _ingest_jsonl(conn, em, mapping_name, path, logical_date, checksum, extracted_at, size) -> LoadResult:
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
                        logical_date, extracted_at, size)
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
