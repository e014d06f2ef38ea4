"""Managers (set_manager, second pass) and groups (create/update/add/remove members) against a real
Postgres and a real scim2-server."""
from datetime import date

import pytest

from hrlms.sync.apply import _claim, apply_plan
from hrlms.sync.plan import MEMBER_CHUNK, make_plan
from hrlms.sync.scim import ENTERPRISE, group_resource

from .helpers import desired_state_db, lms_user, person, pid, set_desired

D = date(2026, 1, 5)


@pytest.fixture
def conn(fresh_db):
    with desired_state_db(fresh_db) as c:
        yield c


def lms_users(client):
    return {u["externalId"]: u for u in client.iter_users()}


def lms_groups(client):
    """externalId -> list of groups (a list, so duplicates would show)."""
    out: dict[str, list] = {}
    for g in client.iter_groups():
        out.setdefault(g.get("externalId"), []).append(g)
    return out


def lms_members(client, conn, group_key):
    """person ids of the LMS group's members (LMS ids mapped back through sync.applied_users)."""
    lms_id = conn.execute("select lms_id from sync.applied_groups where group_key = %s", (group_key,)).fetchone()[0]
    by_lms = {u["id"]: u["externalId"] for u in client.iter_users()}
    return sorted(by_lms.get(m["value"], m["value"]) for m in client.get_group(lms_id).get("members") or [])


def op_rows(conn, plan_id):
    return conn.execute("select op_type, coalesce(person_id, group_key), members, payload, status from sync.ops "
                        "where plan_id = %s order by op_id", (plan_id,)).fetchall()


ORG = {"org:ORG1": "Finance", "org:ORG2": "Legal", "rollup:ORG1": "Finance (all)"}


def test_groups_with_exact_members_transfer_leaver_and_rerun(conn, client):
    people = [person(i) for i in range(1, 7)]
    members = {"org:ORG1": [1, 2, 3], "org:ORG2": [4, 5, 6], "rollup:ORG1": [1, 2, 3, 4, 5, 6]}
    set_desired(conn, people, ORG, members)
    p1 = make_plan(conn, logical_date=D, snapshot_id=1)
    assert p1.counts == {"create_user": 6, "create_group": 3, "add_members": 3}
    assert p1.member_counts == {"add_members": 12}
    phases = dict(conn.execute("select op_type, min(phase) from sync.ops where plan_id = %s group by op_type",
                               (p1.plan_id,)).fetchall())
    assert phases == {"create_user": 1, "create_group": 1, "add_members": 2}
    res = apply_plan(conn, p1.plan_id, client)
    assert dict(res.applied) == {"create_user": 6, "create_group": 3, "add_members": 3}
    assert res.escrow == res.dead_letter == 0
    groups = lms_groups(client)
    assert {k: [g["displayName"] for g in v] for k, v in groups.items()} == {
        "org:ORG1": ["Finance"], "org:ORG2": ["Legal"], "rollup:ORG1": ["Finance (all)"]}
    for key, ids in members.items():
        assert lms_members(client, conn, key) == [pid(i) for i in ids]

    # Rerun: nothing to do, nothing written.
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    assert p.counts == {}
    assert apply_plan(conn, p.plan_id, client).writes == 0

    # Day 2: P3 moves ORG1 -> ORG2, P6 leaves (deactivated), ORG2 is renamed.
    people = [person(i) for i in range(1, 6)] + [person(6, is_active=False)]
    members = {"org:ORG1": [1, 2], "org:ORG2": [3, 4, 5], "rollup:ORG1": [1, 2, 3, 4, 5]}
    set_desired(conn, people, {**ORG, "org:ORG2": "Legal & Compliance"}, members)
    p2 = make_plan(conn, logical_date=date(2026, 1, 6), snapshot_id=2)
    rows = op_rows(conn, p2.plan_id)
    assert sorted((t, k, m) for t, k, m, _p, _s in rows) == [
        ("add_members", "org:ORG2", [pid(3)]),
        ("deactivate_user", pid(6), None),
        ("remove_members", "org:ORG1", [pid(3)]),
        ("remove_members", "org:ORG2", [pid(6)]),
        ("remove_members", "rollup:ORG1", [pid(6)]),
        ("update_group", "org:ORG2", None),
    ]
    res = apply_plan(conn, p2.plan_id, client)
    assert res.escrow == res.dead_letter == 0 and res.writes == 6
    for key, ids in members.items():
        assert lms_members(client, conn, key) == [pid(i) for i in ids]
    assert [g["displayName"] for g in lms_groups(client)["org:ORG2"]] == ["Legal & Compliance"]
    assert lms_users(client)[pid(6)]["active"] is False
    assert sorted(conn.execute("select group_key, person_id from sync.applied_memberships "
                               "where person_id in ('P0000003', 'P0000006')").fetchall()) == [
        ("org:ORG2", pid(3)), ("rollup:ORG1", pid(3))]
    p = make_plan(conn, logical_date=date(2026, 1, 6), snapshot_id=2)
    assert p.counts == {}


