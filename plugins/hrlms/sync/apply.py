"""Apply a plan to the LMS over SCIM, recording every outcome in the warehouse.

Crash safety: ops are claimed ('sending', committed) before any request; outcomes and the applied
state are written together in one transaction per batch. An op left 'sending' by a crash has an
unknown outcome, so the next attempt looks the user up by externalId before creating (and a 409 is
"exists: link it"); the same holds for groups (create_group looks the group up by externalId =
group_key first — scim2-server accepts duplicate groups without a 409, so this lookup is the guard).
Leavers get active=false — never a DELETE.

Two phases: phase-2 ops (set_manager, add_members, remove_members) are claimed only once no phase-1
op of the plan is pending or sending, and resolve LMS ids (users, managers, groups) from
sync.applied_* at claim time — so users and groups created earlier in the same plan are found.
The manager inside the create: a create_user carries the manager of the person's set_manager op in
the plan (enterprise manager.value) when that manager's LMS id is known just before the batch is sent —
recorded in sync.applied_users (an earlier batch, any shard) or created by this shard's previous batch
(its outcome is known before the next batch goes out, even if not recorded yet). The create's record
sets applied_users.manager_person_id to the manager it carried (null if none) and adds 'manager' to
its changed_fields. A set_manager whose person already has that manager as applied sends no request:
it is 'applied' with payload.sent = false (not counted in ApplyResult.applied). The same for an
update_user / reactivate_user of a person whose set_manager op sets a manager with a known LMS id: the
update's PATCH sets the manager too (one request instead of two; ~1,300 of a 1M-worker day's plan).
A create linked after a verify-first lookup sets (or removes) the manager in its link PATCH, so the
record stays true even if an earlier attempt had set another one.
An id that is still missing (its create failed: escrow/dead letter) puts the op in escrow with the
reason; the next plan's diff brings the remaining work back. Membership PATCHes are idempotent on the
server (adding a present member / removing an absent one is a 204), so a retry never fails on them.
Member removals on an LMS with ETags from a group of HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS or more
(default 100; smaller groups get filtered removes inside /Bulk) are a read of the group + one replace of
its members guarded by If-Match (ScimClient.remove_members; HRLMS_SCIM_MEMBER_REMOVAL=filter keeps the
filtered removes): sent as single requests after the batch's /Bulk requests, one per group and batch
(the removals of all the batch's ops on that group together, and its member adds: one write per group;
the plan orders phase 2 group by group so that they meet), see _remove_members. Their outcomes and records
are those of the filtered removes (or of the adds): every op whose members were resolved is applied with
its members, also when the read showed none of them left in the group (nothing written then).

Transport failures (the SCIM client has already retried what is safe to retry, see hrlms.sync.scim):
- permanent (4xx other than 409-linked and 429) → dead_letter with the LMS's message;
- transient (429/5xx/timeout/broken connection after the last attempt, or an unknown outcome) →
  escrow. The next plan re-plans the work (plan.py supersedes the escrowed op and the diff brings it
  back, verify_first for creates), **with growing intervals**: an op that goes to escrow because of a
  transport failure gets `escrow_attempts` = 1 + the escrow_attempts of the latest earlier escrow of
  the same person/group in an earlier plan (0 when an op of that person/group was applied since), and
  `next_attempt_at` = now + min(HRLMS_ESCROW_MAX_SECONDS, HRLMS_ESCROW_BASE_SECONDS × 2^(n-1)), and no
  earlier than the LMS's Retry-After. At the start of apply, every pending op of the plan whose
  person/group has such an escrow with next_attempt_at still in the future is **deferred**: it stays
  'pending' with that next_attempt_at, is not claimed, does not hold back phase 2, and is counted in
  ApplyResult.deferred; the plan ends 'partial' and the next plan (or a rerun of this apply after that
  moment) takes it. An escrow that only waits for a dependency (a member or manager without an LMS
  account yet — nothing failed on the wire) gets no backoff.
  A create whose person/group had an earlier create attempt (any plan) is always verified by
  externalId first, even when plan.py did not flag it (e.g. that attempt's op was deferred in between).
- **stop on mass failure**: once at least HRLMS_MIN_FAILURE_SAMPLE (default 20) ops were attempted in
  this apply and more than HRLMS_MAX_FAILURE_SHARE (default 0.4) of them failed (escrow after a
  transport failure + dead_letter), apply stops claiming, hands ops it had claimed but not yet sent
  back to 'pending', records everything that happened, marks the plan 'partial' and raises
  ApplyHalted with the counts.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hrlms.settings import env_float
from hrlms.sync.outbound import patch_body, user_resource
from hrlms.sync.plan import USER_OP_TYPES
from hrlms.sync.scim import (
    ACCOUNT_COLUMNS,
    Conflict,
    ScimClient,
    ScimError,
    add_members_body,
    group_rename_body,
    group_resource,
    manager_patch_body,
    remove_members_body,
)

log = logging.getLogger(__name__)
#: user ops whose PATCH also sets the manager of the person's set_manager op in the plan, when known
MANAGER_CARRYING_UPDATES = ("update_user", "reactivate_user")


@dataclass
class Outcome:
    op_id: int
    person_id: str | None
    op_type: str
    status: str                      # applied | escrow | dead_letter
    lms_id: str | None = None        # the user's (user ops, set_manager) or the group's (group ops) LMS id
    http_status: int | None = None
    error: str | None = None
    payload: dict = field(default_factory=dict)
    group_key: str | None = None
    members: list[str] = field(default_factory=list)   # membership ops: the people whose membership changed
    sent: bool = True                # False: nothing was sent (unresolved ids / nothing left to do / released)
    failed: bool = False             # the request failed (transport/LMS error): counts for the failure share
    retry_after: float | None = None  # the LMS's Retry-After on that failure, if any
    sent_manager: str | None = None  # create/update: the manager (person id) its request set in the LMS, if any


@dataclass
class ApplyResult:
    plan_id: int
    applied: Counter = field(default_factory=Counter)
    escrow: int = 0
    dead_letter: int = 0
    deferred: int = 0                # pending ops left for later: their person/group is in escrow backoff
    attempted: int = 0               # ops for which a request was attempted
    failed: int = 0                  # of which failed (escrow after a transport failure + dead_letter)

    @property
    def writes(self) -> int:
        return sum(self.applied.values())


class ApplyHalted(RuntimeError):
    """Too many of this apply's attempted ops failed: apply stopped claiming. What was applied is
    recorded; the ops not attempted are still 'pending' (the next run re-plans them)."""

    def __init__(self, result: ApplyResult, *, pending: int, share: float, min_sample: int):
        self.result, self.pending, self.share, self.min_sample = result, pending, share, min_sample
        super().__init__(
            f"apply of plan {result.plan_id} halted: {result.failed} of {result.attempted} attempted ops failed "
            f"(escrow {result.escrow}, dead letters {result.dead_letter}; limit {share:.0%} once "
            f"{min_sample} were attempted); applied {result.writes}, left pending {pending}")


class _FailureGuard:
    """Thread-safe failure share of one apply: trips once `min_sample` ops were attempted and more than
    `share` of them failed. Ops not yet started when it trips are released (back to pending)."""

    def __init__(self, share: float, min_sample: int):
        self.share, self.min_sample = share, min_sample
        self.attempted = self.failed = 0
        self.tripped = False
        self._lock = threading.Lock()

    def add(self, out: Outcome) -> None:
        if out.status == "pending" or not (out.sent or out.failed):
            return
        with self._lock:
            self.attempted += 1
            self.failed += out.failed or out.status == "dead_letter"
            if (self.share < 1 and self.attempted >= self.min_sample
                    and self.failed > self.share * self.attempted):
                self.tripped = True


def _released(op: dict[str, Any]) -> Outcome:
    """A claimed op that was never sent (apply halted): back to 'pending'."""
    return _outcome(op, "pending", sent=False)


def _outcome(op: dict[str, Any], status: str = "applied", **kw) -> Outcome:
    return Outcome(op["op_id"], op["person_id"], op["op_type"], status, payload=op["payload"],
                   group_key=op.get("group_key"),
                   sent_manager=op.get("want_manager") if op.get("manager_lms_id") else None, **kw)


def _create_request(op: dict[str, Any]) -> None:
    """The POST of a create_user (none when it is verified first: the single-request path sends it)."""
    op["request"] = None if op["verify_first"] else {
        "method": "POST", "path": "/Users", "bulkId": str(op["op_id"]),
        "data": user_resource(op["payload"], op["outbound"], op.get("manager_lms_id"))}


def _update_request(op: dict[str, Any]) -> None:
    """The PATCH of an update_user / reactivate_user; with op["manager_lms_id"] it sets the manager too."""
    data = patch_body(op["payload"], op["outbound"], list(op["changed_fields"]),
                      active=op["op_type"] == "reactivate_user")
    if op.get("manager_lms_id"):
        data["Operations"] += manager_patch_body(op["manager_lms_id"])["Operations"]
    op["request"] = {"method": "PATCH", "path": f"/Users/{op['target']}", "data": data}


def _attach_managers(ops: list[dict[str, Any]], known: dict[str, str]) -> None:
    """Just before a batch is sent: creates and updates whose manager got an LMS id since the claim
    (created by this shard's previous batch, whose outcome is known but maybe not recorded yet) carry
    that manager."""
    for op in ops:
        want = op.get("want_manager")
        if not (want and not op.get("manager_lms_id") and known.get(want)):
            continue
        if op["op_type"] == "create_user":
            op["manager_lms_id"] = known[want]
            _create_request(op)
        elif op["op_type"] in MANAGER_CARRYING_UPDATES and op.get("request"):
            op["manager_lms_id"] = known[want]
            _update_request(op)


def _prepare(op: dict[str, Any], users: dict[str, str], groups: dict[str, str],
             managers: dict[str, str | None] | None = None) -> None:
    """Resolve LMS ids and build the op's request: op["request"] (a /Bulk-style operation, or None for
    the single-request path / nothing to send), op["target"] (LMS id written to sync.ops.lms_id),
    op["sent_members"] and op["unresolved"] (why part or all of the op cannot be sent yet).
    A create_user (and an update_user / reactivate_user) carries its manager when the manager's LMS id is
    known (op["want_manager"], the manager of this person's set_manager op in the plan; `managers`: person
    -> manager as applied)."""
    t, payload = op["op_type"], op["payload"]
    op.update(request=None, target=None, sent_members=[], unresolved=None)
    if t == "create_user":
        want = op.get("want_manager")
        op["manager_lms_id"] = users.get(want) if want else None
        _create_request(op)
        return
    if t == "create_group":
        if not op["verify_first"]:
            op["request"] = {"method": "POST", "path": "/Groups", "bulkId": str(op["op_id"]),
                             "data": group_resource(op["group_key"], payload.get("display_name"))}
        return
    if t in USER_OP_TYPES or t == "set_manager":
        lms_id = users.get(op["person_id"])
        if not lms_id:
            op["unresolved"] = "no LMS id recorded for this person"
            return
        op["target"] = lms_id
        if t in MANAGER_CARRYING_UPDATES:
            want = op.get("want_manager")
            op["manager_lms_id"] = users.get(want) if want else None
            _update_request(op)
            return
        if t == "set_manager":
            manager = payload.get("manager_person_id")
            manager_lms_id = users.get(manager) if manager else None
            if manager and not manager_lms_id:
                op["unresolved"] = f"manager {manager} has no LMS account yet (its create did not apply)"
                return
            if managers is not None and op["person_id"] in managers and managers[op["person_id"]] == manager:
                return   # already set (by the person's create in this plan): nothing to send
            data = manager_patch_body(manager_lms_id)
        else:
            data = patch_body(payload, op["outbound"], list(op["changed_fields"]),
                              active=t in ("deactivate_user", "reactivate_user"))
        op["request"] = {"method": "PATCH", "path": f"/Users/{lms_id}", "data": data}
        return
    group_id = groups.get(op["group_key"])
    if not group_id:
        op["unresolved"] = f"group {op['group_key']} has no LMS id yet (its create_group did not apply)"
        return
    op["target"] = group_id
    if t == "update_group":
        op["request"] = {"method": "PATCH", "path": f"/Groups/{group_id}",
                         "data": group_rename_body(payload["display_name"])}
        return
    members = list(op["members"] or [])
    if t == "add_members":
        resolved = [p for p in members if users.get(p)]
        missing = [p for p in members if not users.get(p)]
        if missing:
            op["unresolved"] = (f"{len(missing)} member(s) have no LMS account yet: "
                                f"{', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}")
        if resolved:
            op["sent_members"] = resolved
            op["add_ids"] = [users[p] for p in resolved]
            op["request"] = {"method": "PATCH", "path": f"/Groups/{group_id}", "data": add_members_body(op["add_ids"])}
        return
    if t == "remove_members":
        # Someone without an LMS id cannot be a member in the LMS: their applied row just goes.
        op["sent_members"] = members
        ids = [users[p] for p in members if users.get(p)]
        op["remove_ids"] = ids
        if ids:
            op["request"] = {"method": "PATCH", "path": f"/Groups/{group_id}", "data": remove_members_body(ids)}
        return
    raise ValueError(f"unknown op type {t!r}")


def _settle(op: dict[str, Any], out: Outcome) -> Outcome:
    """After the request (if any) succeeded: partial/unresolved ops go to escrow with their reason."""
    out.members = list(op["sent_members"])
    if op["unresolved"]:
        out.status, out.error = "escrow", op["unresolved"][:1000]
    return out


def _failed(out: Outcome, exc: ScimError) -> Outcome:
    out.status = "escrow" if exc.transient else "dead_letter"
    out.http_status, out.error = exc.status, str(exc)[:1000]
    out.members, out.failed, out.retry_after = [], True, exc.retry_after
    return out


def _guarded(op: dict[str, Any]) -> bool:
    """A member removal with something to send from a group of at least
    HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS recorded members: read + guarded replace when the client does
    those. A smaller group's removals are filtered removes inside /Bulk (op["large_group"], _claim)."""
    return op["op_type"] == "remove_members" and bool(op["request"]) and op.get("large_group", True)


