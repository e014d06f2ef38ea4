"""The deactivation breaker, plan review and approval.

A plan that would deactivate or remove (from groups) too many people is *held*: its ops get status
'held', nothing reaches the LMS, the run ends failed with the reason and alerts. A person reviews the
plan (the run report, ``python -m hrlms.sync show-plan <id>``, ``sync.plans.review``) and approves
exactly that plan by triggering the DAG with ``{"approve_plan": <id>}`` — the approved plan's ops are
applied, not a recomputed diff — or rejects it with ``{"reject_plan": <id>}``. A newer plan supersedes a
held one (the newer plan is evaluated again); approving a superseded or rejected plan is refused.

Thresholds (env): a plan is held when deactivations exceed HRLMS_BREAKER_MAX_COUNT (default 500), or
exceed both HRLMS_BREAKER_MIN_COUNT (default 10: a handful of leavers in a small company is normal) and
HRLMS_BREAKER_MAX_SHARE (default 0.05) of the active accounts we hold; the same for memberships removed
(share of the memberships we hold); the same, per user attribute, for values blanked, and for values
changed (share HRLMS_BREAKER_MAX_CHANGE_SHARE, default HRLMS_BREAKER_MAX_SHARE); and whenever
the gate flagged the snapshot as shrunk beyond HRLMS_MAX_DROP_SHARE (a truncated export must not
deactivate anyone without a person saying so).

Blanking: an export that empties a column in every row (all job titles, all departments) plans one
update_user per person that wipes that attribute in the LMS — no deactivation at all. So, per
mapped attribute (hrlms.sync.outbound), the breaker counts the update_user ops that would set a value we hold as
non-empty (sync.applied_users.attrs) to empty (null or blank), and compares it with the active accounts that
hold a non-empty value for that attribute (the people who can lose it: an attribute only some people
have is measured against them, not against everybody). The manager counts too: set_manager ops that
remove a manager we set because HR names none (payload hr_manager_person_id null); a manager removed
because the manager left or holds no account is not counted — that follows from a deactivation, which
is measured above. Reactivations are not counted (their accounts are inactive, outside the base).

Mass changes: an export whose columns are swapped or mis-mapped (job title <-> job code in every row)
blanks nothing and deactivates nobody, yet rewrites an attribute of every account. So, per mapped
attribute, the breaker also counts the update_user ops that would replace a non-empty value we
hold (sync.applied_users, active accounts) by a *different non-empty* value (values compared with
surrounding blanks trimmed; a change of letter case counts — the LMS is rewritten either way).
Replacing by an empty value is a blanking (above), never counted twice; creates and reactivations are
not changes (no active account holds the old value). The base is the same as for blanking: the active
accounts holding a non-empty value for the attribute. The manager counts too: set_manager ops that
replace a manager we set by a different manager — except when the manager we set is leaving in this
plan (a deactivate_user op) or no longer holds an active account: their reports moving to a successor
follows from that departure, which the deactivation count already measures (the same reasoning as for
managers removed because the manager left). Changed attributes are limited by a share only:
more than HRLMS_BREAKER_MIN_COUNT and more than HRLMS_BREAKER_MAX_CHANGE_SHARE (default:
HRLMS_BREAKER_MAX_SHARE) of the accounts holding a value. HRLMS_BREAKER_MAX_COUNT (500) is not applied
to changes: at a million workers the ordinary daily transfers change ~1,000 departments, which is no
mass rewrite; HRLMS_BREAKER_MAX_CHANGE_COUNT (default 0 = none) adds an absolute limit for those who
want one. A separate share so that an organisation whose reorganisations routinely touch more people
than the share it tolerates for deactivations can allow that without loosening the deactivation limit. For
each attribute that trips, the review (``breaker.changed``) carries the counts (changed, base) and up
to SAMPLES_PER_OP_TYPE samples (person, old value, new value), shown by the run report and show-plan;
a legitimate rebrand or re-titling is applied by approving the held plan once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hrlms.settings import env_float
from hrlms.sync.outbound import valid_name

SAMPLES_PER_OP_TYPE = 5


class PlanHeld(RuntimeError):
    """The plan tripped the breaker: nothing was written; a person must approve or reject it."""

    def __init__(self, plan_id: int, reasons: list[str]):
        self.plan_id, self.reasons = plan_id, reasons
        super().__init__(f"plan {plan_id} is held by the breaker: {'; '.join(reasons)}. Nothing was sent to the "
                         f"LMS. Review it (run report, `python -m hrlms.sync show-plan {plan_id}`) and trigger the "
                         f'DAG with {{"approve_plan": {plan_id}}} to apply exactly this plan, or '
                         f'{{"reject_plan": {plan_id}}}.')


class PlanDecisionError(ValueError):
    """An approval/rejection that cannot be honoured (unknown, superseded, already decided plan)."""


@dataclass(frozen=True)
class Thresholds:
    max_share: float = 0.05
    max_count: int = 500
    min_count: int = 10
    max_change_share: float | None = None     # values changed; None = max_share
    max_change_count: int = 0                 # values changed, absolute; 0 = no absolute limit

    @classmethod
    def from_env(cls) -> Thresholds:
        share = env_float("HRLMS_BREAKER_MAX_SHARE", 0.05)
        return cls(share, int(env_float("HRLMS_BREAKER_MAX_COUNT", 500)),
                   int(env_float("HRLMS_BREAKER_MIN_COUNT", 10)),
                   env_float("HRLMS_BREAKER_MAX_CHANGE_SHARE", share),
                   int(env_float("HRLMS_BREAKER_MAX_CHANGE_COUNT", 0)))

    @property
    def change_share(self) -> float:
        return self.max_share if self.max_change_share is None else self.max_change_share

    def trips(self, count: int, base: int) -> bool:
        return count > self.max_count or (count > self.min_count and count > self.max_share * max(base, 0))

    def change_trips(self, count: int, base: int) -> bool:
        """Values changed: a share of the accounts holding one (no absolute limit unless
        max_change_count is set)."""
        return (0 < self.max_change_count < count) or (
            count > self.min_count and count > self.change_share * max(base, 0))

    def change_limit(self) -> str:
        return f"limit {self.change_share:.0%}" + (f" or {self.max_change_count}" if self.max_change_count else "")


@dataclass
class Verdict:
    held: bool
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def _filled(expr: str) -> str:
    return f"nullif(btrim({expr}), '') is not null"


def _empty(expr: str) -> str:
    return f"nullif(btrim({expr}), '') is null"


def _held(attr: str) -> str:
    return f"(a.attrs ->> '{valid_name(attr)}')"


def _new(attr: str) -> str:
    return f"(o.payload -> 'attrs' ->> '{valid_name(attr)}')"


def _blanks(attr: str) -> str:
    return (f"count(*) filter (where o.op_type = 'update_user' and '{attr}' = any(o.changed_fields) "
            f"and {_empty(_new(attr))} and {_filled(_held(attr))})")


def _change(attr: str) -> str:
    """update_user ops replacing the non-empty value we hold (a.attrs) by a different non-empty one."""
    value, held = _new(attr), _held(attr)
    return (f"o.op_type = 'update_user' and '{attr}' = any(o.changed_fields) and {_filled(value)} "
            f"and {_filled(held)} and btrim({value}) <> btrim({held})")


# A manager we set replaced by another one, unless the manager we set leaves in this plan or holds no
# active account any more (their reports move because they left: a deactivation, measured as such).
_MANAGER_CHANGE = f"""o.op_type = 'set_manager' and o.payload ->> 'manager_person_id' is not null
    and {_filled('a.manager_person_id')} and o.payload ->> 'manager_person_id' <> a.manager_person_id
    and coalesce(m.is_active, false) and leaving.person_id is null"""


# What _MANAGER_CHANGE reads: the account of the manager we set (m), and that manager's deactivation in
# this plan (leaving). Only set_manager ops need them.
_MANAGER_JOINS = """left join sync.applied_users m on o.op_type = 'set_manager' and m.person_id = a.manager_person_id
    left join sync.ops leaving on o.op_type = 'set_manager' and leaving.plan_id = o.plan_id
        and leaving.op_type = 'deactivate_user' and leaving.person_id = a.manager_person_id"""


# One pass over the plan's update_user / set_manager ops joined to what we hold, two counts per mapped
# attribute (hrlms.sync.outbound): the ops that would turn a non-empty value into an empty one, and into
# a different one.
def _figures_sql(names: tuple[str, ...]) -> str:
    return f"""
    select {''.join(_blanks(c) + ', ' for c in names)}
        count(*) filter (where o.op_type = 'set_manager' and o.payload ->> 'manager_person_id' is null
                         and o.payload ->> 'hr_manager_person_id' is null and {_filled('a.manager_person_id')}),
        {''.join(f"count(*) filter (where {_change(c)}), " for c in names)}
        count(*) filter (where {_MANAGER_CHANGE})
    from sync.ops o
    join sync.applied_users a on a.person_id = o.person_id
    {_MANAGER_JOINS}
    where o.plan_id = %s and o.op_type in ('update_user', 'set_manager') and a.is_active
