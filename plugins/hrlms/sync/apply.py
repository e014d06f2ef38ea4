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
An id that is still missing (its create failed: escrow/dead letter) puts the op in escrow with the
reason; the next plan's diff brings the remaining work back. Membership PATCHes are idempotent on the
server (adding a present member / removing an absent one is a 204), so a retry never fails on them.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hrlms.sync.plan import USER_OP_TYPES
from hrlms.sync.scim import (
    USER_ATTRIBUTES,
    Conflict,
    ScimClient,
    ScimError,
    add_members_body,
    group_rename_body,
    group_resource,
    manager_patch_body,
    patch_body,
    remove_members_body,
    user_resource,
)

log = logging.getLogger(__name__)


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
    sent: bool = True                # False: nothing was sent (unresolved ids / nothing left to do)


@dataclass
class ApplyResult:
    plan_id: int
    applied: Counter = field(default_factory=Counter)
    escrow: int = 0
    dead_letter: int = 0

    @property
    def writes(self) -> int:
        return sum(self.applied.values())


def _outcome(op: dict[str, Any], status: str = "applied", **kw) -> Outcome:
    return Outcome(op["op_id"], op["person_id"], op["op_type"], status, payload=op["payload"],
                   group_key=op.get("group_key"), **kw)


def _prepare(op: dict[str, Any], users: dict[str, str], groups: dict[str, str]) -> None:
    """Resolve LMS ids and build the op's request: op["request"] (a /Bulk-style operation, or None for
    the single-request path / nothing to send), op["target"] (LMS id written to sync.ops.lms_id),
    op["sent_members"] and op["unresolved"] (why part or all of the op cannot be sent yet)."""
    t, payload = op["op_type"], op["payload"]
    op.update(request=None, target=None, sent_members=[], unresolved=None)
    if t == "create_user":
        if not op["verify_first"]:
            op["request"] = {"method": "POST", "path": "/Users", "bulkId": str(op["op_id"]),
                             "data": user_resource(payload)}
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
        if t == "set_manager":
            manager = payload.get("manager_person_id")
            manager_lms_id = users.get(manager) if manager else None
            if manager and not manager_lms_id:
                op["unresolved"] = f"manager {manager} has no LMS account yet (its create did not apply)"
                return
            data = manager_patch_body(manager_lms_id)
        else:
            fields = list(op["changed_fields"])
            if t in ("deactivate_user", "reactivate_user"):
                fields.append("is_active")
            data = patch_body(payload, fields)
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
            op["request"] = {"method": "PATCH", "path": f"/Groups/{group_id}",
                             "data": add_members_body([users[p] for p in resolved])}
        return
    if t == "remove_members":
        # Someone without an LMS id cannot be a member in the LMS: their applied row just goes.
        op["sent_members"] = members
        ids = [users[p] for p in members if users.get(p)]
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


def _execute(client: ScimClient, op: dict[str, Any]) -> Outcome:
    out = _outcome(op)
    try:
        if op["op_type"] == "create_user":
            out.lms_id = _create(client, op["payload"], verify_first=op["verify_first"])
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
        out.status = "escrow" if exc.transient else "dead_letter"
        out.http_status, out.error = exc.status, str(exc)[:1000]
        out.members = []
    return out


def _chunks(reqs: list[tuple[dict, dict]], max_ops: int, max_bytes: int):
    chunk, size = [], 200
    for op, req in reqs:
        n = len(json.dumps(req)) + 2
        if chunk and (len(chunk) >= max_ops or size + n > max_bytes * 0.9):
            yield chunk
            chunk, size = [], 200
        chunk.append((op, req))
        size += n
    if chunk:
        yield chunk


_CREATES = ("create_user", "create_group")


def _execute_bulk(client: ScimClient, ops: list[dict[str, Any]], limits: tuple[int, int]) -> list[Outcome]:
    """Send what can go through /Bulk; conflicts and verify-first creates take the single-request path."""
    outcomes: dict[int, Outcome] = {}
    singles = []
    reqs = []
    for op in ops:
        if op["request"]:
            reqs.append((op, op["request"]))
        elif op["op_type"] in _CREATES:
            singles.append(op)
        else:
            outcomes[op["op_id"]] = _settle(op, _outcome(op, lms_id=op["target"], sent=False))
    for chunk in _chunks(reqs, *limits):
        try:
            results = client.bulk([req for _op, req in chunk])
        except ScimError as exc:
            for op, _req in chunk:   # outcome unknown: escrow; creates are verified before the retry
                outcomes[op["op_id"]] = _outcome(op, "escrow" if exc.transient else "dead_letter",
                                                 http_status=exc.status, error=str(exc)[:1000])
            continue
        for (op, _req), (status, res_id, detail) in zip(chunk, results):
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
            outcomes[op["op_id"]] = out
    for op in singles:
        outcomes[op["op_id"]] = _execute(client, op)
    return [outcomes[op["op_id"]] for op in ops]


def _create(client: ScimClient, desired: dict[str, Any], *, verify_first: bool) -> str:
    if verify_first:
        found = client.find_user(external_id=desired["person_id"])
        if found:
            return _link(client, found, desired)
    try:
        return client.create_user(user_resource(desired))["id"]
    except Conflict:
        found = client.find_user(external_id=desired["person_id"])
        if found:
            return _link(client, found, desired)
        other = client.find_user(user_name=desired["user_name"])
        owner = (other or {}).get("externalId")
        raise ScimError(409, f"userName '{desired['user_name']}' is already used by another LMS account"
                             f" (externalId {owner!r}); needs a person") from None


