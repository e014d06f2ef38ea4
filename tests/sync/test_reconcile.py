"""Reconciliation (hrlms.sync.reconcile) against a real Postgres and a real scim2-server: out-of-band
changes are found exactly, remaster re-applies the desired state (unknown accounts untouched), and a
remaster plan that removes too much is held by the breaker."""
import json
from datetime import date

import pytest
import requests

from hrlms.sync.apply import apply_plan
from hrlms.sync.plan import make_plan
from hrlms.sync.reconcile import reconcile, run
from hrlms.sync.scim import (
    ENTERPRISE,
    add_members_body,
    group_resource,
    remove_members_body,
)

from .helpers import desired_state_db, lms_patch, lms_user, person, pid, set_desired

D = date(2026, 1, 5)


@pytest.fixture
def conn(fresh_db):
    with desired_state_db(fresh_db) as c:
        yield c


def provision(conn, client):
    p = make_plan(conn, logical_date=D, snapshot_id=1)
    assert not p.held
    res = apply_plan(conn, p.plan_id, client)
    assert res.escrow == res.dead_letter == 0
    return p


def lms_ids(conn):
    return dict(conn.execute("select person_id, lms_id from sync.applied_users").fetchall())


def group_ids(conn):
    return dict(conn.execute("select group_key, lms_id from sync.applied_groups").fetchall())


def drift(conn, reconcile_id):
    return sorted(conn.execute(
        "select kind, object_type, external_id, field, applied_value, lms_value from sync.drift "
        "where reconcile_id = %s", (reconcile_id,)).fetchall(), key=lambda r: tuple(str(x) for x in r))


def lms_state(client):
    """{externalId: [user]} and {group externalId: (displayName, sorted member externalIds)} as the LMS holds them."""
    users: dict = {}
    for u in client.iter_users():
        users.setdefault(u.get("externalId"), []).append(u)
    by_id = {u["id"]: u.get("externalId") for us in users.values() for u in us}
    groups: dict = {}
    for g in client.iter_groups():
        groups.setdefault(g.get("externalId"), []).append(
            (g["displayName"], sorted(by_id.get(m["value"], "?" + m["value"]) for m in g.get("members") or [])))
    return users, {k: sorted(v) for k, v in groups.items()}


GROUPS = {"org:ORG1": "Finance", "org:ORG2": "Legal"}


def test_reconcile_finds_drift_and_remaster_restores_desired_state(conn, client, tmp_path, monkeypatch):
    people = [person(1), person(2, manager_person_id=pid(1)), person(3), person(4), person(5), person(6)]
    members = {"org:ORG1": [1, 2, 3], "org:ORG2": [4, 5]}
    set_desired(conn, people, GROUPS, members)
    provision(conn, client)
    ids, gids = lms_ids(conn), group_ids(conn)
    desired_users, desired_groups = lms_state(client)
    assert desired_groups == {"org:ORG1": [("Finance", [pid(1), pid(2), pid(3)])],
                              "org:ORG2": [("Legal", [pid(4), pid(5)])]}

    # Out of band, straight at the LMS.
    client.patch_user(ids[pid(1)], lms_patch({"title": "Chief"}, ["title"]))
    client.patch_user(ids[pid(2)], lms_patch({"is_active": False}, [], active=True))
    assert client.session.delete(client.config.base_url + f"/Users/{ids[pid(3)]}").status_code == 204
    unknown = client.create_user(lms_user({"person_id": "CONTRACTOR-1", "user_name": "contractor1",
                                                "display_name": "Con Tractor", "email": "c@example.com"}))
    client.patch(f"/Groups/{gids['org:ORG2']}", remove_members_body([ids[pid(4)]]))
    client.patch(f"/Groups/{gids['org:ORG1']}", add_members_body([ids[pid(6)]]))
    unknown_before = client.get_user(unknown["id"])

    res = reconcile(conn, client, run_key="t1")
    expected = sorted([
        ("changed", "user", pid(1), "title", "Analyst", "Chief"),
        ("changed", "user", pid(2), "is_active", "true", "false"),
        ("missing", "user", pid(3), None, None, None),
        ("unknown", "user", "CONTRACTOR-1", "userName", None, "contractor1"),
        ("missing", "membership", "org:ORG1", "member", pid(3), None),          # its account is gone…
        ("extra", "membership", "org:ORG1", "member", None, f"lms:{ids[pid(3)]}"),  # …its reference stays
        ("extra", "membership", "org:ORG1", "member", None, pid(6)),
        ("missing", "membership", "org:ORG2", "member", pid(4), None),
    ], key=lambda r: tuple(str(x) for x in r))
    assert drift(conn, res.reconcile_id) == expected
    assert res.counts == {"changed_user": 2, "extra_membership": 2, "missing_membership": 2, "missing_user": 1,
                          "unknown_user": 1}
    assert res.lms_users == 6 and res.lms_groups == 2 and res.plan_id is None
    run_row = conn.execute("select status, remaster, plan_id, finished_at is not null, counts -> 'drift' "
                           "from sync.reconcile_runs where reconcile_id = %s", (res.reconcile_id,)).fetchone()
    assert run_row == ("reported", False, None, True, res.counts)
    # Report-only: nothing changed, and a rerun finds the same drift.
    again = reconcile(conn, client, run_key="t2")
    assert drift(conn, again.reconcile_id) == expected
    assert client.get_user(unknown["id"]) == unknown_before

    # Remaster through the DAG's stage (env: the fresh_db / fresh_lms fixtures), with its report.
    monkeypatch.setenv("HRLMS_REPORTS_DIR", str(tmp_path / "reports"))
    out = run("manual__2026<x>", date(2026, 1, 6), remaster=True)
    rid = out["reconcile_id"]
    status, plan_id, counts = conn.execute("select status, plan_id, counts from sync.reconcile_runs "
                                           "where reconcile_id = %s", (rid,)).fetchone()
    assert status == "remastered" and plan_id == out["plan_id"]
    assert counts["corrections"] == {"users_forgotten": 1, "user_fields_reset": 2, "memberships_forgotten": 1,
                                     "memberships_recorded": 1}
    assert counts["plan_ops"] == {"create_user": 1, "update_user": 1, "reactivate_user": 1, "add_members": 2,
                                  "remove_members": 1}
    assert counts["dangling_removed"] == 1 and counts["applied"]["dead_letter"] == 0
    html_path = tmp_path / "reports" / "reconcile" / "reconcile_manual__2026_x_.html"
    page = html_path.read_text()
    assert "&lt;x&gt;" in page and "<x>" not in page and "CONTRACTOR-1" in page
    assert json.loads(html_path.with_suffix(".json").read_text())["counts"]["drift"] == res.counts
    assert conn.execute("select detail -> 'drift' from audit.stage_runs where run_key = %s and stage = 'reconcile'",
                        ("reconcile:manual__2026<x>",)).fetchone()[0] == res.counts

    # The LMS equals the desired state again (one account per person, attributes, members, manager).
    users, groups = lms_state(client)
    assert groups == desired_groups
    new_ids = lms_ids(conn)
    assert new_ids[pid(3)] != ids[pid(3)]
    for p in people:
        (u,) = users[p["person_id"]]
        want = desired_users[p["person_id"]][0]
        strip = lambda r: {k: v for k, v in r.items() if k not in ("id", "meta")}
        ent = dict(u.get(ENTERPRISE) or {})
        manager = (ent.pop("manager", None) or {}).get("value")
        want_ent = dict(want.get(ENTERPRISE) or {})
        want_ent.pop("manager", None)
        assert {**strip(u), ENTERPRISE: ent} == {**strip(want), ENTERPRISE: want_ent}, p["person_id"]
        assert manager == (new_ids[pid(1)] if p["person_id"] == pid(2) else None)
    assert users["CONTRACTOR-1"] == [unknown_before]          # never touched

    # A second reconcile: only the unknown account is left.
    final = reconcile(conn, client, run_key="t3", remaster=True)
    assert drift(conn, final.reconcile_id) == [("unknown", "user", "CONTRACTOR-1", "userName", None, "contractor1")]
    assert final.plan_id is None


