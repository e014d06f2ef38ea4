"""Apply a plan to the LMS over SCIM, recording every outcome in the warehouse.

Crash safety: ops are claimed ('sending', committed) before any request; outcomes and the applied
state are written together in one transaction per batch. An op left 'sending' by a crash has an
unknown outcome, so the next attempt looks the user up by externalId before creating (and a 409 is
"exists: link it"). Leavers get active=false — never a DELETE.
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

from hrlms.sync.scim import USER_ATTRIBUTES, Conflict, ScimClient, ScimError, patch_body, user_resource

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    op_id: int
    person_id: str
    op_type: str
    status: str                      # applied | escrow | dead_letter
    lms_id: str | None = None
    http_status: int | None = None
    error: str | None = None
    payload: dict = field(default_factory=dict)


@dataclass
class ApplyResult:
    plan_id: int
    applied: Counter = field(default_factory=Counter)
    escrow: int = 0
    dead_letter: int = 0

    @property
    def writes(self) -> int:
        return sum(self.applied.values())


def _execute(client: ScimClient, op: dict[str, Any]) -> Outcome:
    out = Outcome(op["op_id"], op["person_id"], op["op_type"], "applied", payload=op["payload"])
    desired = op["payload"]
    try:
        if op["op_type"] == "create_user":
            out.lms_id = _create(client, desired, verify_first=op["verify_first"])
        else:
            lms_id = op["lms_id"]
            if not lms_id:
                raise ScimError(None, "no LMS id recorded for this person")
            fields = list(op["changed_fields"])
            if op["op_type"] in ("deactivate_user", "reactivate_user"):
                fields.append("is_active")
            client.patch_user(lms_id, patch_body(desired, fields))
            out.lms_id = lms_id
    except ScimError as exc:
        out.status = "escrow" if exc.transient else "dead_letter"
        out.http_status, out.error = exc.status, str(exc)[:1000]
    return out


def _request_for(op: dict[str, Any]) -> dict[str, Any] | None:
    """The /Bulk operation for an op, or None when it needs the single-request path."""
    if op["op_type"] == "create_user":
        if op["verify_first"]:
            return None
        return {"method": "POST", "path": "/Users", "bulkId": str(op["op_id"]), "data": user_resource(op["payload"])}
    if not op["lms_id"]:
        return None
    fields = list(op["changed_fields"])
    if op["op_type"] in ("deactivate_user", "reactivate_user"):
        fields.append("is_active")
    return {"method": "PATCH", "path": f"/Users/{op['lms_id']}", "data": patch_body(op["payload"], fields)}


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


def _execute_bulk(client: ScimClient, ops: list[dict[str, Any]], limits: tuple[int, int]) -> list[Outcome]:
    """Send what can go through /Bulk; conflicts and verify-first creates take the single-request path."""
    outcomes: dict[int, Outcome] = {}
    singles = []
    reqs = []
    for op in ops:
        req = _request_for(op)
        (reqs.append((op, req)) if req else singles.append(op))
    for chunk in _chunks(reqs, *limits):
        try:
            results = client.bulk([req for _op, req in chunk])
        except ScimError as exc:
            for op, _req in chunk:   # outcome unknown: escrow; creates are verified before the retry
                outcomes[op["op_id"]] = Outcome(op["op_id"], op["person_id"], op["op_type"],
                                                "escrow" if exc.transient else "dead_letter",
                                                http_status=exc.status, error=str(exc)[:1000], payload=op["payload"])
            continue
        for (op, _req), (status, res_id, detail) in zip(chunk, results):
            out = Outcome(op["op_id"], op["person_id"], op["op_type"], "applied", payload=op["payload"])
            if 200 <= status < 300:
                out.lms_id = res_id if op["op_type"] == "create_user" else op["lms_id"]
            elif status == 409 and op["op_type"] == "create_user":
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


def _claim(conn: psycopg.Connection, plan_id: int, batch_size: int) -> list[dict[str, Any]]:
    with conn.transaction():
        rows = conn.execute(
            """with claimed as (
                   select op_id from sync.ops where plan_id = %s and status = 'pending'
                   order by op_id for update skip locked limit %s)
               update sync.ops o set status = 'sending', attempts = attempts + 1
               from claimed where o.op_id = claimed.op_id
               returning o.op_id, o.person_id, o.op_type, o.changed_fields, o.payload, o.verify_first""",
            (plan_id, batch_size)).fetchall()
    if not rows:
        return []
    ids = {r[1] for r in rows}
    lms_ids = dict(conn.execute("select person_id, lms_id from sync.applied_users where person_id = any(%s)",
                                (list(ids),)).fetchall())
    return [{"op_id": r[0], "person_id": r[1], "op_type": r[2], "changed_fields": r[3], "payload": r[4],
             "verify_first": r[5], "lms_id": lms_ids.get(r[1])} for r in rows]


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
        full = [o for o in applied if o.op_type != "deactivate_user"]
        if full:
            cur.executemany(_UPSERT, [{"lms_id": o.lms_id, "op_id": o.op_id, "payload": Jsonb(o.payload)}
                                      for o in full])
        deact = [o for o in applied if o.op_type == "deactivate_user"]
        if deact:
            cur.executemany("update sync.applied_users set is_active = false, last_op_id = %s, "
                            "applied_at = clock_timestamp() where person_id = %s",
                            [(o.op_id, o.person_id) for o in deact])


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