"""


# The active accounts, and per attribute those holding a non-empty value (the base of the share): one pass.
# `names` may include 'manager' (the manager we set).
def _filled_sql(names: tuple[str, ...]) -> str:
    held = {n: "a.manager_person_id" if n == "manager" else _held(n) for n in names}
    return f"""
    select count(*){''.join(f", count(*) filter (where {_filled(held[c])})" for c in names)}
    from sync.applied_users a where a.is_active
"""


def attribute_figures(conn: psycopg.Connection, plan_id: int, names: tuple[str, ...]
                      ) -> tuple[dict[str, int], dict[str, int], dict[str, int], int]:
    """Per mapped attribute: (values the plan would blank, values it would change to another non-empty
    value, active accounts holding a value), and the active accounts. The manager is keyed 'manager'."""
    counts = conn.execute(_figures_sql(names), (plan_id,)).fetchone()
    keys = (*names, "manager")
    n = len(keys)
    blanks, changes = dict(zip(keys, counts[:n])), dict(zip(keys, counts[n:]))
    # the base only for the attributes the plan blanks or changes (the manager too): a count of 0 trips no
    # limit whatever its base, and only counts above 0 are shown with theirs
    touched = tuple(k for k in keys if blanks[k] or changes[k])
    active, *filled_counts = conn.execute(_filled_sql(touched)).fetchone()
    filled = dict(zip(touched, filled_counts))
    return blanks, changes, {k: filled.get(k, 0) for k in keys}, active


def change_samples(conn: psycopg.Connection, plan_id: int, attr: str,
                   limit: int = SAMPLES_PER_OP_TYPE) -> list[dict[str, Any]]:
    """The first changes of one attribute (by person id): person, display name, old value, new value.
    For the manager the values are the managers' person ids."""
    if attr == "manager":
        sql = f"""select o.person_id, a.display_name, a.manager_person_id, o.payload ->> 'manager_person_id'
                  from sync.ops o
                  join sync.applied_users a on a.person_id = o.person_id
                  {_MANAGER_JOINS}
                  where o.plan_id = %s and a.is_active and {_MANAGER_CHANGE}
                  order by o.person_id limit %s"""
    else:
        sql = f"""select o.person_id, a.display_name, {_held(attr)}, {_new(attr)}
                  from sync.ops o
                  join sync.applied_users a on a.person_id = o.person_id
                  where o.plan_id = %s and a.is_active and {_change(attr)}
                  order by o.person_id limit %s"""
    return [{"person_id": p, "name": name, "old": old, "new": new}
            for p, name, old, new in conn.execute(sql, (plan_id, limit))]


