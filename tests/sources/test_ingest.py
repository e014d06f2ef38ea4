"""Ingest into a real Postgres: COPY with snapshot metadata, no-op reloads, clear errors for bad files."""
import json
from datetime import date

import pytest

from hrlms.sources.files import ingest_file
from hrlms.warehouse import db
from hrlms.warehouse.load import IngestError

from .hrfiles import HEADER, MAPPING, WORKERS, csv_text, worker

D1 = date(2026, 1, 5)


@pytest.fixture
def conn(fresh_db):
    with db.connect(fresh_db) as c:
        db.bootstrap(c)
        yield c


def _counts(conn):
    return (conn.execute("select count(*) from raw_hris.snapshots").fetchone()[0],
            conn.execute("select count(*) from raw_hris.workers").fetchone()[0])


def test_csv_with_bom_crlf_and_extra_column_loads_with_line_numbers(conn, tmp_path):
    rows = [worker(1), worker(2, First_Name="  Zoë "), worker(3)]
    text = csv_text([{**r, "Cost_Center": "CC1"} for r in rows], header=HEADER + ["Cost_Center"], newline="\r\n")
    path = tmp_path / "workers_2026-01-05.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    res = ingest_file(conn, WORKERS, MAPPING.name, path, D1)
    assert (res.rows, res.already_loaded) == (3, False)
    got = conn.execute("select _line_no, person_id, first_name from raw_hris.workers order by _line_no").fetchall()
    assert got == [(2, "P0000001", "First1"), (3, "P0000002", "  Zoë "), (4, "P0000003", "First3")]
    snap = conn.execute("select entity, source_uri, checksum, row_count, logical_date, hints from raw_hris.snapshots").fetchone()
    assert snap[:2] == ("workers", str(path)) and len(snap[2]) == 64 and snap[3] == 3 and snap[4] == D1
    assert snap[5]["date_format"] == "MM/DD/YYYY"


def test_same_file_twice_is_a_noop_and_history_is_kept(conn, tmp_path):
    p1 = tmp_path / "a.csv"
    p1.write_text(csv_text([worker(1), worker(2)]))
    first = ingest_file(conn, WORKERS, MAPPING.name, p1, D1)
    again = ingest_file(conn, WORKERS, MAPPING.name, p1, D1)
    assert again.already_loaded and again.snapshot_id == first.snapshot_id
    assert _counts(conn) == (1, 2)
    p2 = tmp_path / "b.csv"
    p2.write_text(csv_text([worker(1), worker(2), worker(3)]))
    second = ingest_file(conn, WORKERS, MAPPING.name, p2, date(2026, 1, 6))
    assert second.snapshot_id != first.snapshot_id
    assert _counts(conn) == (2, 5)


def test_jsonl_loads_through_the_same_mapping(conn, tmp_path):
    from dataclasses import replace

    em = replace(WORKERS, format="jsonl")
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(json.dumps(worker(i)) for i in (1, 2)) + "\n")
    res = ingest_file(conn, em, MAPPING.name, path, D1)
    assert res.rows == 2
    assert conn.execute("select _line_no, work_email from raw_hris.workers order by 1").fetchall() == [
        (1, "user1@example.com"), (2, "user2@example.com")]


def _bad(conn, path, **expect):
    with pytest.raises(IngestError) as err:
        ingest_file(conn, WORKERS, MAPPING.name, path, D1)
    e = err.value
    assert e.source == str(path)
    for k, v in expect.items():
        got = getattr(e, k)
        assert (v in got) if isinstance(v, str) else got == v, (k, got, str(e))
    assert _counts(conn) == (0, 0), "nothing may be half-written"
    return str(e)


def test_missing_required_column(conn, tmp_path):
    path = tmp_path / "w.csv"
    header = [h for h in HEADER if h != "Work_Email"]
    path.write_text(csv_text([worker(1)], header=header))
    msg = _bad(conn, path, line=1, field="Work_Email (work_email)")
    assert "required column(s) missing" in msg


def test_empty_file(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b"")
    assert "empty" in _bad(conn, path, line=1)