def test_remaster_that_removes_too_much_is_held_and_writes_nothing(conn, client, monkeypatch):
    people = [person(i) for i in range(1, 5)]
    set_desired(conn, people, GROUPS, {"org:ORG1": [1, 2], "org:ORG2": [3, 4]})
    provision(conn, client)
    ids, gids = lms_ids(conn), group_ids(conn)
    # Out of band: everyone joins both groups; plus a duplicate of org:ORG1 and an account without externalId.
    client.patch(f"/Groups/{gids['org:ORG1']}", add_members_body([ids[pid(3)], ids[pid(4)]]))
    client.patch(f"/Groups/{gids['org:ORG2']}", add_members_body([ids[pid(1)], ids[pid(2)]]))
    dup = client.create_group(group_resource("org:ORG1", "Finance (copy)"))
    resp = requests.post(client.config.base_url + "/Users", json={
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "nobody"},
        headers=dict(client.session.headers), timeout=10)
    assert resp.status_code == 201
    stranger = resp.json()
    before = lms_state(client)

    monkeypatch.setenv("HRLMS_BREAKER_MIN_COUNT", "0")
    monkeypatch.setenv("HRLMS_BREAKER_MAX_SHARE", "0.2")
    res = reconcile(conn, client, remaster=True, run_key="held")
    assert drift(conn, res.reconcile_id) == sorted([
        ("duplicate", "group", "org:ORG1", None, None, None),
        ("duplicate", "group", "org:ORG1", None, None, None),
        ("extra", "membership", "org:ORG1", "member", None, pid(3)),
        ("extra", "membership", "org:ORG1", "member", None, pid(4)),
        ("extra", "membership", "org:ORG2", "member", None, pid(1)),
        ("extra", "membership", "org:ORG2", "member", None, pid(2)),
        ("unknown", "user", None, "userName", None, "nobody"),
    ], key=lambda r: tuple(str(x) for x in r))
    assert {r[0] for r in conn.execute("select lms_id from sync.drift where reconcile_id = %s and kind = 'duplicate'",
                                       (res.reconcile_id,))} == {gids["org:ORG1"], dup["id"]}
    assert res.held and res.plan_id and "group memberships removed" in res.held_reasons[0]
    assert res.plan_counts == {"remove_members": 2}
    assert conn.execute("select status from sync.plans where plan_id = %s", (res.plan_id,)).fetchone() == ("held",)
    assert {s for (s,) in conn.execute("select status from sync.ops where plan_id = %s", (res.plan_id,))} == {"held"}
    assert conn.execute("select status, plan_id, held_reason is not null from sync.reconcile_runs "
                        "where reconcile_id = %s", (res.reconcile_id,)).fetchone() == ("held", res.plan_id, True)
    assert lms_state(client) == before                      # nothing reached the LMS
    assert client.get_user(stranger["id"]) == stranger
