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
