"""Member removal (remove_members ops, hrlms.sync.scim.ScimClient.remove_members) against a real Postgres
and a real scim2-server: read + one replace guarded by If-Match per group when the LMS supports ETags,
412 -> read again; the filtered removes with HRLMS_SCIM_MEMBER_REMOVAL=filter or an LMS without ETags.
The ops' outcomes and records are the same either way."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import scim2_server

from hrlms.devenv.scim import LocalScimServer
from hrlms.sync import plan as plan_module
from hrlms.sync.apply import _claim, apply_plan, guarded_removal_min_members
from hrlms.sync.plan import make_plan
from hrlms.sync.scim import LmsConfig, ScimClient, add_members_body

from .helpers import desired_state_db, lms_user, person, pid, set_desired

D = date(2026, 1, 5)
GROUPS = {"org:ORG1": "Finance", "org:ORG2": "Legal"}
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def conn(fresh_db):
    with desired_state_db(fresh_db) as c:
        yield c


@pytest.fixture(autouse=True)
def guard_every_group(monkeypatch):
    """These groups are small: read + guarded replace for all of them (the default leaves groups under 100
    members to filtered removes inside /Bulk: test_small_groups_get_filtered_removes_in_bulk)."""
    monkeypatch.setenv("HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS", "0")


@dataclass
class Sent:
    method: str
    path: str
    body: Any
    if_match: str | None
    params: dict | None
    status: int = 0


def record(client: ScimClient) -> list[Sent]:
    """Every request the client sends (still sent), with its answer's status."""
    log: list[Sent] = []
    send = client.session.request

    def request(method, url, **kw):
        entry = Sent(method, url.removeprefix(client.config.base_url), kw.get("json"),
                     (kw.get("headers") or {}).get("If-Match"), kw.get("params"))
        log.append(entry)
        resp = send(method, url, **kw)
        entry.status = resp.status_code
        return resp

    client.session.request = request
    return log


def member_patches(log: list[Sent]) -> list[tuple[str, dict, str | None]]:
    """(group path, PATCH op, If-Match) of every members op sent, singly or inside /Bulk."""
    out = []
    for s in log:
        if s.method == "PATCH" and s.path.startswith("/Groups/"):
            out += [(s.path, op, s.if_match) for op in s.body["Operations"]]
        elif s.path == "/Bulk":
            out += [(o["path"], op, o.get("version")) for o in s.body["Operations"] if o["method"] == "PATCH"
                    and o["path"].startswith("/Groups/") for op in o["data"]["Operations"]]
    return [p for p in out if p[1].get("path", "").startswith("members")]


def gid(conn, key: str) -> str:
    return conn.execute("select lms_id from sync.applied_groups where group_key = %s", (key,)).fetchone()[0]


def lms_members(client: ScimClient, conn, key: str) -> list[str]:
    """externalIds of the LMS group's members (the raw value when it is no account)."""
    by_lms = {u["id"]: u.get("externalId") for u in client.iter_users()}
    return sorted(by_lms.get(m["value"], m["value"]) for m in client.get_group(gid(conn, key)).get("members") or [])


def applied_memberships(conn) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g, p in conn.execute("select group_key, person_id from sync.applied_memberships order by 1, 2"):
        out.setdefault(g, []).append(p)
    return out


def stranger(client: ScimClient, n: int = 1) -> str:
    """An LMS account that is not one of ours (the plan never touches it)."""
    return client.create_user(lms_user({"person_id": f"X{n}", "user_name": f"stranger{n}"}))["id"]


def provision(conn, client, members: dict[str, list[int]], people: int = 12) -> None:
    set_desired(conn, [person(i) for i in range(1, people + 1)], GROUPS, members)
    res = apply_plan(conn, make_plan(conn, logical_date=D, snapshot_id=1).plan_id, client)
    assert res.escrow == res.dead_letter == 0


def day2(conn, members: dict[str, list[int]], people: int = 12):
    set_desired(conn, [person(i) for i in range(1, people + 1)], GROUPS, members)
    return make_plan(conn, logical_date=D, snapshot_id=2)