def guarded_removal_min_members() -> int:
    """HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS (default 100): the groups whose members are removed by read +
    guarded replace (ScimClient.remove_members) have at least this many members as recorded
    (sync.applied_memberships); smaller ones get filtered removes sent inside /Bulk with the batch's other
    PATCHes. A filtered remove costs scim2-server ~45 µs per member of the group, while read + replace is
    two single requests per group: at 1M workers a day removes one member from each of ~1,900 groups of
    4-15 members, 3,900 single requests against ~1,900 operations in /Bulk. 0: always read + replace."""
    value = env_float("HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS", 100)
    if value < 0 or value != int(value):
        raise ValueError(f"HRLMS_SCIM_GUARDED_REMOVAL_MIN_MEMBERS must be a whole number >= 0, not {value!r}")
    return int(value)


def _with_removals(ops: list[dict[str, Any]], client: ScimClient) -> list[dict[str, Any]]:
    """The ops of a batch that go as read + guarded replace (_remove_members): the guarded removals (_guarded)
    and the member adds of the groups they are on, when the client does guarded replaces. A group the batch
    both adds to and removes from is read and written once: the LMS may read and write a group whole on each
    write (scim2-server: ~1 s per write of a 1M-member group, the requirement groups everyone is in gain and
    lose members every day)."""
    if not (any(_guarded(op) for op in ops) and client.guarded_member_removal()):
        return []
    groups = {op["target"] for op in ops if _guarded(op)}
    return [op for op in ops if _guarded(op) or (op["op_type"] == "add_members" and op["request"]
                                                 and op["target"] in groups)]


