"""Plan: diff the desired LMS state (marts.lms_desired_*) against what we applied (sync.applied_*).

Set-based SQL, one transaction. Only changed attributes are sent. A person whose row was quarantined
in this snapshot is left alone (never deactivated because their row was bad, never removed from a
group), and a rejected snapshot never gets this far. Rerunning the plan for the same run supersedes
the earlier unfinished plan: the diff already accounts for everything that was applied.

Two phases. Phase 1: user ops, create_group, update_group. Phase 2 (claimed by apply only once no
phase-1 op of the plan is pending or sending): set_manager, add_members, remove_members — they refer
to LMS ids of users/groups that phase 1 may be creating, so ids are resolved at apply time.
create_user ops are numbered (hence claimed) managers first — by reporting depth in the desired state
(DEPTH_SQL) — so that apply can put the manager into the create when the manager's LMS id is known by
then; that person's set_manager op then sends nothing (see hrlms.sync.apply).

- set_manager: for people active after this plan whose *effective* manager differs from the one we
  set. The effective manager is the HR manager when that person has (or gets in this plan) an active
  LMS account, else none: a manager who is inactive/not provisioned is not set, and a manager who
  leaves is removed from their reports (op with manager_person_id null = PATCH remove). A person who
  is their own manager gets none.
- Groups: one per marts.lms_desired_groups row, externalId = group_key. Members are diffed as a set
  and sent as add/remove chunks of at most MEMBER_CHUNK people — a member list is never replaced.
  Members must be active after this plan; people who leave (deactivation, or gone from HR) leave
  their groups; quarantined people keep their current memberships. A group whose key disappears from
  the desired state loses all its members but is not deleted in the LMS (its applied_groups row stays,
  so it is reused if the key comes back).
- Optional inputs: without marts.lms_desired_groups / lms_desired_group_members no group ops are
  planned; without lms_desired_users.manager_person_id no set_manager ops (checked once per plan).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import psycopg

from hrlms.sync import breaker
from hrlms.sync.scim import USER_ATTRIBUTES

USER_OP_TYPES = ("create_user", "update_user", "deactivate_user", "reactivate_user")
GROUP_OP_TYPES = ("create_group", "update_group")
PHASE2_OP_TYPES = ("set_manager", "add_members", "remove_members")
OP_TYPES = USER_OP_TYPES + GROUP_OP_TYPES + PHASE2_OP_TYPES
MEMBER_CHUNK = 500     # people per add/remove PATCH


@dataclass
class Plan:
    plan_id: int
    counts: dict[str, int] = field(default_factory=dict)
    attribute_counts: dict[str, int] = field(default_factory=dict)
    member_counts: dict[str, int] = field(default_factory=dict)   # people added / removed across groups
    held: bool = False                                            # the breaker tripped (hrlms.sync.breaker)
    held_reasons: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _changed_expr() -> str:
    parts = [f"case when d.{c} is distinct from a.{c} then '{c}' end" for c in USER_ATTRIBUTES]
    return f"array_remove(array[{', '.join(parts)}]::text[], null)"


# People whose row was quarantined in this snapshot, as HR ids and as the LMS accounts they hold
# (identity decisions map a rehired/converted person to an earlier account), and the accounts whose
# employee number or e-mail is on a quarantined line (the line may have lost or garbled its person_id).
_QUARANTINED = """
    select q.record_key as person_id from dq.quarantine q
    where q.snapshot_id = %(snapshot_id)s and q.entity = 'workers' and q.record_key is not null
    union
    select d.account_person_id from dq.quarantine q
    join hrlms_util.identity_accounts() d on d.person_id = q.record_key
    where q.snapshot_id = %(snapshot_id)s and q.entity = 'workers' and d.account_person_id is not null
    union
    select a.person_id from hrlms_util.quarantined_worker_keys(%(snapshot_id)s) k
    join sync.applied_users a on a.employee_number = k.employee_number
    union
    select a.person_id from hrlms_util.quarantined_worker_keys(%(snapshot_id)s) k
    join sync.applied_users a on lower(a.email) = k.work_email
"""

DIFF_SQL = f"""
with desired as (
    select * from marts.lms_desired_users
),
applied as (
    select * from sync.applied_users
),
quarantined as ({_QUARANTINED}),
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
    -- a join, not `person_id not in (select … from quarantined)` inside the CASE: that subplan is
    -- hashed only while the quarantine fits in work_mem, and re-scanned for every account otherwise
    select j.person_id,
        case
            when not in_applied and in_desired and want_active then 'create_user'
            when in_applied and has_active and in_desired and not want_active then 'deactivate_user'
            when in_applied and has_active and not in_desired and qn.person_id is null then 'deactivate_user'
            when in_applied and not has_active and want_active then 'reactivate_user'
            when in_applied and has_active and want_active and cardinality(changed) > 0 then 'update_user'
        end as op_type,
        changed, desired_row
    from joined j
    left join quarantined qn on qn.person_id = j.person_id
)
select person_id, op_type,
    case when op_type in ('update_user', 'reactivate_user') then changed
         when op_type = 'deactivate_user' then array[]::text[]
         else array[{', '.join(f"'{c}'" for c in USER_ATTRIBUTES)}]::text[] end as changed_fields,
    coalesce(desired_row, jsonb_build_object('person_id', person_id, 'is_active', false)) as payload