def statuses(conn, plan_id: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t, s in conn.execute("select op_type, status from sync.ops where plan_id = %s order by op_id", (plan_id,)):
        out.setdefault(t, []).append(s)
    return out


@pytest.mark.parametrize("use_bulk", [True, False], ids=["bulk", "singles"])
def test_removals_are_one_guarded_replace_per_group_others_untouched(conn, client, monkeypatch, use_bulk):
    monkeypatch.setattr(plan_module, "MEMBER_CHUNK", 3)     # several remove ops on one group in one batch
    provision(conn, client, {"org:ORG1": list(range(1, 11)), "org:ORG2": [1, 2, 3, 4]})
    # Out of band: an account that is not ours joins ORG1, with a type and a display name.
    other = stranger(client)
    client.patch(f"/Groups/{gid(conn, 'org:ORG1')}", {"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": other, "type": "User", "display": "Stranger"}]}]})

    p = day2(conn, {"org:ORG1": [8, 9, 10, 11], "org:ORG2": [1, 2]})
    assert p.counts == {"remove_members": 4, "add_members": 1}     # ORG1: [1-3], [4-6], [7]; ORG2: [3, 4]
    assert client.etag_supported() and client.guarded_member_removal()
    log = record(client)
    res = apply_plan(conn, p.plan_id, client, use_bulk=use_bulk)
    assert res.escrow == res.dead_letter == 0
    assert dict(res.applied) == {"remove_members": 4, "add_members": 1}
    assert statuses(conn, p.plan_id) == {"remove_members": ["applied"] * 4, "add_members": ["applied"]}

    g1, g2 = gid(conn, "org:ORG1"), gid(conn, "org:ORG2")
    # One read and one guarded replace per group, whatever the number of its ops; no filtered remove, and the
    # add to ORG1 is in ORG1's replace (the group is written once): nothing goes through /Bulk.
    reads = [s.path for s in log if s.method == "GET" and s.path.startswith("/Groups/")]
    assert sorted(reads) == sorted([f"/Groups/{g1}", f"/Groups/{g2}"])
    assert all(s.params == {"attributes": "members"} for s in log if s.method == "GET" and s.path in reads)
    patches = member_patches(log)
    assert sorted((path, op["op"]) for path, op, _v in patches) == sorted(
        [(f"/Groups/{g1}", "replace"), (f"/Groups/{g2}", "replace")])
    replaces = [s for s in log if s.method == "PATCH" and s.body["Operations"][0]["op"] == "replace"]
    assert len(replaces) == 2 and all(s.if_match and s.if_match.startswith('W/"') and s.status == 204
                                      for s in replaces)
    assert not [s for s in log if s.path == "/Bulk"]

    assert lms_members(client, conn, "org:ORG1") == [pid(8), pid(9), pid(10), pid(11), "X1"]
    assert lms_members(client, conn, "org:ORG2") == [pid(1), pid(2)]
    kept = {m["value"]: m for m in client.get_group(g1)["members"]}
    assert {k: v for k, v in kept[other].items() if k != "$ref"} == {"value": other, "type": "User",
                                                                      "display": "Stranger"}
    assert applied_memberships(conn) == {"org:ORG1": [pid(8), pid(9), pid(10), pid(11)],
                                         "org:ORG2": [pid(1), pid(2)]}
    assert make_plan(conn, logical_date=D, snapshot_id=2).counts == {}


@pytest.mark.parametrize("use_bulk", [True, False], ids=["bulk", "singles"])
def test_a_groups_adds_and_removals_meet_in_one_batch_and_one_write(conn, client, use_bulk):
    """Ordered by type (ORG2's and ORG1's removals, then ORG1's add), batches of two would read and write ORG1
    twice (a replace, then an add). The plan orders them group by group, the most changes first: ORG1's ops meet
    in one batch and go as one read + guarded replace that also adds."""
    provision(conn, client, {"org:ORG1": [1, 2, 3, 4], "org:ORG2": [5, 6, 7]})
    p = day2(conn, {"org:ORG1": [1, 2, 8], "org:ORG2": [5, 6]})
    assert p.counts == {"remove_members": 2, "add_members": 1}
    g1, g2 = gid(conn, "org:ORG1"), gid(conn, "org:ORG2")
    planned = conn.execute("select group_key, op_type from sync.ops where plan_id = %s order by op_id",
                           (p.plan_id,)).fetchall()
    assert planned == [("org:ORG1", "remove_members"), ("org:ORG1", "add_members"), ("org:ORG2", "remove_members")]
    log = record(client)
    res = apply_plan(conn, p.plan_id, client, batch_size=2, use_bulk=use_bulk)
    assert res.escrow == res.dead_letter == 0 and dict(res.applied) == {"remove_members": 2, "add_members": 1}
    assert sorted((path, op["op"]) for path, op, _v in member_patches(log)) == sorted(
        [(f"/Groups/{g1}", "replace"), (f"/Groups/{g2}", "replace")])
    assert [s.path for s in log if s.method == "GET"].count(f"/Groups/{g1}") == 1
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2), pid(8)]
    assert lms_members(client, conn, "org:ORG2") == [pid(5), pid(6)]
    assert applied_memberships(conn) == {"org:ORG1": [pid(1), pid(2), pid(8)], "org:ORG2": [pid(5), pid(6)]}
    assert make_plan(conn, logical_date=D, snapshot_id=2).counts == {}


