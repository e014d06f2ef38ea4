"""Plan: diff the desired LMS state (marts.lms_desired_users) against what we applied (sync.applied_users).

Set-based SQL, one transaction. Only changed attributes are sent. A person whose row was quarantined
in this snapshot is left alone (never deactivated because their row was bad), and a rejected
snapshot never gets this far. Rerunning the plan for the same run supersedes the earlier unfinished
plan: the diff already accounts for everything that was applied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import psycopg

from hrlms.sync.scim import USER_ATTRIBUTES

OP_TYPES = ("create_user", "update_user", "deactivate_user", "reactivate_user")


@dataclass
class Plan:
    plan_id: int
    counts: dict[str, int] = field(default_factory=dict)
    attribute_counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _changed_expr() -> str:
    parts = [f"case when d.{c} is distinct from a.{c} then '{c}' end" for c in USER_ATTRIBUTES]
    return f"array_remove(array[{', '.join(parts)}]::text[], null)"


DIFF_SQL = f"""
with desired as (
    select * from marts.lms_desired_users
),
applied as (
    select * from sync.applied_users
),
quarantined as (
    select distinct record_key as person_id from dq.quarantine
    where snapshot_id = %(snapshot_id)s and entity = 'workers' and record_key is not null
),
joined as (
    select
        coalesce(d.person_id, a.person_id) as person_id,
        d.person_id is not null as in_desired,
        a.person_id is not null as in_applied,
        coalesce(d.is_active, false) as want_active,
        coalesce(a.is_active, false) as has_active,
        {_changed_expr()} as changed,
        to_jsonb(d) - 'access_from_on' - 'access_until_on' as desired_row
    from desired d
    full join applied a on a.person_id = d.person_id
),
ops as (
    select person_id,
        case
            when not in_applied and in_desired and want_active then 'create_user'
            when in_applied and has_active and in_desired and not want_active then 'deactivate_user'
            when in_applied and has_active and not in_desired
                 and person_id not in (select person_id from quarantined) then 'deactivate_user'
            when in_applied and not has_active and want_active then 'reactivate_user'
            when in_applied and has_active and want_active and cardinality(changed) > 0 then 'update_user'
        end as op_type,
        changed, desired_row
    from joined
)
select person_id, op_type,
    case when op_type in ('update_user', 'reactivate_user') then changed
         when op_type = 'deactivate_user' then array[]::text[]
         else array[{', '.join(f"'{c}'" for c in USER_ATTRIBUTES)}]::text[] end as changed_fields,
    coalesce(desired_row, jsonb_build_object('person_id', person_id, 'is_active', false)) as payload
from ops where op_type is not null
"""


def make_plan(conn: psycopg.Connection, *, logical_date: date, snapshot_id: int) -> Plan:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.plan'))")
        plan_id = conn.execute(
            "insert into sync.plans (logical_date, snapshot_id) values (%s, %s) returning plan_id",
            (logical_date, snapshot_id)).fetchone()[0]
        conn.execute(
            f"""insert into sync.ops (plan_id, person_id, op_type, changed_fields, payload, verify_first)
                select %(plan_id)s, diff.person_id, diff.op_type, diff.changed_fields, diff.payload,
                       exists (select 1 from sync.ops prior where prior.person_id = diff.person_id
                               and prior.status in ('sending', 'escrow'))
                from ({DIFF_SQL}) diff
                order by diff.op_type, diff.person_id""",
            {"plan_id": plan_id, "snapshot_id": snapshot_id})
        # Earlier unfinished plans are replaced by this one: the diff already holds their remaining work,
        # and ops whose outcome is unknown ('sending' when an apply crashed) are verified first (above).
        conn.execute("update sync.ops set status = 'superseded' "
                     "where plan_id <> %s and status in ('pending', 'escrow', 'sending')", (plan_id,))
        conn.execute("update sync.plans set status = 'superseded' "
                     "where plan_id <> %s and status in ('planned', 'partial')", (plan_id,))
        plan = Plan(plan_id)
        for op_type, n in conn.execute(
                "select op_type, count(*) from sync.ops where plan_id = %s group by op_type", (plan_id,)):
            plan.counts[op_type] = n
        for attr, n in conn.execute(
                """select f, count(*) from sync.ops, unnest(changed_fields) f
                   where plan_id = %s and op_type in ('update_user', 'reactivate_user') group by f""",
                (plan_id,)):
            plan.attribute_counts[attr] = n
        conn.execute("update sync.plans set counts = %s where plan_id = %s",
                     (psycopg.types.json.Jsonb({"ops": plan.counts, "attributes": plan.attribute_counts}), plan_id))
    return plan
