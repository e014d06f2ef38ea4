"""Plan and apply against a real Postgres and a real scim2-server."""
from datetime import date

import pytest

from hrlms.sync.apply import _claim, apply_plan
from hrlms.sync.plan import make_plan
from hrlms.sync.scim import ENTERPRISE, LmsConfig, ScimClient
from hrlms.warehouse import db

from .helpers import DEFAULT_NAMES, MAPPED_EXTRA, lms_user

D = date(2026, 1, 5)
COLS = ("person_id", "user_name", "given_name", "family_name", "display_name", "email", "title",
        "employee_number", "department", "is_active")


def person(i: int, **over):
    row = {"person_id": f"P{i:07d}", "user_name": f"user{i}", "given_name": f"G{i}", "family_name": f"F{i}",
           "display_name": f"G{i} F{i}", "email": f"user{i}@example.com", "title": "Analyst",
           "employee_number": str(1000 + i), "department": "Finance", "is_active": True}
    row.update(over)
    return row


@pytest.fixture
def conn(fresh_db):
    with db.connect(fresh_db) as c:
        db.bootstrap(c)
        c.execute("create schema marts")
        c.execute("create table marts.lms_desired_users (person_id text, user_name text, given_name text, "
                  "family_name text, display_name text, email text, title text, employee_number text, "
                  f"department text, access_from_on date, access_until_on date, is_active boolean, {MAPPED_EXTRA})")
        yield c


@pytest.fixture
def client(fresh_lms):
    with ScimClient(LmsConfig(*fresh_lms)) as c:
        yield c


def set_desired(conn, rows):
    with conn.transaction():
        conn.execute("truncate marts.lms_desired_users")
        with conn.cursor() as cur:
            cur.executemany(f"insert into marts.lms_desired_users ({', '.join(COLS)}) values "
                            f"({', '.join(['%s'] * len(COLS))})", [tuple(r[c] for c in COLS) for r in rows])


def ops(conn, plan_id):
    return sorted(conn.execute("select op_type, person_id, changed_fields from sync.ops where plan_id = %s",
                               (plan_id,)).fetchall())


def lms_state(client):
    return {u["externalId"]: u for u in client.iter_users()}


def test_initial_changes_and_rerun(conn, client):
    set_desired(conn, [person(1), person(2), person(3), person(4, is_active=False)])
    p1 = make_plan(conn, logical_date=D, snapshot_id=1)
    assert p1.counts == {"create_user": 3}
    res = apply_plan(conn, p1.plan_id, client)
    assert res.writes == 3 and res.escrow == res.dead_letter == 0
    state = lms_state(client)
    assert set(state) == {"P0000001", "P0000002", "P0000003"}
    assert state["P0000002"][ENTERPRISE] == {"employeeNumber": "1002", "department": "Finance"}

    # Nothing changed: nothing to do.
    assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}

    # Day 2: a title change, a leaver, one gone from HR, one gone but quarantined, a late starter.
    set_desired(conn, [person(1, title="Lead"), person(2, is_active=False), person(4)])
    conn.execute("insert into dq.quarantine values (2, 'workers', 7, 'invalid_email', 'P0000003', 'work_email', 'x', 'bad')")
    p2 = make_plan(conn, logical_date=date(2026, 1, 6), snapshot_id=2)
    assert ops(conn, p2.plan_id) == [
        ("create_user", "P0000004", list(DEFAULT_NAMES)),   # a create sends every mapped attribute
        ("deactivate_user", "P0000002", []),
        ("update_user", "P0000001", ["title"]),
    ]
    assert p2.attribute_counts == {"title": 1}
    res = apply_plan(conn, p2.plan_id, client)
    assert dict(res.applied) == {"create_user": 1, "deactivate_user": 1, "update_user": 1}
    state = lms_state(client)
    assert state["P0000001"]["title"] == "Lead" and state["P0000002"]["active"] is False
    assert state["P0000003"]["active"] is True, "a quarantined person must not be deactivated"
    assert make_plan(conn, logical_date=date(2026, 1, 6), snapshot_id=2).counts == {}

    # Back to HR as active: reactivation carries the changed attributes too.
    set_desired(conn, [person(1, title="Lead"), person(2, title="Returner"), person(4)])
    p3 = make_plan(conn, logical_date=date(2026, 1, 7), snapshot_id=3)
    assert ops(conn, p3.plan_id)[-1] == ("reactivate_user", "P0000002", ["title"])
    apply_plan(conn, p3.plan_id, client)
    assert lms_state(client)["P0000002"]["active"] is True
    assert lms_state(client)["P0000002"]["title"] == "Returner"


def test_crash_after_lms_write_before_commit_resumes_without_duplicates(conn, client):
    set_desired(conn, [person(i) for i in range(1, 11)])
    plan = make_plan(conn, logical_date=D, snapshot_id=1)
    # An apply claims a batch, sends some creates, and dies before recording anything.
    claimed = _claim(conn, plan.plan_id, batch_size=6)
    for op in claimed[:4]:
        client.create_user(lms_user(op["payload"]))
    assert conn.execute("select count(*) from sync.ops where status = 'sending'").fetchone()[0] == 6

    res = apply_plan(conn, plan.plan_id, client)   # the retry of the task
    assert res.writes == 10 and res.dead_letter == 0
    users = list(client.iter_users())
    assert sorted(u["externalId"] for u in users) == [f"P{i:07d}" for i in range(1, 11)]
    assert conn.execute("select count(*) from sync.applied_users").fetchone()[0] == 10
    assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}


def test_crash_then_new_plan_verifies_unknown_outcomes(conn, client):
    set_desired(conn, [person(i) for i in range(1, 4)])
    plan = make_plan(conn, logical_date=D, snapshot_id=1)
    for op in _claim(conn, plan.plan_id, batch_size=10)[:2]:
        client.create_user(lms_user(op["payload"]))
    # The next run plans again instead of retrying: unknown outcomes are looked up first.
    replan = make_plan(conn, logical_date=D, snapshot_id=1)
    assert conn.execute("select count(*) from sync.ops where plan_id = %s and verify_first",
                        (replan.plan_id,)).fetchone()[0] == 3
    apply_plan(conn, replan.plan_id, client)
    assert len(list(client.iter_users())) == 3
    assert conn.execute("select status from sync.plans where plan_id = %s", (plan.plan_id,)).fetchone()[0] == "superseded"