def describe_changes(breaker_review: dict[str, Any]) -> list[dict[str, Any]]:
    """The review's changed attributes as rows for people (run report, show-plan): attribute, changed,
    base, held, samples ("person (name): 'old' → 'new'; …")."""
    rows = []
    for attr, f in sorted((breaker_review.get("changed") or {}).items()):
        samples = "; ".join(f"{s['person_id']}" + (f" ({s['name']})" if s.get("name") else "")
                            + f": {s['old']!r} → {s['new']!r}" for s in f.get("samples") or [])
        rows.append({"attribute": attr, "changed": f.get("changed"), "base": f.get("base"),
                     "held": "yes" if f.get("held") else "no", "samples": samples})
    return rows


def evaluate(conn: psycopg.Connection, plan_id: int, snapshot_id: int, thresholds: Thresholds | None = None, *,
             names: tuple[str, ...]) -> Verdict:
    """Breaker figures for a plan just inserted (same transaction as make_plan); `names`: the mapped
    attributes (hrlms.sync.outbound)."""
    t = thresholds or Thresholds.from_env()
    deact, removed = conn.execute(
        """select count(*) filter (where op_type = 'deactivate_user'),
                  coalesce(sum(cardinality(members)) filter (where op_type = 'remove_members'), 0)
           from sync.ops where plan_id = %s""", (plan_id,)).fetchone()
    blanks, changes, filled, active = attribute_figures(conn, plan_id, names)
    memberships = conn.execute("select count(*) from sync.applied_memberships").fetchone()[0]
    shrink = conn.execute(
        """select failures from dq.gate_runs
           where snapshot_id = %s and suite = 'snapshot_hold' and not success""", (snapshot_id,)).fetchone()
    figures = {"deactivations": deact, "active_accounts": active, "memberships_removed": int(removed),
               "memberships": memberships, "max_share": t.max_share, "max_count": t.max_count,
               "min_count": t.min_count}
    reasons = []
    if t.trips(deact, active):
        reasons.append(f"{deact} deactivations of {active} active accounts "
                       f"(limit {t.max_share:.0%} or {t.max_count})")
    if t.trips(int(removed), memberships):
        reasons.append(f"{removed} group memberships removed of {memberships} "
                       f"(limit {t.max_share:.0%} or {t.max_count})")
    figures["blanked"] = {a: n for a, n in blanks.items() if n}
    for attr, n in blanks.items():
        if t.trips(n, filled[attr]):
            reasons.append(f"{n} {attr} values blanked of {filled[attr]} active accounts that have one "
                           f"(limit {t.max_share:.0%} or {t.max_count})")
    # per attribute with changes: {"changed": n, "base": accounts holding a value}, + samples when it trips
    figures["max_change_share"] = t.change_share
    if t.max_change_count:
        figures["max_change_count"] = t.max_change_count
    figures["changed"] = {a: {"changed": n, "base": filled[a]} for a, n in changes.items() if n}
    for attr, n in changes.items():
        if t.change_trips(n, filled[attr]):
            reasons.append(f"{n} {attr} values changed of {filled[attr]} active accounts that have one "
                           f"({t.change_limit()})")
            figures["changed"][attr]["held"] = True
            figures["changed"][attr]["samples"] = change_samples(conn, plan_id, attr)
    if shrink:
        detail = shrink[0][0] if isinstance(shrink[0], list) and shrink[0] else shrink[0]
        reasons.append(f"the snapshot shrank beyond the threshold ({detail.get('message', detail) if isinstance(detail, dict) else detail})")
        figures["snapshot_shrank"] = True
    return Verdict(bool(reasons), reasons, figures)


