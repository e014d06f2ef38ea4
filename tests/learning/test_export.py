"""The CSV enrolment export publishes what the LMS really got (sync.applied_*), not the desired state,
and obeys the plan's decision — on a real scim2-server, with the desired state set directly (as the sync
tests do) and the compliance mart as a small table. The DAG path (held → approved / rejected /
superseded) is proven in tests/e2e/test_breaker.py."""
from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from hrlms.learning import export
from hrlms.learning.export import deliver
from hrlms.sync.apply import apply_plan
from hrlms.sync.plan import make_plan
from hrlms.sync.scim import LmsConfig, ScimClient

from ..sync.helpers import desired_state_db, lms_user, person, pid, set_desired

D = date(2026, 1, 5)
GROUPS = {"req:SAFE": "Workplace safety", "req:ENG": "Secure coding", "org:ORG1": "Finance"}


@pytest.fixture
def client(fresh_lms):
    with ScimClient(LmsConfig(*fresh_lms)) as c:
        yield c


@pytest.fixture
def conn(fresh_db):
    with desired_state_db(fresh_db) as c:
        c.execute("""create table marts.learning_compliance_status (
                         assignment_id text, person_id text, account_person_id text, requirement_id text,
                         requirement_kind text, requirement_title text, assigned_on date, due_on date,
                         status text)""")
        c.execute("insert into learning.requirements (ruleset, requirement_id, kind, title) values "
                  "('live', 'SAFE', 'course', 'Workplace safety'), ('live', 'ENG', 'course', 'Secure coding')")
        yield c


def assign(conn, rows: list[tuple[int, str, str]]) -> None:
    """Open assignments (person number, requirement, status) in the compliance mart."""
    conn.execute("truncate marts.learning_compliance_status")
    with conn.cursor() as cur:
        cur.executemany(
            "insert into marts.learning_compliance_status values (%s, %s, %s, %s, 'course', %s, %s, %s, %s)",
            [(f"{pid(i)}|{r}", pid(i), pid(i), r, GROUPS[f"req:{r}"], D, date(2026, 2, 4), s) for i, r, s in rows])


def read(path) -> list[tuple[str, str]]:
    return [(r["user_external_id"], r["requirement_id"])
            for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))]


def test_after_a_half_failed_apply_the_export_lists_only_what_was_applied(conn, client, tmp_path):
    # P1's userName is taken in the LMS by someone else: its create is a dead letter and its
    # memberships go to escrow; P2 and P3 get their accounts and audiences.
    client.create_user(lms_user({**person(99), "user_name": "user1", "person_id": "X"}))
    set_desired(conn, [person(1), person(2), person(3, user_name="=cmd|calc")], GROUPS,
                {"req:SAFE": [1, 2, 3], "req:ENG": [1, 3], "org:ORG1": [1, 2, 3]})
    assign(conn, [(1, "SAFE", "not_started"), (1, "ENG", "overdue"), (2, "SAFE", "completed"),
                  (3, "SAFE", "in_progress"), (3, "ENG", "not_started")])
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    res = apply_plan(conn, p.plan_id, client)
    assert res.dead_letter == 1 and res.escrow >= 1
    assert conn.execute("select status from sync.plans where plan_id = %s", (p.plan_id,)).fetchone() == ("partial",)

    out = tmp_path / "exports"
    got = deliver(conn, out, p.plan_id)
    assert got["published"] and got["file"] == f"enrolments_{D}.csv" and got["rows"] == 3
    applied = conn.execute("select m.person_id, substr(m.group_key, 5) from sync.applied_memberships m "
                           "join sync.applied_users u using (person_id) where u.is_active and m.group_key like 'req:%%' "
                           "order by 1, 2").fetchall()
    assert read(out / f"enrolments_{D}.csv") == applied == [(pid(2), "SAFE"), (pid(3), "ENG"), (pid(3), "SAFE")]
    rows = list(csv.DictReader(io.StringIO((out / f"enrolments_{D}.csv").read_text(encoding="utf-8"))))
    assert [r["status"] for r in rows] == ["completed", "not_started", "in_progress"]    # from the mart
    assert rows[1]["user_name"] == "'=cmd|calc" and rows[1]["requirement_title"] == "Secure coding"
    # Rerun: the same bytes; a dry run publishes nothing (and leaves the published file as it is).
    before = (out / f"enrolments_{D}.csv").read_bytes()
    assert deliver(conn, out, p.plan_id)["rows"] == 3 and (out / f"enrolments_{D}.csv").read_bytes() == before
    dry = deliver(conn, out, p.plan_id, dry_run=True)
    assert not dry["published"] and "dry run" in dry["why"]
    assert (out / f"enrolments_{D}.csv").read_bytes() == before

    # A membership the LMS still holds without an open assignment (its removal failed) is listed: the
    # LMS has it; the requirement's kind and title, no dates or status.
    assign(conn, [(2, "SAFE", "completed"), (3, "SAFE", "in_progress")])
    deliver(conn, out, p.plan_id)
    rows = list(csv.DictReader(io.StringIO((out / f"enrolments_{D}.csv").read_text(encoding="utf-8"))))
    assert [(r["user_external_id"], r["requirement_id"], r["requirement_title"], r["status"]) for r in rows] == [
        (pid(2), "SAFE", "Workplace safety", "completed"), (pid(3), "ENG", "Secure coding", ""),
        (pid(3), "SAFE", "Workplace safety", "in_progress")]


def test_a_crash_mid_write_leaves_no_half_file(conn, client, tmp_path, monkeypatch):
    set_desired(conn, [person(i) for i in range(1, 5)], GROUPS, {"req:SAFE": [1, 2, 3, 4]})
    assign(conn, [(i, "SAFE", "not_started") for i in range(1, 5)])
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    apply_plan(conn, p.plan_id, client)
    out = tmp_path / "exports"
    deliver(conn, out, p.plan_id)
    before = (out / f"enrolments_{D}.csv").read_bytes()
    calls = []

    def boom(value):
        calls.append(value)
        if len(calls) > 12:
            raise OSError("disk full")
        return str(value)

    monkeypatch.setattr(export, "inert", boom)
    with pytest.raises(OSError):
        deliver(conn, out, p.plan_id)
    assert (out / f"enrolments_{D}.csv").read_bytes() == before
    assert sorted(f.name for f in out.iterdir()) == [f"enrolments_{D}.csv"]     # no temporary file left