def test_membership_changes_are_add_remove_chunks(conn, client, monkeypatch):
    # The filtered removes (HRLMS_SCIM_MEMBER_REMOVAL=filter, or an LMS without ETags) are checked here; the
    # read + guarded replace of an LMS with ETags in test_member_removal.py.
    monkeypatch.setattr(client, "member_removal", "filter")
    n = MEMBER_CHUNK + 20
    people = [person(i) for i in range(1, n + 1)]
    set_desired(conn, people, {"org:ORG1": "Big", "org:ORG2": "Small"},
                {"org:ORG1": range(1, n + 1), "org:ORG2": []})
    p1 = make_plan(conn, logical_date=D, snapshot_id=1)
    adds = [m for t, _k, m, _p, _s in op_rows(conn, p1.plan_id) if t == "add_members"]
    assert sorted(len(m) for m in adds) == [20, MEMBER_CHUNK]
    apply_plan(conn, p1.plan_id, client)
    assert len(lms_members(client, conn, "org:ORG1")) == n

    # Two people transfer out of the big group: two removes and two adds, the other members untouched.
    set_desired(conn, people, {"org:ORG1": "Big", "org:ORG2": "Small"},
                {"org:ORG1": range(3, n + 1), "org:ORG2": [1, 2]})
    p2 = make_plan(conn, logical_date=D, snapshot_id=2)
    assert sorted((t, k, m) for t, k, m, _p, _s in op_rows(conn, p2.plan_id)) == [
        ("add_members", "org:ORG2", [pid(1), pid(2)]),
        ("remove_members", "org:ORG1", [pid(1), pid(2)]),
    ]
    sent = []
    orig = client.patch
    client.patch = lambda path, body, **kw: (sent.append((path, body)), orig(path, body, **kw))[1]
    apply_plan(conn, p2.plan_id, client, use_bulk=False)
    client.patch = orig
    ids = dict(conn.execute("select person_id, lms_id from sync.applied_users").fetchall())
    bodies = {path.split("/")[2]: body["Operations"] for path, body in sent}
    g1, g2 = (conn.execute("select lms_id from sync.applied_groups where group_key = %s", (k,)).fetchone()[0]
              for k in ("org:ORG1", "org:ORG2"))
    assert bodies[g1] == [{"op": "remove", "path": f'members[value eq "{ids[pid(1)]}"]'},
                          {"op": "remove", "path": f'members[value eq "{ids[pid(2)]}"]'}]
    assert bodies[g2] == [{"op": "add", "path": "members", "value": [{"value": ids[pid(1)]},
                                                                    {"value": ids[pid(2)]}]}]
    assert all(op["op"] != "replace" for ops in bodies.values() for op in ops)
    assert len(lms_members(client, conn, "org:ORG1")) == n - 2
    assert lms_members(client, conn, "org:ORG2") == [pid(1), pid(2)]