def review(conn: psycopg.Connection, plan_id: int) -> dict[str, Any]:
    """What a person reads before approving: counts per op type and attribute, samples per op type."""
    samples: dict[str, list[dict[str, Any]]] = {}
    # numbered on the narrow columns; the payloads of the samples only are read (not sorted with every op)
    for op_type, key, fields, payload, members in conn.execute(
            """select o.op_type, coalesce(o.person_id, o.group_key), o.changed_fields, o.payload, o.members from (
                   select op_id, op_type, row_number() over (partition by op_type
                                                             order by coalesce(person_id, group_key), op_id) as n
                   from sync.ops where plan_id = %s) f
               join sync.ops o on o.op_id = f.op_id
               where f.n <= %s order by f.op_type, f.n""", (plan_id, SAMPLES_PER_OP_TYPE)):
        row: dict[str, Any] = {"key": key}
        if payload.get("display_name"):
            row["name"] = payload["display_name"]
        if op_type in ("update_user", "reactivate_user"):
            row["changed"] = {f: (payload.get("attrs") or {}).get(f) for f in fields}
        if members:
            row["members"] = len(members)
        samples.setdefault(op_type, []).append(row)
    return {"samples": samples}


def hold(conn: psycopg.Connection, plan_id: int, verdict: Verdict) -> None:
    conn.execute("update sync.ops set status = 'held' where plan_id = %s and status = 'pending'", (plan_id,))
    conn.execute("update sync.plans set status = 'held', held_reason = %s where plan_id = %s",
                 ("; ".join(verdict.reasons), plan_id))


def decide(conn: psycopg.Connection, plan_id: int, decision: str, decided_by: str, note: str | None = None) -> None:
    """Approve (held ops become pending, to be applied as they are) or reject a held plan."""
    if decision not in ("approved", "rejected"):
        raise ValueError("decision must be 'approved' or 'rejected'")
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.plan'))")
        row = conn.execute("select status from sync.plans where plan_id = %s for update", (plan_id,)).fetchone()
        if row is None:
            raise PlanDecisionError(f"plan {plan_id} does not exist")
        status = row[0]
        if status != "held":
            latest = conn.execute("select max(plan_id) from sync.plans where status = 'held'").fetchone()[0]
            hint = f" (the plan waiting for a decision is {latest})" if latest else ""
            raise PlanDecisionError(f"plan {plan_id} is {status}, not held: it cannot be {decision}{hint}")
        conn.execute("update sync.ops set status = %s where plan_id = %s and status = 'held'",
                     ("pending" if decision == "approved" else "rejected", plan_id))
        conn.execute("update sync.plans set status = %s where plan_id = %s",
                     ("approved" if decision == "approved" else "rejected", plan_id))
        conn.execute("insert into sync.plan_decisions (plan_id, decision, decided_by, note) values (%s, %s, %s, %s)",
                     (plan_id, decision, decided_by, note))


def store_review(conn: psycopg.Connection, plan_id: int, verdict: Verdict) -> None:
    data = review(conn, plan_id) | {"breaker": verdict.figures | {"held": verdict.held, "reasons": verdict.reasons}}
    conn.execute("update sync.plans set review = %s where plan_id = %s", (Jsonb(data), plan_id))