def _link(client: ScimClient, found: dict[str, Any], desired: dict[str, Any]) -> str:
    """An account for this person exists (earlier attempt succeeded): bring it to the desired state."""
    client.patch_user(found["id"], patch_body(desired, [*USER_ATTRIBUTES, "is_active"]))
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


def _claim(conn: psycopg.Connection, plan_id: int, batch_size: int) -> list[dict[str, Any]]:
    """Claim up to batch_size pending ops: phase 1 first; phase 2 only once no phase-1 op of the plan
    is pending or sending (a batch never mixes phases)."""
    with conn.transaction():
        rows = conn.execute(
            """with claimed as (
                   select op_id from sync.ops where plan_id = %(p)s and status = 'pending'
                     and (phase = 1 or not exists (
                          select 1 from sync.ops first where first.plan_id = %(p)s and first.phase = 1
                          and first.status in ('pending', 'sending')))
                   order by phase, op_id for update skip locked limit %(n)s)
               update sync.ops o set status = 'sending', attempts = attempts + 1
               from claimed where o.op_id = claimed.op_id
               returning o.op_id, o.person_id, o.op_type, o.changed_fields, o.payload, o.verify_first,
                         o.group_key, o.members, o.phase""",
            {"p": plan_id, "n": batch_size}).fetchall()
    if not rows:
        return []
    ops = [{"op_id": r[0], "person_id": r[1], "op_type": r[2], "changed_fields": r[3], "payload": r[4],
            "verify_first": r[5], "group_key": r[6], "members": r[7], "phase": r[8]}
           for r in sorted(rows, key=lambda r: r[0])]
    people = {op["person_id"] for op in ops if op["person_id"]}
    for op in ops:
        people.update(op["members"] or [])
        if op["op_type"] == "set_manager" and op["payload"].get("manager_person_id"):
            people.add(op["payload"]["manager_person_id"])
    users = dict(conn.execute("select person_id, lms_id from sync.applied_users where person_id = any(%s)",
                              (list(people),)).fetchall()) if people else {}
    keys = [op["group_key"] for op in ops if op["group_key"]]
    groups = dict(conn.execute("select group_key, lms_id from sync.applied_groups where group_key = any(%s)",
                               (keys,)).fetchall()) if keys else {}
    for op in ops:
        op["lms_id"] = users.get(op["person_id"]) if op["person_id"] else None
        _prepare(op, users, groups)
    return ops


_UPSERT = f"""
insert into sync.applied_users (person_id, lms_id, {', '.join(USER_ATTRIBUTES)}, is_active, last_op_id, applied_at)
select p.person_id, %(lms_id)s, {', '.join('p.' + c for c in USER_ATTRIBUTES)}, p.is_active, %(op_id)s, clock_timestamp()
from jsonb_populate_record(null::sync.applied_users, %(payload)s) p
on conflict (person_id) do update set
    lms_id = excluded.lms_id, {', '.join(f'{c} = excluded.{c}' for c in USER_ATTRIBUTES)},
    is_active = excluded.is_active, last_op_id = excluded.last_op_id, applied_at = excluded.applied_at
"""


def _record(conn: psycopg.Connection, outcomes: list[Outcome]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """update sync.ops set status = %(status)s, http_status = %(http_status)s, last_error = %(error)s,
                   lms_id = %(lms_id)s, applied_at = case when %(status)s = 'applied' then clock_timestamp() end
               where op_id = %(op_id)s""",
            [o.__dict__ for o in outcomes])
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
        managers = [o for o in applied if o.op_type == "set_manager"]
        if managers:
            cur.executemany("update sync.applied_users set manager_person_id = %s, last_op_id = %s, "
                            "applied_at = clock_timestamp() where person_id = %s",
                            [(o.payload.get("manager_person_id"), o.op_id, o.person_id) for o in managers])
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


def apply_plan(conn: psycopg.Connection, plan_id: int, client: ScimClient, *, batch_size: int = 500,
               concurrency: int = 4, use_bulk: bool = True, progress=None) -> ApplyResult:
    """Apply the plan's pending ops in batches: /Bulk when the LMS advertises it, else `concurrency`
    single requests at a time."""
    result = ApplyResult(plan_id)
    limits = client.bulk_limits() if use_bulk else None
    # A crashed earlier attempt of this plan left ops 'sending': their outcome is unknown.
    with conn.transaction():
        conn.execute("update sync.ops set status = 'pending', verify_first = true "
                     "where plan_id = %s and status = 'sending'", (plan_id,))
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="scim") as pool:
        while batch := _claim(conn, plan_id, batch_size):
            if limits:
                outcomes = _execute_bulk(client, batch, limits)
            else:
                outcomes = list(pool.map(lambda op: _execute(client, op), batch))
            _record(conn, outcomes)
            for o in outcomes:
                if o.status == "applied":
                    if o.sent:
                        result.applied[o.op_type] += 1
                elif o.status == "escrow":
                    result.escrow += 1
                else:
                    result.dead_letter += 1
            if progress:
                progress(len(outcomes))
    with conn.transaction():
        conn.execute(
            """update sync.plans set finished_at = clock_timestamp(),
                   status = case when exists (select 1 from sync.ops where plan_id = %(p)s and status <> 'applied')
                                 then 'partial' else 'applied' end
               where plan_id = %(p)s""", {"p": plan_id})
    return result
