"""The per-person hash of the change sets (hrlms.warehouse.changes._PERSON_HASHES) on raw lines written by
hand: what makes two snapshots' records of a person equal or different."""
from __future__ import annotations

from hrlms.warehouse import changes, db

COLUMNS = [c.strip() for c in changes._RAW_COLUMNS.split(",")]


def _line(snapshot_id: int, line_no: int, person_id: str | None, **values) -> tuple:
    row = {c: f"{c}-{person_id}" for c in COLUMNS} | {"person_id": person_id} | values
    return (snapshot_id, line_no, *(row[c] for c in COLUMNS))


def _hashes(conn, snapshot_id: int) -> dict[str, str]:
    return dict(conn.execute(f"select person_id, h from ({changes._PERSON_HASHES}) ph", (snapshot_id,)).fetchall())


def test_person_hashes(fresh_db):
    lines = [
        # snapshot 1
        _line(1, 2, "p1"),
        _line(1, 3, "p2", job_code="A"), _line(1, 4, "p2", job_code="B"),
        _line(1, 5, "p3", preferred_name=""),
        _line(1, 6, " p4 "),
        _line(1, 7, "  "), _line(1, 8, None),
        # snapshot 2: p1 unchanged on another line, p2's lines in the other order, p3's '' now NULL,
        # p4 trimmed, p5 on two identical lines
        _line(2, 9, "p1"),
        _line(2, 10, "p2", job_code="B"), _line(2, 11, "p2", job_code="A"),
        _line(2, 12, "p3", preferred_name=None),
        _line(2, 13, "p4"),
        _line(2, 14, "p5"), _line(2, 15, "p5"),
    ]
    with db.connect() as conn:
        db.bootstrap(conn)
        with conn.cursor() as cur:
            cur.executemany(f"insert into raw_hris.workers (_snapshot_id, _line_no, {', '.join(COLUMNS)}) "
                            f"values ({', '.join(['%s'] * (len(COLUMNS) + 2))})", lines)
        one, two = _hashes(conn, 1), _hashes(conn, 2)
        line_hash = dict(conn.execute(
            f"select _line_no, md5(row({changes._RAW_COLUMNS})::text) from raw_hris.workers").fetchall())

    assert sorted(one) == ["p1", "p2", "p3", "p4"]          # lines without a person_id are not a person
    assert sorted(two) == ["p1", "p2", "p3", "p4", "p5"]
    assert one["p1"] == two["p1"] == line_hash[2]            # one line: that line's hash
    assert one["p2"] == two["p2"] != line_hash[3]            # several lines: in any order
    assert one["p2"] not in (line_hash[3], line_hash[4])
    assert one["p3"] != two["p3"]                            # '' is not NULL
    assert one["p4"] != two["p4"]                            # the raw text counts (blanks around the id)
    assert two["p5"] not in (line_hash[14], line_hash[15])   # two identical lines are not one
    assert len(set(two.values())) == 5