def test_concurrent_change_412_reads_again_and_keeps_their_member(conn, client, fresh_lms):
    provision(conn, client, {"org:ORG1": [1, 2, 3, 4]})
    theirs = stranger(client)
    p = day2(conn, {"org:ORG1": [1, 2]})
    g1 = gid(conn, "org:ORG1")
    # Another client adds a member to the group between our read and our replace (once).
    with ScimClient(LmsConfig(*fresh_lms)) as other:
        read = client.group_members
        changed = []

        def read_then_someone_writes(group_id):
            got = read(group_id)
            if not changed:
                other.patch(f"/Groups/{group_id}", add_members_body([theirs]))
                changed.append(group_id)
            return got

        client.group_members = read_then_someone_writes
        log = record(client)
        res = apply_plan(conn, p.plan_id, client)
    assert changed == [g1]
    assert res.escrow == res.dead_letter == 0 and dict(res.applied) == {"remove_members": 1}
    writes = [(s.if_match, s.status) for s in log if s.method == "PATCH"]
    assert len(writes) == 2 and writes[0][1] == 412 and writes[1][1] == 204 and writes[0][0] != writes[1][0]
    assert len([s for s in log if s.method == "GET" and s.path == f"/Groups/{g1}"]) == 2
    assert client.stats.snapshot()["retries_by_reason"] == {"412": 1}
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2), "X1"]     # ours removed, theirs kept
    assert applied_memberships(conn) == {"org:ORG1": [pid(1), pid(2)]}


def test_a_group_that_keeps_changing_escrows_after_the_last_read(conn, fresh_lms):
    with ScimClient(LmsConfig(*fresh_lms, max_attempts=2, backoff_base=0.01)) as client, \
            ScimClient(LmsConfig(*fresh_lms)) as other:
        provision(conn, client, {"org:ORG1": [1, 2, 3]})
        p = day2(conn, {"org:ORG1": [1]})
        read = client.group_members
        strangers = iter(range(1, 10))

        def read_then_someone_writes(group_id):
            got = read(group_id)
            other.patch(f"/Groups/{group_id}", add_members_body([stranger(other, next(strangers))]))
            return got

        client.group_members = read_then_someone_writes
        res = apply_plan(conn, p.plan_id, client)
        assert res.escrow == 1 and res.dead_letter == 0 and res.writes == 0
        status, http, error = conn.execute("select status, http_status, last_error from sync.ops "
                                           "where plan_id = %s", (p.plan_id,)).fetchone()
        assert (status, http) == ("escrow", 412) and "changed" in error
        assert client.stats.snapshot()["gave_up"] == {"412": 1}
        client.group_members = read
        # Nothing of ours changed; the next plan brings the removal back and it applies.
        assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2), pid(3), "X1", "X2"]
        assert applied_memberships(conn) == {"org:ORG1": [pid(1), pid(2), pid(3)]}
        p2 = make_plan(conn, logical_date=D, snapshot_id=2)
        assert p2.counts == {"remove_members": 1}
        conn.execute("update sync.ops set next_attempt_at = null where plan_id = %s", (p.plan_id,))
        assert apply_plan(conn, p2.plan_id, client).escrow == 0
        assert lms_members(client, conn, "org:ORG1") == [pid(1), "X1", "X2"]


def test_rerun_after_a_crash_converges_without_a_write(conn, client):
    provision(conn, client, {"org:ORG1": [1, 2, 3, 4]})
    p = day2(conn, {"org:ORG1": [1, 2]})
    # An apply claims the op, the LMS applies the removal, and the task dies before recording it.
    (op,) = _claim(conn, p.plan_id, batch_size=10)
    assert client.remove_members(op["target"], op["remove_ids"]) is True
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2)]
    replan = make_plan(conn, logical_date=D, snapshot_id=2)
    assert replan.counts == {"remove_members": 1}
    log = record(client)
    res = apply_plan(conn, replan.plan_id, client)
    # The read finds none of them left: nothing written, the op is applied with its members as before.
    assert [s.method for s in log if s.path.startswith("/Groups/")] == ["GET"]
    assert res.escrow == res.dead_letter == 0 and dict(res.applied) == {"remove_members": 1}
    assert applied_memberships(conn) == {"org:ORG1": [pid(1), pid(2)]}
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(2)]
    assert make_plan(conn, logical_date=D, snapshot_id=2).counts == {}