def test_truncated_file(conn, tmp_path):
    path = tmp_path / "w.csv"
    text = csv_text([worker(i) for i in range(1, 6)])
    path.write_text(text[: text.rindex("Analyst")])     # cut in the middle of the last row
    msg = _bad(conn, path, line=6, field="Job_Family (job_family)")
    assert "missing data" in msg and "truncated" in msg


def test_wrong_delimiter(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_text(csv_text([worker(1)], delimiter=";"))
    assert "wrong delimiter" in _bad(conn, path, line=1)


def test_wrong_encoding(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(csv_text([worker(1), worker(2), worker(3, Last_Name="Müller")]).encode("latin-1"))
    assert "not UTF-8" in _bad(conn, path, line=4)


def test_unterminated_quote(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_text(csv_text([worker(1)]) + '"P0000002,oops\n')
    assert "quoted" in _bad(conn, path)


def test_file_not_found(conn, tmp_path):
    assert "not found" in _bad(conn, tmp_path / "missing.csv")


# --- one read of the file: sha256 and the UTF-8 check in the stream that feeds COPY ---------------------

def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(conn):
    """Everything a load leaves behind: snapshots (with checksums), rows, and no stamping defaults."""
    snaps = conn.execute("select snapshot_id, checksum, row_count from raw_hris.snapshots order by 1").fetchall()
    defaults = conn.execute("""select count(*) from information_schema.columns where table_schema = 'raw_hris'
                               and column_name in ('_snapshot_id', '_line_no') and column_default is not null""")
    return snaps, _counts(conn)[1], defaults.fetchone()[0]


def test_checksum_is_the_files_sha256_whichever_way_it_was_computed(conn, tmp_path):
    p1 = tmp_path / "a.csv"
    p1.write_text(csv_text([worker(1), worker(2)]) + "\n\n")       # trailing blank lines: hashed, not loaded
    first = ingest_file(conn, WORKERS, MAPPING.name, p1, D1)     # new day: hashed in the stream
    # a corrected file for the same day: hashed before (rerun check), then streamed without hashing
    p2 = tmp_path / "b.csv"
    p2.write_text(csv_text([worker(1), worker(2, Last_Name="Changed")]))
    second = ingest_file(conn, WORKERS, MAPPING.name, p2, D1)
    assert (first.rows, second.rows, first.already_loaded, second.already_loaded) == (2, 2, False, False)
    snaps, rows, defaults = _state(conn)
    assert [s[1] for s in snaps] == [first.checksum, second.checksum] == [_sha(p1), _sha(p2)]
    assert [s[2] for s in snaps] == [2, 2] and rows == 4 and defaults == 0


def _copies(conn) -> int:
    """Snapshot ids handed out so far: a load that was started and rolled back used one up."""
    return conn.execute("select last_value from pg_sequences where schemaname = 'raw_hris' and "
                        "sequencename = (parse_ident(pg_get_serial_sequence('raw_hris.snapshots', "
                        "'snapshot_id')))[2]").fetchone()[0]


def _land_copy_next_day(conn, tmp_path, original):
    """The same bytes landed again under the next day's name and logical date (an unchanged export)."""
    copy = tmp_path / "workers_2026-01-06.csv"
    copy.write_bytes(original.read_bytes())
    return ingest_file(conn, WORKERS, MAPPING.name, copy, date(2026, 1, 6))


def test_same_bytes_on_another_day_are_recognised_before_any_copy(conn, tmp_path):
    """An unchanged export landed under a new date: a snapshot of the same size exists, so the file is
    hashed first and recognised — no rows are copied (and rolled back), the first snapshot is returned."""
    p1 = tmp_path / "workers_2026-01-05.csv"
    p1.write_text(csv_text([worker(i) for i in range(1, 4)]))
    first = ingest_file(conn, WORKERS, MAPPING.name, p1, D1)
    assert conn.execute("select byte_size from raw_hris.snapshots where snapshot_id = %s",
                        (first.snapshot_id,)).fetchone()[0] == p1.stat().st_size
    before, copied = _state(conn), _copies(conn)
    again = _land_copy_next_day(conn, tmp_path, p1)
    assert (again.snapshot_id, again.rows, again.already_loaded, again.checksum) == (
        first.snapshot_id, 3, True, first.checksum)
    assert _state(conn) == before and _copies(conn) == copied


def test_a_duplicate_the_size_check_misses_is_rolled_back_after_the_copy(conn, tmp_path):
    """The checksum found after the COPY is the backstop (e.g. a concurrent load of the same file; here the
    first snapshot's size is made to differ): the load is rolled back (no rows, no snapshot, no stamping
    defaults left), the first snapshot is returned."""
    p1 = tmp_path / "workers_2026-01-05.csv"
    p1.write_text(csv_text([worker(i) for i in range(1, 4)]))
    first = ingest_file(conn, WORKERS, MAPPING.name, p1, D1)
    conn.execute("update raw_hris.snapshots set byte_size = byte_size + 1 where snapshot_id = %s",
                 (first.snapshot_id,))
    before, copied = _state(conn), _copies(conn)
    again = _land_copy_next_day(conn, tmp_path, p1)
    assert (again.snapshot_id, again.rows, again.already_loaded, again.checksum) == (
        first.snapshot_id, 3, True, first.checksum)
    assert _state(conn) == before and _copies(conn) > copied      # copied, then rolled back
    # and the next real load is stamped as usual
    p3 = tmp_path / "workers_2026-01-07.csv"
    p3.write_text(csv_text([worker(7), worker(8)]))
    third = ingest_file(conn, WORKERS, MAPPING.name, p3, date(2026, 1, 7))
    assert conn.execute("select _line_no, person_id from raw_hris.workers where _snapshot_id = %s order by 1",
                        (third.snapshot_id,)).fetchall() == [(2, "P0000007"), (3, "P0000008")]


def test_a_loaded_file_is_a_noop_even_if_todays_checks_reject_it(conn, tmp_path):
    """The checksum used to be looked up before any check: a file already loaded stays a no-op when a check
    now fails (here: a later file of the export added a mapped column this one lacks)."""
    no_tz = [h for h in HEADER if h != "Time_Zone"]
    p1 = tmp_path / "workers_2026-01-05.csv"
    p1.write_text(csv_text([worker(1)], header=no_tz))
    first = ingest_file(conn, WORKERS, MAPPING.name, p1, D1)
    p2 = tmp_path / "workers_2026-01-06.csv"
    p2.write_text(csv_text([worker(1), worker(2)]))
    ingest_file(conn, WORKERS, MAPPING.name, p2, date(2026, 1, 6))
    before = _state(conn)
    p3 = tmp_path / "workers_2026-01-07.csv"
    p3.write_bytes(p1.read_bytes())
    again = ingest_file(conn, WORKERS, MAPPING.name, p3, date(2026, 1, 7))
    assert (again.snapshot_id, again.already_loaded) == (first.snapshot_id, True)
    assert _state(conn) == before
    p4 = tmp_path / "workers_2026-01-08.csv"                       # new bytes, same problem: rejected
    p4.write_text(csv_text([worker(3)], header=no_tz))
    with pytest.raises(IngestError, match="were in the previous file"):
        ingest_file(conn, WORKERS, MAPPING.name, p4, date(2026, 1, 8))


def _big_csv(n_before: int, special: bytes) -> bytes:
    """A CSV whose row n_before + 1 has Last_Name `special` starting on the last byte of the first 1 MiB read
    (its first character split across the two reads if it is a multibyte one); 3 rows follow."""
    from hrlms.sources import files

    head = csv_text([worker(i) for i in range(1, n_before + 1)]).encode()
    prefix = f"P{n_before + 1:07d},{100000 + n_before + 1},First".encode()
    filler = b"x" * (files.CHUNK - 1 - len(head) - len(prefix) - 1)     # ... First<filler>,<special>
    assert len(filler) > 0
    rest = csv_text([worker(n_before + 1)]).encode().split(b"\n")[1].split(b",", 4)[4]
    row = prefix + filler + b"," + special + b"," + rest + b"\n"
    assert len(head) + len(prefix) + len(filler) + 1 == files.CHUNK - 1
    tail = csv_text([worker(i) for i in range(n_before + 2, n_before + 5)]).encode().split(b"\n", 1)[1]
    return head + row + tail


def test_utf8_character_across_the_read_boundary_loads(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(_big_csv(3000, "€ë😀".encode()))
    res = ingest_file(conn, WORKERS, MAPPING.name, path, D1)
    assert res.rows == 3004 and res.checksum == _sha(path)
    assert conn.execute("select last_name, _line_no from raw_hris.workers where person_id = 'P0003001'"
                        ).fetchone() == ("€ë😀", 3002)


def test_bad_utf8_after_the_first_read_names_its_line(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(_big_csv(3000, "Müller".encode("latin-1")))
    assert "invalid UTF-8 byte 0xfc" in _bad(conn, path, line=3002)


def test_file_ending_inside_a_utf8_character(conn, tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(csv_text([worker(1), worker(2, Time_Zone="Zoë")]).encode().rstrip(b"\n")[:-1])
    assert "ends inside a UTF-8 character" in _bad(conn, path, line=3)


def test_bad_byte_outranks_an_earlier_ragged_row(conn, tmp_path):
    """As when the UTF-8 check read the whole file before the COPY: the encoding error is the one reported."""
    path = tmp_path / "w.csv"
    text = csv_text([worker(1), worker(2), worker(3, Last_Name="Müller")])
    lines = text.split("\n")
    lines[1] = lines[1].rsplit(",", 3)[0]                       # line 2 is short
    path.write_bytes("\n".join(lines).encode("latin-1"))
    assert "not UTF-8" in _bad(conn, path, line=4)


@pytest.mark.parametrize("chunk,block", [(7, 3), (5, 1), (8, 4), (4, 8)])
def test_stream_check_agrees_with_a_full_decode(tmp_path, monkeypatch, chunk, block):
    """Fuzz: tiny reads and blocks, random UTF-8/ASCII/bad bytes (lone leading and continuation bytes
    included) — the stream rejects exactly what a strict decode of the whole file rejects, sends the bytes
    (minus trailing blank lines) and its sha256 is the file's."""
    import hashlib
    import random

    from hrlms.sources import files

    monkeypatch.setattr(files, "CHUNK", chunk)
    monkeypatch.setattr(files, "_UTF8_BLOCK", block)
    rnd = random.Random(chunk * 100 + block)
    pieces = [b"a", b",", b"\n", "é".encode(), "€".encode(), "😀".encode(), b"\xff", b"\xc3", b"\xe2\x82",
              b"\xf0\x9f", b"\xa9", b"\x82\xac", b"\xed\xa0\x80", b"\xc0\xaf"]
    weights = [20, 3, 3, 4, 4, 4, 1, 2, 2, 2, 2, 2, 1, 1]
    path = tmp_path / "f.csv"

    def stream_accepts(data: bytes) -> bool:
        path.write_bytes(data)
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        stream = files._OnePass(path, "utf-8")
        try:
            sent = b"".join(stream.chunks())
            digest = stream.finish()
        except IngestError as exc:
            assert "UTF-8" in str(exc)
            assert not valid, data
            return False
        assert valid, data
        assert digest == hashlib.sha256(data).hexdigest()
        assert sent == data.rstrip(b"\n") + (b"\n" if data.endswith(b"\n") else b"")
        return True

    # a character cut by ASCII (the cut must not be skipped as "an ASCII block") at every offset
    for lead, cont in ((b"\xc3", b"\xa9"), (b"\xe2", b"\x82\xac"), (b"\xe2\x82", b"\xac"), (b"\xf0\x9f", b"\x98\x80")):
        for pad in range(0, 9):
            for gap in (b"a\n" * 9)[:rnd.randint(1, 18)], b"a" * (9 - pad):
                assert not stream_accepts(b"x" * pad + lead + gap + cont)
                assert stream_accepts(b"x" * pad + lead + cont + gap)
    outcomes = set()
    for _ in range(600):
        outcomes.add(stream_accepts(b"".join(rnd.choices(pieces, weights=weights, k=rnd.randint(1, 40)))))
    assert outcomes == {True, False}