def _remove_members(client: ScimClient, ops: list[dict[str, Any]], guard: _FailureGuard | None,
                    pool: ThreadPoolExecutor | None) -> dict[int, Outcome]:
    """Member removals as read + replace guarded by the group's version (ScimClient.remove_members), as
    single requests, one read + replace per group for all of `ops` on it (`pool` threads at a time); the
    batch's member adds on those groups (_with_removals) are in the same replace.

    Why not inside /Bulk: two ops on one group in one /Bulk request would carry the same version, and the
    second would always fail with 412 (so would a replace after an add_members on that group in the same
    request); the read must come right before the write anyway, and a 412 is retried by reading that one
    group again rather than re-sending part of a /Bulk. Sent after the batch's /Bulk requests, the read
    sees them; one job per group means the batch's own requests never
    race for a group's version (another shard or client may: 412, read again). A replace never has to
    fit in the /Bulk maxPayloadSize either. Each op's outcome is the one its filtered remove (or its add)
    would have had: applied with its members, or the request's failure (escrow / dead letter)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for op in ops:
        by_group.setdefault(op["target"], []).append(op)

    def run(group_ops: list[dict[str, Any]]) -> list[Outcome]:
        if guard and guard.tripped:
            return [_released(op) for op in group_ops]
        group_id = group_ops[0]["target"]
        ids = list(dict.fromkeys(i for op in group_ops for i in op.get("remove_ids") or []))
        added = list(dict.fromkeys(i for op in group_ops for i in op.get("add_ids") or []))
        try:
            client.remove_members(group_id, ids, add=added)
            outs = [_settle(op, _outcome(op, lms_id=group_id)) for op in group_ops]
        except ScimError as exc:
            outs = [_failed(_outcome(op, lms_id=group_id), exc) for op in group_ops]
        if guard:
            for out in outs:
                guard.add(out)
        return outs

    jobs = list(by_group.values())
    done = pool.map(run, jobs) if pool else map(run, jobs)
    return {out.op_id: out for outs in done for out in outs}


def _execute(client: ScimClient, op: dict[str, Any]) -> Outcome:
    out = _outcome(op)
    try:
        if op["op_type"] == "create_user":
            out.lms_id = _create(client, op["payload"], op["outbound"], verify_first=op["verify_first"],
                                 manager_lms_id=op.get("manager_lms_id"))
            return out
        if op["op_type"] == "create_group":
            out.lms_id = _create_group(client, op["group_key"], op["payload"], verify_first=op["verify_first"])
            return out
        out.lms_id = op["target"]
        req = op["request"]
        if req:
            client.patch(req["path"], req["data"])
        else:
            out.sent = False
        return _settle(op, out)
    except ScimError as exc:
        _failed(out, exc)
    return out


def _max_members(max_members: int | None) -> int:
    return int(env_float("HRLMS_BULK_MAX_MEMBERS", 2000)) if max_members is None else max_members


def _group_patches(reqs: list[tuple[dict, dict]], max_members: int | None = None
                   ) -> list[tuple[list[dict], dict]]:
    """The batch's requests as (ops, request): the membership PATCHes of one group (add_members, filtered
    remove_members) as one PATCH, their Operations in op order, up to `max_members` changes in it. An LMS
    may read and write a group whole on each PATCH (on scim2-server, the batches holding the PATCHes of
    the requirement groups everyone is in took seconds each at 1M workers), and the plan cuts a group's
    changes into ops of 500 members: such a group gains a day's hires in two or more ops. One outcome for
    the ops of a request, as for the request."""
    max_members = _max_members(max_members)
    units: list[tuple[list[dict], dict]] = []
    open_by_path: dict[str, int] = {}
    for op, req in reqs:
        merge = op["op_type"] in ("add_members", "remove_members") and req.get("method") == "PATCH"
        at = open_by_path.get(req["path"]) if merge else None
        if at is not None:
            ops, merged = units[at]
            if sum(len(o.get("members") or []) for o in ops) + len(op.get("members") or []) <= max_members:
                units[at] = ([*ops, op], {**merged, "data": {
                    **merged["data"], "Operations": _joined(merged["data"]["Operations"], req["data"]["Operations"])}})
                continue
        if merge:
            open_by_path[req["path"]] = len(units)
        units.append(([op], req))
    return units


def _joined(first: list[dict], then: list[dict]) -> list[dict]:
    """PATCH Operations one after the other; two adds of members in a row as one add of both lists."""
    if (first and then and first[-1].get("op") == then[0].get("op") == "add"
            and first[-1].get("path") == then[0].get("path") == "members"):
        return [*first[:-1], {**first[-1], "value": [*first[-1]["value"], *then[0]["value"]]}, *then[1:]]
    return [*first, *then]


def _chunks(reqs: list[tuple[list[dict], dict]], max_ops: int, max_bytes: int, max_members: int | None = None):
    """/Bulk requests within the LMS's maxOperations and maxPayloadSize, and carrying at most
    `max_members` membership changes (HRLMS_BULK_MAX_MEMBERS, default 2000): a request of 36 PATCHes
    of 500 members each took scim2-server longer than the 30 s read timeout, so it was re-sent and
    escrowed instead of applied. `reqs`: (the ops a request carries, the request)."""
    max_members = _max_members(max_members)
    chunk, size, members = [], 200, 0
    for ops, req in reqs:
        n = len(json.dumps(req)) + 2
        m = sum(len(op.get("members") or []) for op in ops)
        if chunk and (len(chunk) >= max_ops or size + n > max_bytes * 0.9 or members + m > max_members):
            yield chunk
            chunk, size, members = [], 200, 0
        chunk.append((ops, req))
        size += n
        members += m
    if chunk:
        yield chunk


_CREATES = ("create_user", "create_group")


def _execute_bulk(client: ScimClient, ops: list[dict[str, Any]], limits: tuple[int, int],
                  guard: _FailureGuard | None = None, pool: ThreadPoolExecutor | None = None) -> list[Outcome]:
    """Send what can go through /Bulk; conflicts and verify-first creates take the single-request path
    (`pool` threads at a time when given). Once `guard` trips, what is not sent yet is released."""
    outcomes: dict[int, Outcome] = {}
    singles = []
    reqs = []
    removals = _with_removals(ops, client)
    replaced = {op["op_id"] for op in removals}
    for op in ops:
        if op["op_id"] in replaced:
            continue
        if op["request"]:
            reqs.append((op, op["request"]))
        elif op["op_type"] in _CREATES:
            singles.append(op)
        else:
            outcomes[op["op_id"]] = _settle(op, _outcome(op, lms_id=op["target"], sent=False))
    for chunk in _chunks(_group_patches(reqs), *limits):
        if guard and guard.tripped:
            for ops_, _req in chunk:
                for op in ops_:
                    outcomes[op["op_id"]] = _released(op)
            continue
        try:
            results = client.bulk([req for _ops, req in chunk])
        except ScimError as exc:
            for ops_, _req in chunk:   # outcome unknown: escrow; creates are verified before the retry
                for op in ops_:
                    outcomes[op["op_id"]] = out = _outcome(op, "escrow" if exc.transient else "dead_letter",
                                                           http_status=exc.status, error=str(exc)[:1000],
                                                           failed=True, retry_after=exc.retry_after)
                    if guard:
                        guard.add(out)
            continue
        for op, (status, res_id, detail) in ((op, r) for (ops_, _req), r in zip(chunk, results) for op in ops_):
            out = _outcome(op)
            if 200 <= status < 300:
                out.lms_id = res_id if op["op_type"] in _CREATES else op["target"]
                out = _settle(op, out)
            elif status == 409 and op["op_type"] in _CREATES:
                singles.append({**op, "verify_first": True})
                continue
            else:
                out.status = "escrow" if status in (0, 429) or status >= 500 else "dead_letter"
                out.http_status, out.error = status or None, f"SCIM {status}: {detail}"[:1000]
                out.failed = True
            outcomes[op["op_id"]] = out
            if guard:
                guard.add(out)
    if removals:    # after the /Bulk requests: see _remove_members
        outcomes.update(_remove_members(client, removals, guard, pool))
    if singles:
        guard = guard or _FailureGuard(1.0, 1)
        done = (_execute_singles(pool, client, singles, guard) if pool
                else [_released(op) if guard.tripped else _run_one(client, op, guard) for op in singles])
        for op, out in zip(singles, done):
            outcomes[op["op_id"]] = out
    return [outcomes[op["op_id"]] for op in ops]


def _run_one(client: ScimClient, op: dict[str, Any], guard: _FailureGuard) -> Outcome:
    out = _execute(client, op)
    guard.add(out)
    return out


def _execute_singles(pool: ThreadPoolExecutor, client: ScimClient, ops: list[dict[str, Any]],
                     guard: _FailureGuard) -> list[Outcome]:
    """One request (or a few: lookups) per op, `pool` threads at a time; released once `guard` trips.
    Guarded member removals go last, one read + replace per group (see _remove_members)."""
    removals = _with_removals(ops, client)
    replaced = {op["op_id"] for op in removals}
    others = [op for op in ops if op["op_id"] not in replaced]
    outcomes = {op["op_id"]: out for op, out in zip(others, pool.map(
        lambda op: _released(op) if guard.tripped else _run_one(client, op, guard), others))}
    if removals:
        outcomes.update(_remove_members(client, removals, guard, pool))
    return [outcomes[op["op_id"]] for op in ops]


def _create(client: ScimClient, desired: dict[str, Any], outbound: dict[str, Any], *, verify_first: bool,
            manager_lms_id: str | None = None) -> str:
    if verify_first:
        found = client.find_user(external_id=desired["person_id"])
        if found:
            return _link(client, found, desired, outbound, manager_lms_id)
    try:
        return client.create_user(user_resource(desired, outbound, manager_lms_id))["id"]
    except Conflict:
        found = client.find_user(external_id=desired["person_id"])
        if found:
            return _link(client, found, desired, outbound, manager_lms_id)
        other = client.find_user(user_name=desired["user_name"])
        owner = (other or {}).get("externalId")
        raise ScimError(409, f"userName '{desired['user_name']}' is already used by another LMS account"
                             f" (externalId {owner!r}); needs a person") from None


def _link(client: ScimClient, found: dict[str, Any], desired: dict[str, Any], outbound: dict[str, Any],
          manager_lms_id: str | None = None) -> str:
    """An account for this person exists (earlier attempt succeeded): bring it to the desired state —
    the manager included, as the create would have set it (an earlier attempt may have set another)."""
    body = patch_body(desired, outbound, [a["name"] for a in outbound["attributes"]], active=True)
    body["Operations"] += manager_patch_body(manager_lms_id)["Operations"]
    client.patch_user(found["id"], body)
    return found["id"]


def _create_group(client: ScimClient, group_key: str, desired: dict[str, Any], *, verify_first: bool) -> str:
    """Create the group, or link the one an earlier attempt created (looked up by externalId = group_key)."""
    name = desired.get("display_name") or group_key

    def link(found: dict[str, Any]) -> str:
        if found.get("displayName") != name:
            client.patch(f"/Groups/{found['id']}", group_rename_body(name))
        return found["id"]

    if verify_first:
        found = client.find_group(external_id=group_key)
        if found:
            return link(found)
    try:
        return client.create_group(group_resource(group_key, name))["id"]
    except Conflict:   # an LMS that keeps displayName unique
        found = client.find_group(external_id=group_key)
        if found:
            return link(found)
        raise ScimError(409, f"group displayName {name!r} is already used by another LMS group; "
                             "needs a person") from None


def _claim(conn: psycopg.Connection, plan_id: int, batch_size: int, worker: str = "0") -> list[dict[str, Any]]:
    """Claim up to batch_size pending ops that are not deferred (next_attempt_at in the future): phase 1
    first; phase 2 only once no phase-1 op of the plan is sending or pending-and-due (a batch never mixes
    phases; the plan orders phase 2 group by group, so that a group's ops meet in one batch: _with_removals). A
    create whose person/group had an earlier create attempt is flagged verify_first."""
    with conn.transaction():
        rows = conn.execute(
            """with claimed as (
                   select op_id from sync.ops where plan_id = %(p)s and status = 'pending'
                     and (next_attempt_at is null or next_attempt_at <= clock_timestamp())
                     and (phase = 1 or not exists (
                          select 1 from sync.ops first where first.plan_id = %(p)s and first.phase = 1
                          and (first.status = 'sending' or (first.status = 'pending' and (
                               first.next_attempt_at is null or first.next_attempt_at <= clock_timestamp())))))
                   order by phase, op_id for update skip locked limit %(n)s)
               update sync.ops o set status = 'sending', attempts = o.attempts + 1, claimed_by = %(w)s,
                   verify_first = o.verify_first
                       or (o.op_type = 'create_user' and exists (
                           select 1 from sync.ops prior where prior.person_id = o.person_id
                           and prior.op_type = 'create_user' and prior.op_id < o.op_id and prior.attempts > 0))
                       or (o.op_type = 'create_group' and exists (
                           select 1 from sync.ops prior where prior.group_key = o.group_key
                           and prior.op_type = 'create_group' and prior.op_id < o.op_id and prior.attempts > 0))
               from claimed where o.op_id = claimed.op_id
               returning o.op_id, o.person_id, o.op_type, o.changed_fields, o.payload, o.verify_first,
                         o.group_key, o.members, o.phase""",
            {"p": plan_id, "n": batch_size, "w": worker}).fetchall()
    if not rows:
        return []
    outbound = conn.execute("select outbound from sync.plans where plan_id = %s", (plan_id,)).fetchone()[0]
    if outbound is None:
        raise ValueError(f"plan {plan_id} was made before the LMS mapping (hrlms.sync.outbound): make a new plan")
    ops = [{"op_id": r[0], "person_id": r[1], "op_type": r[2], "changed_fields": r[3], "payload": r[4],
            "verify_first": r[5], "group_key": r[6], "members": r[7], "phase": r[8], "outbound": outbound}
           for r in sorted(rows, key=lambda r: r[0])]
    # The manager a create or an update should carry: the one of the person's set_manager op in this plan
    # (an update carries only a manager to set; a removal stays with the set_manager op).
    carriers = [op["person_id"] for op in ops if op["op_type"] in ("create_user", *MANAGER_CARRYING_UPDATES)]
    wanted = dict(conn.execute(
        """select person_id, payload ->> 'manager_person_id' from sync.ops
           where plan_id = %s and op_type = 'set_manager' and person_id = any(%s)""",
        (plan_id, carriers)).fetchall()) if carriers else {}
    people = {op["person_id"] for op in ops if op["person_id"]}
    for op in ops:
        people.update(op["members"] or [])
        if op["op_type"] == "set_manager" and op["payload"].get("manager_person_id"):
            people.add(op["payload"]["manager_person_id"])
        if op["op_type"] == "create_user" or op["op_type"] in MANAGER_CARRYING_UPDATES:
            op["want_manager"] = wanted.get(op["person_id"])
    people.update(m for m in wanted.values() if m)
    rows = conn.execute("select person_id, lms_id, manager_person_id from sync.applied_users "
                        "where person_id = any(%s)", (list(people),)).fetchall() if people else []
    users = {r[0]: r[1] for r in rows}
    managers = {r[0]: r[2] for r in rows}
    keys = [op["group_key"] for op in ops if op["group_key"]]
    groups = dict(conn.execute("select group_key, lms_id from sync.applied_groups where group_key = any(%s)",
                               (keys,)).fetchall()) if keys else {}
    removing = sorted({op["group_key"] for op in ops if op["op_type"] == "remove_members"})
    if removing:    # which removals are read + guarded replace (_guarded): members recorded, counted up to the floor
        floor = guarded_removal_min_members()
        sizes = dict(conn.execute(
            """select k, (select count(*) from (select 1 from sync.applied_memberships m where m.group_key = k
                                               limit %s) x)
               from unnest(%s::text[]) k""", (floor, removing)).fetchall())
        for op in ops:
            if op["op_type"] == "remove_members":
                op["large_group"] = sizes.get(op["group_key"], 0) >= floor
    for op in ops:
        op["lms_id"] = users.get(op["person_id"]) if op["person_id"] else None
        _prepare(op, users, groups, managers)
    return ops


_UPSERT = f"""
insert into sync.applied_users (person_id, lms_id, {', '.join(ACCOUNT_COLUMNS)}, attrs, is_active, last_op_id,
                                applied_at)
select p.person_id, %(lms_id)s, {', '.join('p.' + c for c in ACCOUNT_COLUMNS)}, coalesce(p.attrs, '{{}}'), p.is_active,
    %(op_id)s, clock_timestamp()
from jsonb_populate_record(null::sync.applied_users, %(payload)s) p
on conflict (person_id) do update set
    lms_id = excluded.lms_id, {', '.join(f'{c} = excluded.{c}' for c in ACCOUNT_COLUMNS)}, attrs = excluded.attrs,
    is_active = excluded.is_active, last_op_id = excluded.last_op_id, applied_at = excluded.applied_at
"""


# Growing intervals: n = 1 + n of the target's latest escrow in an earlier plan (unless one of its ops
# was applied since); next_attempt_at = now + min(cap, base × 2^(n-1)), not before the LMS's Retry-After.
_BACKOFF = """
with n as (
    select o.op_id, 1 + coalesce((
        select prior.escrow_attempts from sync.ops prior
        where prior.{key} = o.{key} and prior.plan_id < o.plan_id and prior.escrow_attempts is not null
          and not exists (select 1 from sync.ops a where a.{key} = o.{key} and a.status = 'applied'
                          and a.op_id > prior.op_id and a.op_id < o.op_id)
        order by prior.op_id desc limit 1), 0) as n
    from sync.ops o where o.op_id = %(op_id)s
)
update sync.ops o set escrow_attempts = n.n,
    next_attempt_at = clock_timestamp() + make_interval(secs => greatest(
        least(%(cap)s::float8, %(base)s::float8 * power(2::float8, n.n - 1)), coalesce(%(retry_after)s::float8, 0)))
from n where o.op_id = n.op_id
"""


def _record(conn: psycopg.Connection, outcomes: list[Outcome], *, backoff: tuple[float, float] = (60.0, 86400.0)
            ) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """update sync.ops set status = %(status)s, http_status = %(http_status)s, last_error = %(error)s,
                   lms_id = %(lms_id)s, applied_at = case when %(status)s = 'applied' then clock_timestamp() end,
                   attempts = attempts - case when %(status)s = 'pending' then 1 else 0 end
               where op_id = %(op_id)s""",
            [o.__dict__ for o in outcomes])
        base, cap = backoff
        for key, escrowed in (("person_id", [o for o in outcomes if o.status == "escrow" and o.failed and o.person_id]),
                              ("group_key", [o for o in outcomes if o.status == "escrow" and o.failed
                                             and not o.person_id and o.group_key])):
            if escrowed:
                cur.executemany(_BACKOFF.format(key=key),
                                [{"op_id": o.op_id, "base": base, "cap": cap, "retry_after": o.retry_after}
                                 for o in escrowed])
        applied = [o for o in outcomes if o.status == "applied"]
        full = [o for o in applied if o.op_type in ("create_user", "update_user", "reactivate_user")]
        if full:
            cur.executemany(_UPSERT, [{"lms_id": o.lms_id, "op_id": o.op_id, "payload": Jsonb(o.payload)}
                                      for o in full])
        deact = [o for o in applied if o.op_type == "deactivate_user"]
        if deact:
            cur.executemany("update sync.applied_users set is_active = false, last_op_id = %s, "
                            "applied_at = clock_timestamp() where person_id = %s",
                            [(o.op_id, o.person_id) for o in deact])
        # the manager a create set (none when it carried none), or an update set
        carried = [o for o in applied if o.op_type == "create_user"
                   or (o.op_type in MANAGER_CARRYING_UPDATES and o.sent_manager)]
        if carried:
            cur.executemany("update sync.applied_users set manager_person_id = %s where person_id = %s",
                            [(o.sent_manager, o.person_id) for o in carried])
            cur.executemany("update sync.ops set changed_fields = array_append(changed_fields, 'manager') "
                            "where op_id = %s and not 'manager' = any(changed_fields)",
                            [(o.op_id,) for o in carried if o.sent_manager])
        managers = [o for o in applied if o.op_type == "set_manager" and o.sent]
        if managers:
            cur.executemany("update sync.applied_users set manager_person_id = %s, last_op_id = %s, "
                            "applied_at = clock_timestamp() where person_id = %s",
                            [(o.payload.get("manager_person_id"), o.op_id, o.person_id) for o in managers])
        unsent = [o for o in applied if o.op_type == "set_manager" and not o.sent]
        if unsent:    # the op log says so: no request was sent for it
            cur.executemany("""update sync.ops set payload = payload || '{"sent": false}'::jsonb where op_id = %s""",
                            [(o.op_id,) for o in unsent])
        groups = [o for o in applied if o.op_type in ("create_group", "update_group")]
        if groups:
            cur.executemany(
                """insert into sync.applied_groups (group_key, lms_id, display_name, last_op_id, applied_at)
                   values (%s, %s, %s, %s, clock_timestamp())
                   on conflict (group_key) do update set lms_id = excluded.lms_id,
                       display_name = excluded.display_name, last_op_id = excluded.last_op_id,
                       applied_at = excluded.applied_at""",
                [(o.group_key, o.lms_id, o.payload.get("display_name") or o.group_key, o.op_id) for o in groups])
        # Membership changes that reached the LMS are recorded even when the op as a whole is in escrow
        # (some members had no LMS account yet): the next plan's diff carries only the rest.
        added = [o for o in outcomes if o.op_type == "add_members" and o.status != "dead_letter" and o.members]
        if added:
            cur.executemany(
                """insert into sync.applied_memberships (group_key, person_id, last_op_id, applied_at)
                   select %(g)s, unnest(%(m)s::text[]), %(op)s, clock_timestamp()
                   on conflict (group_key, person_id) do update set last_op_id = excluded.last_op_id,
                       applied_at = excluded.applied_at""",
                [{"g": o.group_key, "m": o.members, "op": o.op_id} for o in added])
        removed = [o for o in outcomes if o.op_type == "remove_members" and o.status != "dead_letter" and o.members]
        if removed:
            cur.executemany("delete from sync.applied_memberships where group_key = %s and person_id = any(%s)",
                            [(o.group_key, o.members) for o in removed])


# Pending ops of this plan whose person/group has an escrow (earlier plan, transport failure) that is
# still backing off, and no applied op since: they wait until then (next_attempt_at), unclaimed.
_DEFER = """
with pend as (
    select op_id, person_id, group_key from sync.ops where plan_id = %(p)s and status = 'pending'
),
blocked as (
    select p.op_id, e.next_attempt_at from pend p join sync.ops e on e.person_id = p.person_id
    where e.plan_id < %(p)s and e.escrow_attempts is not null and e.next_attempt_at > clock_timestamp()
      and not exists (select 1 from sync.ops a where a.person_id = e.person_id and a.status = 'applied'
                      and a.op_id > e.op_id)
    union all
    select p.op_id, e.next_attempt_at from pend p join sync.ops e on e.group_key = p.group_key
    where p.person_id is null and e.person_id is null
      and e.plan_id < %(p)s and e.escrow_attempts is not null and e.next_attempt_at > clock_timestamp()
      and not exists (select 1 from sync.ops a where a.group_key = e.group_key and a.person_id is null
                      and a.status = 'applied' and a.op_id > e.op_id)
)
update sync.ops o set next_attempt_at = b.until
from (select op_id, max(next_attempt_at) as until from blocked group by op_id) b
where o.op_id = b.op_id and o.next_attempt_at is distinct from b.until
"""


def _defer(conn: psycopg.Connection, plan_id: int) -> None:
    with conn.transaction():
        backing_off = conn.execute(
            "select exists (select 1 from sync.ops where escrow_attempts is not null "
            "and next_attempt_at > clock_timestamp() and plan_id < %s)", (plan_id,)).fetchone()[0]
        if backing_off:
            conn.execute(_DEFER, {"p": plan_id})


def _others_working(conn: psycopg.Connection, plan_id: int) -> bool:
    """Another shard still holds ops of the plan ('sending'), or due ops are left that we could not
    claim (phase 2 waiting for phase-1 ops another shard is sending, or rows locked by its claim)."""
    return conn.execute(
        """select exists (select 1 from sync.ops where plan_id = %(p)s and (status = 'sending' or (
               status = 'pending' and (next_attempt_at is null or next_attempt_at <= clock_timestamp()))))""",
        {"p": plan_id}).fetchone()[0]


def apply_plan(conn: psycopg.Connection, plan_id: int, client: ScimClient, *, batch_size: int = 500,
               concurrency: int = 4, use_bulk: bool = True, progress=None,
               max_failure_share: float | None = None, min_failure_sample: int | None = None,
               shard: tuple[int, int] = (0, 1), wait_seconds: float | None = None) -> ApplyResult:
    """Apply the plan's pending ops in batches: /Bulk when the LMS advertises it, else `concurrency`
    single requests at a time. Raises ApplyHalted on mass failure (see the module doc); settings
    default to HRLMS_MAX_FAILURE_SHARE (0.4), HRLMS_MIN_FAILURE_SAMPLE (20), HRLMS_ESCROW_BASE_SECONDS
    (60) and HRLMS_ESCROW_MAX_SECONDS (86400).

    Scale-out: `shard` = (index, count) of this applier among `count` appliers of the same plan (the
    DAG's mapped apply tasks, possibly on different Celery/Kubernetes workers). They share nothing but
    the warehouse: each claims batches with ``FOR UPDATE SKIP LOCKED``, so no op is sent twice. After
    a crash a shard takes back only the ops it had claimed itself (shard 0 also those of unknown or
    out-of-range claimers). A shard that runs out of claimable work while others still hold phase-1
    ops waits for them (polling, up to `wait_seconds`, default HRLMS_APPLY_WAIT_SECONDS = 900), because
    phase 2 needs their LMS ids; after that it leaves the rest to the others / the next run."""
    share = max_failure_share if max_failure_share is not None else env_float("HRLMS_MAX_FAILURE_SHARE", 0.4)
    sample = int(min_failure_sample if min_failure_sample is not None
                 else env_float("HRLMS_MIN_FAILURE_SAMPLE", 20))
    backoff = (env_float("HRLMS_ESCROW_BASE_SECONDS", 60.0), env_float("HRLMS_ESCROW_MAX_SECONDS", 86400.0))
    guard = _FailureGuard(share, max(1, sample))
    result = ApplyResult(plan_id)
    limits = client.bulk_limits() if use_bulk else None
    index, count = shard
    me = str(index)
    wait = wait_seconds if wait_seconds is not None else env_float("HRLMS_APPLY_WAIT_SECONDS", 900.0)
    # A crashed earlier attempt of this shard left ops 'sending': their outcome is unknown.
    with conn.transaction():
        conn.execute("""update sync.ops set status = 'pending', verify_first = true
                        where plan_id = %(p)s and status = 'sending' and (claimed_by = %(me)s or (%(first)s
                          and (claimed_by is null or claimed_by <> all(%(all)s))))""",
                     {"p": plan_id, "me": me, "first": index == 0, "all": [str(i) for i in range(count)]})
    _defer(conn, plan_id)

    def send(batch: list[dict[str, Any]]) -> list[Outcome]:
        if limits:
            return _execute_bulk(client, batch, limits, guard, pool)
        return _execute_singles(pool, client, batch, guard)

    def record(outcomes: list[Outcome]) -> None:
        _record(conn, outcomes, backoff=backoff)
        done = [o for o in outcomes if o.status != "pending"]
        for o in done:
            if o.status == "applied":
                if o.sent:
                    result.applied[o.op_type] += 1
            elif o.status == "escrow":
                result.escrow += 1
            else:
                result.dead_letter += 1
        if progress and done:
            progress(len(done))

    # Pipelined: while one batch is on the wire (the `sender` thread), the warehouse round trips of its
    # neighbours run here — the next batch is claimed and the previous one recorded — so the LMS does
    # not wait for them. One batch is sent at a time per shard, in claim order, as before.
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="scim") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="scim-send") as sender:
        in_flight = None
        waited_since = None
        while True:
            batch = [] if guard.tripped else _claim(conn, plan_id, batch_size, me)
            if in_flight is not None:
                outcomes = in_flight.result()
                # `batch` was claimed before `outcomes` were recorded: their new accounts can be its managers
                # (older batches were recorded before that claim, so the claim saw them)
                _attach_managers(batch, {o.person_id: o.lms_id for o in outcomes
                                         if o.op_type == "create_user" and o.status == "applied" and o.lms_id})
                # Claimed before the guard could trip on `outcomes`: send() releases it untouched then.
                in_flight = sender.submit(send, batch) if batch else None
                record(outcomes)
                continue     # nothing claimed: claim again now that the sent batch is recorded (phase 2)
            if batch:
                waited_since = None
                in_flight = sender.submit(send, batch)
                continue
            if guard.tripped or count == 1 or not _others_working(conn, plan_id):
                break
            waited_since = waited_since or time.monotonic()
            if time.monotonic() - waited_since > wait:
                log.warning("plan %s shard %s: stopped waiting for the other shards after %.0fs", plan_id, me, wait)
                break
            time.sleep(0.5)
    result.attempted, result.failed = guard.attempted, guard.failed
    with conn.transaction():
        conn.execute(
            """update sync.plans set finished_at = clock_timestamp(),
                   status = case when exists (select 1 from sync.ops where plan_id = %(p)s and status <> 'applied')
                                 then 'partial' else 'applied' end
               where plan_id = %(p)s""", {"p": plan_id})
        pending, deferred = conn.execute(
            "select count(*), count(*) filter (where next_attempt_at > clock_timestamp()) from sync.ops "
            "where plan_id = %s and status = 'pending'", (plan_id,)).fetchone()
    result.deferred = deferred
    if deferred:
        log.info("plan %s: %s op(s) deferred (their person/group is backing off after escrow)", plan_id, deferred)
    if guard.tripped:
        raise ApplyHalted(result, pending=pending, share=share, min_sample=guard.min_sample)
    return result