def test_a_groups_adds_in_one_batch_are_one_patch(conn, client):
    """The plan cuts a group's new members into ops of MEMBER_CHUNK; the apply sends the ops of one group
    in a batch as one PATCH (an LMS reads and writes the group whole on each), each op recorded applied."""
    n = MEMBER_CHUNK + 20
    people = [person(i) for i in range(1, n + 1)]
    set_desired(conn, people, {"org:ORG1": "Big"}, {"org:ORG1": range(1, n + 1)})
    p1 = make_plan(conn, logical_date=D, snapshot_id=1)
    sent = []
    orig = client.bulk
    client.bulk = lambda operations: (sent.extend(operations), orig(operations))[1]
    apply_plan(conn, p1.plan_id, client, use_bulk=True)
    client.bulk = orig
    g1 = conn.execute("select lms_id from sync.applied_groups where group_key = 'org:ORG1'").fetchone()[0]
    patches = [o for o in sent if o["method"] == "PATCH" and o["path"] == f"/Groups/{g1}"]
    assert len(patches) == 1
    assert [(o["op"], len(o["value"])) for o in patches[0]["data"]["Operations"]] == [("add", n)]
    assert {(t, s, len(m)) for t, _k, m, _p, s in op_rows(conn, p1.plan_id) if t == "add_members"} == {
        ("add_members", "applied", MEMBER_CHUNK), ("add_members", "applied", 20)}
    assert len(lms_members(client, conn, "org:ORG1")) == n
    assert conn.execute("select count(*) from sync.applied_memberships").fetchone()[0] == n
    assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}


def test_group_gone_from_desired_loses_members_but_stays(conn, client):
    people = [person(i) for i in range(1, 4)]
    set_desired(conn, people, {"org:ORG1": "A", "org:ORG2": "B"}, {"org:ORG1": [1, 2], "org:ORG2": [3]})
    apply_plan(conn, make_plan(conn, logical_date=D, snapshot_id=1).plan_id, client)
    set_desired(conn, people, {"org:ORG1": "A"}, {"org:ORG1": [1, 2]})
    p = make_plan(conn, logical_date=D, snapshot_id=2)
    assert p.counts == {"remove_members": 1}
    apply_plan(conn, p.plan_id, client)
    assert lms_members(client, conn, "org:ORG2") == []
    assert len(lms_groups(client)["org:ORG2"]) == 1, "the group is emptied, not deleted"


def test_quarantined_person_keeps_membership(conn, client):
    people = [person(i) for i in range(1, 4)]
    set_desired(conn, people, {"org:ORG1": "A"}, {"org:ORG1": [1, 2, 3]})
    apply_plan(conn, make_plan(conn, logical_date=D, snapshot_id=1).plan_id, client)
    # P2's row is quarantined in snapshot 2 (so absent from the marts); P3 really left HR.
    set_desired(conn, [person(1), person(3, is_active=False)], {"org:ORG1": "A"}, {"org:ORG1": [1]})
    conn.execute("insert into dq.quarantine values (2, 'workers', 3, 'invalid_email', 'P0000002', 'work_email', "
                 "'x', 'bad')")
    p = make_plan(conn, logical_date=D, snapshot_id=2)
    assert sorted((t, k, m) for t, k, m, _p, _s in op_rows(conn, p.plan_id)) == [
        ("deactivate_user", pid(3), None), ("remove_members", "org:ORG1", [pid(3)])]
    apply_plan(conn, p.plan_id, client)
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2)]
    assert lms_users(client)[pid(2)]["active"] is True