from ops where op_type is not null
"""


# People who hold an active LMS account once phase 1 of this plan is applied.
_ACTIVE_AFTER = f"""
    select person_id from marts.lms_desired_users where is_active
    union
    select a.person_id from sync.applied_users a
    where a.is_active and a.person_id in ({_QUARANTINED})
      and not exists (select 1 from marts.lms_desired_users d where d.person_id = a.person_id)
"""

MANAGER_SQL = f"""
with active_after as ({_ACTIVE_AFTER}),
wanted as (
    -- a join, not "manager in (select … from active_after)" inside the CASE: that is a SubPlan, which
    -- Postgres hashes only if active_after fits in work_mem; at 1M people it re-scanned active_after
    -- for every worker (the day-1 plan ran for over 13 minutes)
    select d.person_id, d.manager_person_id as hr_manager_person_id,
        case when d.manager_person_id <> d.person_id and manager.person_id is not null
             then d.manager_person_id end as manager_person_id
    from marts.lms_desired_users d
    left join active_after manager on manager.person_id = d.manager_person_id
    where d.is_active
)
select w.person_id, 'set_manager' as op_type, array['manager']::text[] as changed_fields,
    jsonb_build_object('manager_person_id', w.manager_person_id,
                       'hr_manager_person_id', w.hr_manager_person_id) as payload
from wanted w
left join sync.applied_users a on a.person_id = w.person_id
where w.manager_person_id is distinct from a.manager_person_id
"""

# Reporting depth in the desired state: 0 for people without an HR manager among the desired people (or
# who are their own manager), 1 for their reports, … People in a reporting cycle get none (sorted last).
# Only orders the creates (managers first); a person_id listed twice in the mart takes its lowest depth.
DEPTH_SQL = """
with recursive tree (person_id, depth) as (
    select d.person_id, 0 from marts.lms_desired_users d
    where d.manager_person_id is null or d.manager_person_id = d.person_id
       or not exists (select 1 from marts.lms_desired_users m where m.person_id = d.manager_person_id)
    union all
    select d.person_id, t.depth + 1 from tree t
    join marts.lms_desired_users d on d.manager_person_id = t.person_id and d.person_id <> t.person_id
    where t.depth < 64
)
select person_id, min(depth) as depth from tree group by person_id
"""

GROUPS_SQL = """
with desired as (
    select distinct on (group_key) group_key, coalesce(display_name, group_key) as display_name,
        group_kind, org_unit_code
    from marts.lms_desired_groups where group_key is not null
    order by group_key, display_name
)
select d.group_key,
    case when a.group_key is null then 'create_group' else 'update_group' end as op_type,
    array['display_name']::text[] as changed_fields,
    jsonb_build_object('group_key', d.group_key, 'display_name', d.display_name,
                       'group_kind', d.group_kind, 'org_unit_code', d.org_unit_code) as payload
from desired d
left join sync.applied_groups a on a.group_key = d.group_key
where a.group_key is null or a.display_name is distinct from d.display_name
"""

MEMBERS_SQL = f"""
with active_after as ({_ACTIVE_AFTER}),
quarantined as ({_QUARANTINED}),
desired as (
    select distinct m.group_key, m.person_id
    from marts.lms_desired_group_members m
    join marts.lms_desired_groups g on g.group_key = m.group_key
    where m.person_id in (select person_id from active_after)
),
applied as (select group_key, person_id from sync.applied_memberships),
changes as (
    select group_key, person_id, 'add_members' as op_type from (
        select group_key, person_id from desired except select group_key, person_id from applied) x
    union all
    select group_key, person_id, 'remove_members' from (
        select group_key, person_id from applied except select group_key, person_id from desired) y
    where not exists (select 1 from quarantined q where q.person_id = y.person_id)
),
chunked as (
    select *, (row_number() over (partition by group_key, op_type order by person_id) - 1)
              / %(chunk)s as chunk
    from changes
)
select group_key, op_type, array_agg(person_id order by person_id) as members,
    jsonb_build_object('group_key', group_key) as payload