def _filter_form_applies(conn, client, log) -> None:
    provision(conn, client, {"org:ORG1": [1, 2, 3, 4], "org:ORG2": [3]})
    p = day2(conn, {"org:ORG1": [1, 4], "org:ORG2": [3]})
    log[:] = []
    res = apply_plan(conn, p.plan_id, client)
    assert res.escrow == res.dead_letter == 0 and dict(res.applied) == {"remove_members": 1}
    ids = dict(conn.execute("select person_id, lms_id from sync.applied_users").fetchall())
    assert member_patches(log) == [
        (f"/Groups/{gid(conn, 'org:ORG1')}", {"op": "remove", "path": f'members[value eq "{ids[pid(i)]}"]'}, None)
        for i in (2, 3)]
    assert not [s for s in log if s.if_match or s.params == {"attributes": "members"}]
    assert lms_members(client, conn, "org:ORG1") == [pid(1), pid(4)]
    assert applied_memberships(conn) == {"org:ORG1": [pid(1), pid(4)], "org:ORG2": [pid(3)]}


def test_setting_filter_sends_the_filtered_removes(conn, fresh_lms, monkeypatch):
    monkeypatch.setenv("HRLMS_SCIM_MEMBER_REMOVAL", "filter")
    with ScimClient(LmsConfig(*fresh_lms)) as client:
        assert client.member_removal == "filter" and not client.guarded_member_removal()
        _filter_form_applies(conn, client, record(client))


def test_an_lms_without_etags_gets_the_filtered_removes(conn, tmp_path: Path):
    config = json.loads((Path(scim2_server.__file__).parent / "resources"
                         / "default-service-provider-config.json").read_text())   # scim2-server's default…
    config["etag"] = {"supported": False}                                          # …without ETags
    with LocalScimServer(tmp_path / "lms", service_provider_config=config) as server, \
            ScimClient(LmsConfig(server.base_url, server.token)) as client:
        assert client.member_removal == "auto" and not client.etag_supported()
        _filter_form_applies(conn, client, record(client))


def test_unknown_setting_is_refused(monkeypatch):
    monkeypatch.setenv("HRLMS_SCIM_MEMBER_REMOVAL", "replace")
    with pytest.raises(ValueError, match="HRLMS_SCIM_MEMBER_REMOVAL"):
        ScimClient(LmsConfig("http://127.0.0.1:9", "t"))


def test_small_groups_get_filtered_removes_in_bulk(conn, client, monkeypatch):
    """Under HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS recorded members a group's removals are filtered removes
    sent inside /Bulk (no read); from it on, read + guarded replace. Same outcomes and records."""
    monkeypatch.setenv("HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS", "6")
    provision(conn, client, {"org:ORG1": list(range(1, 11)), "org:ORG2": [1, 2, 3, 4]})
    p = day2(conn, {"org:ORG1": [8, 9, 10], "org:ORG2": [1, 2]})
    log = record(client)
    res = apply_plan(conn, p.plan_id, client, use_bulk=True)
    assert res.escrow == res.dead_letter == 0
    assert statuses(conn, p.plan_id) == {"remove_members": ["applied"] * 2}
    g1, g2 = gid(conn, "org:ORG1"), gid(conn, "org:ORG2")
    # ORG1 (10 recorded members): one read and one guarded replace; ORG2 (4): two filtered removes in /Bulk
    assert [s.path for s in log if s.method == "GET" and s.path.startswith("/Groups/")] == [f"/Groups/{g1}"]
    patches = member_patches(log)
    assert sorted((path, op["op"]) for path, op, _v in patches) == sorted(
        [(f"/Groups/{g1}", "replace"), (f"/Groups/{g2}", "remove"), (f"/Groups/{g2}", "remove")])
    bulk = [o for s in log if s.path == "/Bulk" for o in s.body["Operations"]]
    assert [o["path"] for o in bulk] == [f"/Groups/{g2}"]
    assert lms_members(client, conn, "org:ORG1") == [pid(8), pid(9), pid(10)]
    assert lms_members(client, conn, "org:ORG2") == [pid(1), pid(2)]
    assert applied_memberships(conn) == {"org:ORG1": [pid(8), pid(9), pid(10)], "org:ORG2": [pid(1), pid(2)]}
    assert make_plan(conn, logical_date=D, snapshot_id=2).counts == {}
    monkeypatch.setenv("HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS", "-1")
    with pytest.raises(ValueError, match="HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS"):
        guarded_removal_min_members()