def test_set_manager_second_pass_and_manager_change(conn, client):
    # Manager P1 and reports P2, P3 are all created by the same plan; P4's manager P9 has no account.
    people = [person(1), person(2, manager_person_id=pid(1)), person(3, manager_person_id=pid(1)),
              person(4, manager_person_id=pid(9)), person(9, is_active=False), person(5, manager_person_id=pid(5))]
    set_desired(conn, people)
    p1 = make_plan(conn, logical_date=D, snapshot_id=1)
    assert p1.counts == {"create_user": 5, "set_manager": 2}
    assert {k: p["manager_person_id"] for t, k, _m, p, _s in op_rows(conn, p1.plan_id) if t == "set_manager"} == {
        pid(2): pid(1), pid(3): pid(1)}
    # Small batches, managers first: [P1, P5, P2] then [P3, P4]. P3's create carries its manager P1
    # (created by the batch before); P2 was sent with P1, so its set_manager (phase 2, after phase 1) PATCHes.
    res = apply_plan(conn, p1.plan_id, client, batch_size=3)
    assert dict(res.applied) == {"create_user": 5, "set_manager": 1}
    assert {k: (s, p.get("sent")) for t, k, _m, p, s in op_rows(conn, p1.plan_id) if t == "set_manager"} == {
        pid(2): ("applied", None), pid(3): ("applied", False)}
    users = lms_users(client)
    assert users[pid(2)][ENTERPRISE]["manager"] == {"value": users[pid(1)]["id"]}
    assert users[pid(3)][ENTERPRISE]["manager"]["value"] == users[pid(1)]["id"]
    assert "manager" not in users[pid(4)].get(ENTERPRISE, {})
    assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}

    # P3 gets a new manager P2: one set_manager op. P4's manager P9 joins: P4 gets it now.
    people[2] = person(3, manager_person_id=pid(2))
    people[4] = person(9)
    set_desired(conn, people)
    p2 = make_plan(conn, logical_date=D, snapshot_id=2)
    assert p2.counts == {"create_user": 1, "set_manager": 2}
    apply_plan(conn, p2.plan_id, client)
    users = lms_users(client)
    assert users[pid(3)][ENTERPRISE]["manager"]["value"] == users[pid(2)]["id"]
    assert users[pid(4)][ENTERPRISE]["manager"]["value"] == users[pid(9)]["id"]

    # Only a manager change: exactly one op. Then the manager leaves: removed from the report.
    people[2] = person(3, manager_person_id=pid(1))
    set_desired(conn, people)
    p3 = make_plan(conn, logical_date=D, snapshot_id=3)
    assert p3.counts == {"set_manager": 1}
    apply_plan(conn, p3.plan_id, client)
    assert lms_users(client)[pid(3)][ENTERPRISE]["manager"]["value"] == lms_users(client)[pid(1)]["id"]
    people[4] = person(9, is_active=False)
    set_desired(conn, people)
    p4 = make_plan(conn, logical_date=D, snapshot_id=4)
    assert p4.counts == {"deactivate_user": 1, "set_manager": 1}
    apply_plan(conn, p4.plan_id, client)
    assert "manager" not in lms_users(client)[pid(4)].get(ENTERPRISE, {})
    assert conn.execute("select manager_person_id from sync.applied_users where person_id = %s",
                        (pid(4),)).fetchone()[0] is None
    assert make_plan(conn, logical_date=D, snapshot_id=4).counts == {}


def test_manager_without_account_escrows_when_its_create_fails(conn, client):
    # The manager's userName is taken in the LMS by someone else: its create is a dead letter, and the
    # report's set_manager goes to escrow with the reason instead of pointing at nobody.
    client.create_user(lms_user({**person(99), "user_name": "user1", "person_id": "X"}))
    set_desired(conn, [person(1), person(2, manager_person_id=pid(1))], {"org:ORG1": "A"}, {"org:ORG1": [1, 2]})
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    res = apply_plan(conn, p.plan_id, client)
    rows = {(t, k): (s, m) for t, k, m, _p, s in op_rows(conn, p.plan_id)}
    assert rows[("create_user", pid(1))][0] == "dead_letter"
    assert rows[("set_manager", pid(2))][0] == "escrow"
    err = conn.execute("select last_error from sync.ops where plan_id = %s and op_type = 'set_manager'",
                       (p.plan_id,)).fetchone()[0]
    assert "P0000001 has no LMS account" in err
    # The member who has an account was added; the op is in escrow for the other one.
    assert rows[("add_members", "org:ORG1")][0] == "escrow"
    assert lms_members(client, conn, "org:ORG1") == [pid(2)]
    assert res.dead_letter == 1 and res.escrow == 2
    # Next plan: only the remaining work.
    p2 = make_plan(conn, logical_date=D, snapshot_id=1)
    assert sorted((t, k, m) for t, k, m, _p, _s in op_rows(conn, p2.plan_id)) == [
        ("add_members", "org:ORG1", [pid(1)]), ("create_user", pid(1), None), ("set_manager", pid(2), None)]