from chunked group by group_key, op_type, chunk
"""


def _optional_inputs(conn: psycopg.Connection) -> tuple[bool, bool]:
    """(manager column present, group marts present) — the marts may predate managers/groups."""
    rows = conn.execute(
        """select table_name, column_name from information_schema.columns
           where table_schema = 'marts'
             and ((table_name = 'lms_desired_users' and column_name = 'manager_person_id')
                  or (table_name = 'lms_desired_groups' and column_name in ('group_key', 'display_name'))
                  or (table_name = 'lms_desired_group_members' and column_name in ('group_key', 'person_id')))"""
    ).fetchall()
    has_manager = ("lms_desired_users", "manager_person_id") in rows
    has_groups = sum(1 for t, _c in rows if t != "lms_desired_users") == 4
    return has_manager, has_groups


def make_plan(conn: psycopg.Connection, *, logical_date: date, snapshot_id: int) -> Plan:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.plan'))")
        plan_id = conn.execute(
            "insert into sync.plans (logical_date, snapshot_id) values (%s, %s) returning plan_id",
            (logical_date, snapshot_id)).fetchone()[0]
        has_manager, has_groups = _optional_inputs(conn)
        # Creates managers first (reporting depth), so a create can carry its manager (hrlms.sync.apply).
        depth_join = f"left join ({DEPTH_SQL}) depth on depth.person_id = diff.person_id" if has_manager else ""
        depth_order = "depth.depth nulls last, " if has_manager else ""
        conn.execute(
            f"""insert into sync.ops (plan_id, person_id, op_type, changed_fields, payload, verify_first)
                select %(plan_id)s, diff.person_id, diff.op_type, diff.changed_fields, diff.payload,
                       exists (select 1 from sync.ops prior where prior.person_id = diff.person_id
                               and prior.status in ('sending', 'escrow'))
                from ({DIFF_SQL}) diff
                {depth_join}
                order by diff.op_type, {depth_order}diff.person_id""",
            {"plan_id": plan_id, "snapshot_id": snapshot_id})
        if has_groups:
            conn.execute(
                f"""insert into sync.ops (plan_id, group_key, op_type, changed_fields, payload, verify_first, phase)
                    select %(plan_id)s, g.group_key, g.op_type, g.changed_fields, g.payload,
                           g.op_type = 'create_group' and exists (
                               select 1 from sync.ops prior where prior.group_key = g.group_key
                               and prior.op_type = 'create_group' and prior.status in ('sending', 'escrow')),
                           1
                    from ({GROUPS_SQL}) g
                    order by g.op_type, g.group_key""",
                {"plan_id": plan_id})
        if has_manager:
            conn.execute(
                f"""insert into sync.ops (plan_id, person_id, op_type, changed_fields, payload, phase)
                    select %(plan_id)s, m.person_id, m.op_type, m.changed_fields, m.payload, 2
                    from ({MANAGER_SQL}) m order by m.person_id""",
                {"plan_id": plan_id, "snapshot_id": snapshot_id})
        if has_groups:
            conn.execute(
                f"""insert into sync.ops (plan_id, group_key, op_type, members, payload, phase)
                    select %(plan_id)s, c.group_key, c.op_type, c.members, c.payload, 2
                    from ({MEMBERS_SQL}) c
                    order by c.op_type desc, c.group_key, c.members[1]""",
                {"plan_id": plan_id, "snapshot_id": snapshot_id, "chunk": MEMBER_CHUNK})
        # Earlier unfinished plans are replaced by this one: the diff already holds their remaining work,
        # and ops whose outcome is unknown ('sending' when an apply crashed) are verified first (above).
        conn.execute("update sync.ops set status = 'superseded' "
                     "where plan_id <> %s and status in ('pending', 'escrow', 'sending')", (plan_id,))
        conn.execute("update sync.ops set status = 'superseded' where plan_id <> %s and status = 'held'", (plan_id,))
        conn.execute("update sync.plans set status = 'superseded' "
                     "where plan_id <> %s and status in ('planned', 'partial', 'held', 'approved')", (plan_id,))
        plan = Plan(plan_id)
        for op_type, n in conn.execute(
                "select op_type, count(*) from sync.ops where plan_id = %s group by op_type", (plan_id,)):
            plan.counts[op_type] = n
        for attr, n in conn.execute(
                """select f, count(*) from sync.ops, unnest(changed_fields) f
                   where plan_id = %s and op_type in ('update_user', 'reactivate_user') group by f""",
                (plan_id,)):
            plan.attribute_counts[attr] = n
        for op_type, n in conn.execute(
                """select op_type, sum(cardinality(members)) from sync.ops
                   where plan_id = %s and op_type in ('add_members', 'remove_members') group by op_type""",
                (plan_id,)):
            plan.member_counts[op_type] = int(n)
        if has_groups:
            # Desired members who hold no active account after this plan cannot be added: count them, so
            # a members mart keyed on something else than the account person id shows up in the report.
            skipped = conn.execute(
                f"""select count(*) from marts.lms_desired_group_members m
                    join marts.lms_desired_groups g on g.group_key = m.group_key
                    where m.person_id is not null
                      and not exists (select 1 from ({_ACTIVE_AFTER}) a where a.person_id = m.person_id)""",
                {"snapshot_id": snapshot_id}).fetchone()[0]
            if skipped:
                plan.member_counts["skipped_without_account"] = skipped
        counts = {"ops": plan.counts, "attributes": plan.attribute_counts}
        if plan.member_counts:
            counts["members"] = plan.member_counts
        conn.execute("update sync.plans set counts = %s where plan_id = %s",
                     (psycopg.types.json.Jsonb(counts), plan_id))
        verdict = breaker.evaluate(conn, plan_id, snapshot_id)
        if verdict.held:
            breaker.hold(conn, plan_id, verdict)
        breaker.store_review(conn, plan_id, verdict)
        plan.held, plan.held_reasons = verdict.held, verdict.reasons
    return plan