def test_crash_between_phases_then_reapply_converges(conn, client):
    people = [person(1), person(2, manager_person_id=pid(1)), person(3, manager_person_id=pid(1))]
    set_desired(conn, people, ORG, {"org:ORG1": [1, 2], "org:ORG2": [3], "rollup:ORG1": [1, 2, 3]})
    plan = make_plan(conn, logical_date=D, snapshot_id=1)

    class Crash(Exception):
        pass

    def crash(_n):
        raise Crash
    # The whole phase 1 fits one batch; the task dies right after recording it.
    with pytest.raises(Crash):
        apply_plan(conn, plan.plan_id, client, progress=crash)
    status = dict(conn.execute("select phase, array_agg(distinct status) from sync.ops where plan_id = %s "
                               "group by phase", (plan.plan_id,)).fetchall())
    assert status == {1: ["applied"], 2: ["pending"]}
    apply_plan(conn, plan.plan_id, client)    # the task's retry
    groups = lms_groups(client)
    assert {k: len(v) for k, v in groups.items()} == {"org:ORG1": 1, "org:ORG2": 1, "rollup:ORG1": 1}
    assert lms_members(client, conn, "rollup:ORG1") == [pid(1), pid(2), pid(3)]
    users = lms_users(client)
    assert users[pid(3)][ENTERPRISE]["manager"]["value"] == users[pid(1)]["id"]
    assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}


def test_crash_after_group_create_before_record_links_instead_of_duplicating(conn, client):
    people = [person(1), person(2)]
    set_desired(conn, people, ORG, {"org:ORG1": [1, 2], "org:ORG2": [], "rollup:ORG1": [1, 2]})
    plan = make_plan(conn, logical_date=D, snapshot_id=1)
    # An apply claims phase 1, creates everything in the LMS, and dies before recording anything.
    for op in _claim(conn, plan.plan_id, batch_size=100):
        if op["op_type"] == "create_user":
            client.create_user(lms_user(op["payload"]))
        else:
            client.create_group(group_resource(op["group_key"], "old name"))
    # The next run plans again (verify first for the unknown outcomes), then applies.
    replan = make_plan(conn, logical_date=D, snapshot_id=1)
    assert conn.execute("select count(*) from sync.ops where plan_id = %s and op_type = 'create_group' "
                        "and verify_first", (replan.plan_id,)).fetchone()[0] == 3
    res = apply_plan(conn, replan.plan_id, client)
    assert res.escrow == res.dead_letter == 0
    groups = lms_groups(client)
    assert {k: [g["displayName"] for g in v] for k, v in groups.items()} == {
        "org:ORG1": ["Finance"], "org:ORG2": ["Legal"], "rollup:ORG1": ["Finance (all)"]}
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2)]
    assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}


def test_without_group_marts_or_manager_column_no_new_ops(conn, client):
    conn.execute("drop table marts.lms_desired_group_members")
    conn.execute("alter table marts.lms_desired_users drop column manager_person_id")
    conn.execute("insert into marts.lms_desired_users (person_id, user_name, is_active) values ('P1', 'u1', true)")
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    assert p.counts == {"create_user": 1}


def test_members_without_an_account_are_counted_not_sent(conn, client):
    # P2 is inactive; P7 is not an account at all (e.g. an HR id instead of the account person id).
    set_desired(conn, [person(1), person(2, is_active=False)], {"org:ORG1": "A"}, {"org:ORG1": [1, 2, 7]})
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    assert p.member_counts == {"add_members": 1, "skipped_without_account": 2}
    apply_plan(conn, p.plan_id, client)
    assert lms_members(client, conn, "org:ORG1") == [pid(1)]
