"""Plan: diff the desired LMS state (marts.lms_desired_*) against what we applied (sync.applied_*).

Set-based SQL, one transaction. Only changed attributes are sent. A person whose row was quarantined
in this snapshot is left alone (never deactivated because their row was bad, never removed from a
group), and a rejected snapshot never gets this far. Rerunning the plan for the same run supersedes
the earlier unfinished plan: the diff already accounts for everything that was applied.

Scope: a restricted plan compares only the accounts that may have changed (sync.dirty_people, filled by
the change sets of hrlms.warehouse.changes, plus their accounts, managers and unfinished ops: _SCOPE_SQL);
a full plan compares every account (the first build, a full build not yet applied, reconcile, or
HRLMS_REBUILD=always). A dirty person is cleared once a plan that covered them is applied (_settle).

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
  and planned as add/remove chunks of at most MEMBER_CHUNK people — the desired list is never written
  over the LMS's (apply sends removals as filtered removes, or as a replace of the members just read
  minus the removed, guarded by the group's version: hrlms.sync.scim.ScimClient.remove_members).
  Members must be active after this plan; people who leave (deactivation, or gone from HR) leave
  their groups; quarantined people keep their current memberships. A group whose key disappears from
  the desired state loses all its members but is not deleted in the LMS (its applied_groups row stays,
  so it is reused if the key comes back).
- Optional inputs: without marts.lms_desired_groups / lms_desired_group_members no group ops are
  planned; without lms_desired_users.manager_person_id no set_manager ops (checked once per plan).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import psycopg

from hrlms.sync import breaker, outbound
from hrlms.sync.outbound import CheckedMapping
from hrlms.sync.scim import ACCOUNT_COLUMNS

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
    scope: dict[str, object] = field(default_factory=dict)        # mode (full | restricted), people, because
    timings: dict[str, float] = field(default_factory=dict)       # seconds per step (the plan stage's detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _changed_expr(names: tuple[str, ...]) -> str:
    """The mapped attributes whose value differs from the one we sent (both jsonb; absent = empty). Most
    accounts are unchanged: their values equal as a whole (one comparison) are not compared per name."""
    parts = [f"case when d.attrs -> '{n}' is distinct from a.attrs -> '{n}' then '{n}' end" for n in names]
    return (f"case when d.attrs = a.attrs then array[]::text[] "
            f"else array_remove(array[{', '.join(parts)}]::text[], null) end")


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

# A restricted plan compares only the accounts in the temp table plan_scope (see make_plan).
_IN_SCOPE = "join plan_scope on plan_scope.person_id = {0}.person_id"


# What a user op's payload carries of the desired account: its key and lifecycle, the columns kept with
# each account (sync.applied_users, written from the payload by apply) and the mapped values (attrs) the
# requests are built from — not every column of the mart (the mapping's sources are read here, in the plan).
PAYLOAD_COLUMNS = ("person_id", *ACCOUNT_COLUMNS, "is_active")


def diff_sql(checked: CheckedMapping, scoped: bool = False) -> str:
    """The user ops: the desired accounts (their mapped values computed here, for the accounts compared)
    against what we applied."""
    names = checked.names
    return _DIFF_SQL.format(desired_scope=_IN_SCOPE.format("d") if scoped else "",
                            applied_scope=_IN_SCOPE.format("a") if scoped else "",
                            columns=", ".join(f"d.{c}" for c in PAYLOAD_COLUMNS),
                            payload=", ".join(f"'{c}', d.{c}" for c in PAYLOAD_COLUMNS),
                            attrs=checked.attrs_sql(), changed=_changed_expr(names),
                            all_names=", ".join(f"'{n}'" for n in names))


_DIFF_SQL = f"""
with desired as (
    select {{columns}}, {{attrs}} as attrs from marts.lms_desired_users d {{desired_scope}}
),
applied as (
    select a.person_id, a.is_active, a.attrs from sync.applied_users a {{applied_scope}}
),
quarantined as ({_QUARANTINED}),
joined as (
    select
        coalesce(d.person_id, a.person_id) as person_id,
        d.person_id is not null as in_desired,
        a.person_id is not null as in_applied,
        coalesce(d.is_active, false) as want_active,
        coalesce(a.is_active, false) as has_active,
        {{changed}} as changed,
        case when d.person_id is not null then jsonb_build_object({{payload}}, 'attrs', d.attrs) end as desired_row
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
         else array[{{all_names}}]::text[] end as changed_fields,
    coalesce(desired_row, jsonb_build_object('person_id', person_id, 'is_active', false)) as payload
from ops where op_type is not null
"""


# People who hold an active LMS account once phase 1 of this plan is applied (among `among`: a query
# of the candidate ids, or everyone).
def active_after_sql(among: str | None = None) -> str:
    only = f" and person_id in ({among})" if among else ""
    only_a = f" and a.person_id in ({among})" if among else ""
    return f"""
    select person_id from marts.lms_desired_users where is_active{only}
    union
    select a.person_id from sync.applied_users a
    where a.is_active and a.person_id in ({_QUARANTINED}){only_a}
      and not exists (select 1 from marts.lms_desired_users d where d.person_id = a.person_id)
"""


_ACTIVE_AFTER = active_after_sql()


def manager_sql(scoped: bool = False) -> str:
    scope = _IN_SCOPE.format("d") if scoped else ""
    among = "select manager_person_id from scoped where manager_person_id is not null" if scoped else None
    return f"""
with scoped as (select d.* from marts.lms_desired_users d {scope} where d.is_active),
active_after as ({active_after_sql(among)}),
wanted as (
    -- a join, not "manager in (select … from active_after)" inside the CASE: that is a SubPlan, which
    -- Postgres hashes only if active_after fits in work_mem; at 1M people it re-scanned active_after
    -- for every worker (the day-1 plan ran for over 13 minutes)
    select d.person_id, d.manager_person_id as hr_manager_person_id,
        case when d.manager_person_id <> d.person_id and manager.person_id is not null
             then d.manager_person_id end as manager_person_id
    from scoped d
    left join active_after manager on manager.person_id = d.manager_person_id
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

# The same depth for the people of a restricted plan, walking up from each of them (a walk that does not
# reach the top within 64 steps is a cycle, or below one: no depth, as above).
DEPTH_UP_SQL = """
with recursive up (person_id, at_id, depth) as (
    select d.person_id, d.person_id, 0 from marts.lms_desired_users d join plan_scope s on s.person_id = d.person_id
    union all
    select up.person_id, m.manager_person_id, up.depth + 1 from up
    join marts.lms_desired_users m on m.person_id = up.at_id
    where up.depth < 64 and m.manager_person_id is not null and m.manager_person_id <> m.person_id
      and exists (select 1 from marts.lms_desired_users n where n.person_id = m.manager_person_id)
)
select person_id, case when max(depth) < 64 then max(depth) end as depth from up group by person_id
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


def members_sql(scoped: bool = False) -> str:
    among = "select person_id from plan_scope" if scoped else None
    applied_scope = _IN_SCOPE.format("m") if scoped else ""
    return f"""
with active_after as ({active_after_sql(among)}),
quarantined as ({_QUARANTINED}),
desired as (
    select distinct m.group_key, m.person_id
    from marts.lms_desired_group_members m
    join marts.lms_desired_groups g on g.group_key = m.group_key
    where m.person_id in (select person_id from active_after)
),
applied as (select m.group_key, m.person_id from sync.applied_memberships m {applied_scope}),
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


class ScopeMismatch(AssertionError):
    """HRLMS_PLAN_CHECK_SCOPE: a restricted plan differs from the full diff (a change set missed someone)."""


_UNFINISHED = "('pending', 'sending', 'escrow', 'dead_letter', 'held')"

# Scope of a restricted plan: the dirty people (hrlms.warehouse.changes), as HR ids and as the LMS accounts
# identity decisions give them, the accounts whose ops are not done, and people in groups that are no
# longer desired; then the (resolved) managers of all of those, whose "manages people" may have changed.
_SCOPE_SQL = """
insert into plan_scope
select person_id from sync.dirty_people where person_id <> '*'
union
select d.account_person_id from sync.dirty_people p
join hrlms_util.identity_accounts() d on d.person_id = p.person_id
union
select d.person_id from sync.dirty_people p
join hrlms_util.identity_accounts() d on d.account_person_id = p.person_id
union
select am.person_id from sync.applied_groups ag join sync.applied_memberships am on am.group_key = ag.group_key
where not exists (select 1 from marts.lms_desired_groups g where g.group_key = ag.group_key)
"""


def _unfinished_people(plan_id: str = "") -> str:
    # status <> 'applied' as two ranges of ops_plan_status_idx: a plan that is most of sync.ops (an initial
    # load: 2.2M ops at 1M workers) was read whole, twice, by the next plan's settle (1-2 s)
    where = (f"plan_id = {plan_id} and (status < 'applied' or status > 'applied')" if plan_id
             else f"status in {_UNFINISHED}")
    return (f"select person_id from sync.ops where {where} and person_id is not null "
            f"union select unnest(members) from sync.ops where {where} and members is not null")


def _settle(conn: psycopg.Connection) -> None:
    """Plans that were applied (wholly or partly) since the last plan clear the dirty people they covered;
    the people of their ops that are not done stay (or become) dirty."""
    for plan_id, mode in conn.execute(
            "select plan_id, scope_mode from sync.plans where not scope_settled and scope_mode is not null "
            "and status in ('applied', 'partial') order by plan_id").fetchall():
        scope = ("" if mode == "full" else
                 "and d.person_id in (select person_id from sync.plan_scope s where s.plan_id = %(p)s)")
        conn.execute(f"""delete from sync.dirty_people d
                         where d.marked_at < (select created_at from sync.plans where plan_id = %(p)s) {scope}""",
                     {"p": plan_id})
        conn.execute(f"""insert into sync.dirty_people (person_id, reasons)
                         select person_id, array['pending'] from ({_unfinished_people('%(p)s')}) u
                         where person_id is not null on conflict do nothing""", {"p": plan_id})
        conn.execute("update sync.plans set scope_settled = true where plan_id = %s", (plan_id,))


def _scope_mode(conn: psycopg.Connection, scope: str, checksum: str) -> tuple[str, str]:
    """('full' | 'restricted', why) for a plan asked for with scope 'auto' | 'full' (`checksum`: the
    outbound mapping's)."""
    from hrlms.warehouse import builds, changes

    if scope == "full":
        return "full", "a full comparison was asked for"
    if scope != "auto":
        raise ValueError(f"scope must be 'auto' or 'full', not {scope!r}")
    if not builds.skipping_enabled():
        return "full", "HRLMS_REBUILD=always"
    last = conn.execute("select outbound ->> 'checksum' from sync.plans where status in ('applied', 'partial') "
                        "order by plan_id desc limit 1").fetchone()
    if last and last[0] != checksum:
        return "full", "the LMS mapping changed since the last applied plan"
    if changes.latest_built(conn) is None:
        return "full", "no change set: the marts were not built by the pipeline's transform stage"
    row = conn.execute("select c.built_because, d.reasons from sync.dirty_people d "
                       "left join audit.change_sets c on c.change_set_id = d.change_set_id "
                       "where d.person_id = '*'").fetchone()
    if row:
        because = row[0] or ("reconcile corrected our record of the LMS" if "lms" in row[1] else "full build")
        return "full", f"no full plan applied since: {because}"
    return "restricted", "the dirty people of the change sets since the last applied plan"


_IDENTITY_FN = "hrlms_util.identity_accounts()"
_IDENTITY_TABLE = ("(select person_id, account_person_id from intermediate.int_identity_decisions "
                   "where account_person_id is not null)")


class _Sql:
    """Executes the plan's SQL with the identity decisions read from their table when dbt has built it (the
    function hrlms_util.identity_accounts() stands in before that, but the planner cannot see into it:
    at 1M people it materialised every decision for each use)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.table = conn.execute("select to_regclass('intermediate.int_identity_decisions') is not null").fetchone()[0]

    def __call__(self, sql: str, params=None):
        return self.conn.execute(sql.replace(_IDENTITY_FN, _IDENTITY_TABLE) if self.table else sql, params)


def _insert_ops(conn: psycopg.Connection, plan_id: int, snapshot_id: int, scoped: bool, has_manager: bool,
                has_groups: bool, checked: CheckedMapping) -> None:
    execute = _Sql(conn)
    # Creates managers first (reporting depth), so a create can carry its manager (hrlms.sync.apply).
    depth = DEPTH_UP_SQL if scoped else DEPTH_SQL
    depth_join = f"left join ({depth}) depth on depth.person_id = diff.person_id" if has_manager else ""
    depth_order = "depth.depth nulls last, " if has_manager else ""
    execute(
        f"""insert into sync.ops (plan_id, person_id, op_type, changed_fields, payload, verify_first)
            select %(plan_id)s, diff.person_id, diff.op_type, diff.changed_fields, diff.payload,
                   exists (select 1 from sync.ops prior where prior.person_id = diff.person_id
                           and prior.status in ('sending', 'escrow'))
            from ({diff_sql(checked, scoped)}) diff
            {depth_join}
            order by diff.op_type, {depth_order}diff.person_id""",
        {"plan_id": plan_id, "snapshot_id": snapshot_id})
    if has_groups:
        execute(
            f"""insert into sync.ops (plan_id, group_key, op_type, changed_fields, payload, verify_first, phase)
                select %(plan_id)s, g.group_key, g.op_type, g.changed_fields, g.payload,
                       g.op_type = 'create_group' and exists (
                           select 1 from sync.ops prior where prior.group_key = g.group_key
                           and prior.op_type = 'create_group' and prior.status in ('sending', 'escrow')),
                       1
                from ({GROUPS_SQL}) g
                order by g.op_type, g.group_key""",
            {"plan_id": plan_id})
    if has_groups:   # before the managers' ops: the big groups' slow writes are claimed first
        execute(
            f"""insert into sync.ops (plan_id, group_key, op_type, members, payload, phase)
                select %(plan_id)s, c.group_key, c.op_type, c.members, c.payload, 2
                from ({members_sql(scoped)}) c
                -- group by group (apply claims by op id: a group's adds and removals meet in one batch and go as
                -- one write), the groups with the most changes first (the big groups' reads and writes are the
                -- slowest requests of an apply: started first, the other shards send the rest meanwhile)
                order by sum(cardinality(c.members)) over (partition by c.group_key) desc, c.group_key,
                         c.op_type desc, c.members[1]""",
            {"plan_id": plan_id, "snapshot_id": snapshot_id, "chunk": MEMBER_CHUNK})
    if has_manager:
        execute(
            f"""insert into sync.ops (plan_id, person_id, op_type, changed_fields, payload, phase)
                select %(plan_id)s, m.person_id, m.op_type, m.changed_fields, m.payload, 2
                from ({manager_sql(scoped)}) m order by m.person_id""",
            {"plan_id": plan_id, "snapshot_id": snapshot_id})


_OP_ROWS = """
    select person_id, group_key, op_type, changed_fields, payload::text, verify_first, m
    from sync.ops left join lateral unnest(members) m on true where plan_id = %s
"""


def _check_scope(conn: psycopg.Connection, plan_id: int, snapshot_id: int, has_manager: bool,
                 has_groups: bool, checked: CheckedMapping) -> None:
    """Compare a restricted plan's ops with the full diff's (in a savepoint that is rolled back)."""
    def rows(pid):
        return sorted(conn.execute(_OP_ROWS, (pid,)).fetchall(), key=repr)

    got = rows(plan_id)
    with conn.transaction(force_rollback=True):
        full_id = conn.execute("insert into sync.plans (logical_date, snapshot_id) select logical_date, snapshot_id "
                               "from sync.plans where plan_id = %s returning plan_id", (plan_id,)).fetchone()[0]
        _insert_ops(conn, full_id, snapshot_id, False, has_manager, has_groups, checked)
        want = rows(full_id)
    if got != want:
        missing = [r for r in want if r not in got][:10]
        extra = [r for r in got if r not in want][:10]
        raise ScopeMismatch(f"plan {plan_id}: the restricted plan differs from the full diff; "
                            f"missing {missing}; not in the full diff {extra}")


def make_plan(conn: psycopg.Connection, *, logical_date: date, snapshot_id: int, scope: str = "auto",
              run_key: str | None = None, logical_ts: datetime | None = None,
              checked: CheckedMapping | None = None) -> Plan:
    """Diff the desired state against what we applied and store the ops as a new plan. `scope` 'auto':
    only the accounts that may have changed (hrlms.warehouse.changes) when the marts were built by the
    pipeline's transform stage and no full build is outstanding, else every account; 'full': every account
    (reconcile). HRLMS_PLAN_CHECK_SCOPE=true checks a restricted plan against the full diff (tests).
    `run_key` / `logical_ts`: the run making it and its logical moment (with the run's first stage start,
    for the access latency of its ops: marts.access_events). `checked`: the outbound mapping, checked
    (default: HRLMS_LMS_MAPPING checked against the LMS's schemas as last read: hrlms.sync.outbound)."""
    import os

    from hrlms.timing import StepTimes

    timings = StepTimes()
    mark = timings.mark

    checked = checked or outbound.check(conn)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.plan'))")
        _settle(conn)
        mark("settle")
        # ops not done stay dirty until an op for that person is applied (marked before the plan's row,
        # so that this plan's applied ops clear them)
        conn.execute(f"""insert into sync.dirty_people (person_id, reasons)
                         select person_id, array['pending'] from ({_unfinished_people()}) u
                         where person_id is not null on conflict do nothing""")
        mode, why = _scope_mode(conn, scope, checked.mapping.checksum)
        plan_id = conn.execute(
            "insert into sync.plans (logical_date, snapshot_id, scope_mode, change_set_id, run_key, logical_ts, "
            "                        run_started_at, outbound) "
            "values (%s, %s, %s, (select max(change_set_id) from audit.change_sets where state = 'built'), "
            "        %s, %s, (select min(started_at) from audit.stage_runs where run_key = %s), %s) "
            "returning plan_id",
            (logical_date, snapshot_id, mode, run_key, logical_ts, run_key,
             psycopg.types.json.Jsonb(checked.describe()))).fetchone()[0]
        has_manager, has_groups = _optional_inputs(conn)
        scoped = mode == "restricted"
        if scoped:
            conn.execute("create temp table plan_scope (person_id text primary key) on commit drop")
            _Sql(conn)(_SCOPE_SQL)
            if has_manager:
                conn.execute("""insert into plan_scope
                                select distinct d.manager_person_id from marts.lms_desired_users d
                                join plan_scope s on s.person_id = d.person_id
                                where d.manager_person_id is not null on conflict do nothing""")
            conn.execute("analyze plan_scope")
            conn.execute("insert into sync.plan_scope (plan_id, person_id) select %s, person_id from plan_scope",
                         (plan_id,))
        people = conn.execute("select count(*) from plan_scope" if scoped else
                              "select count(*) from (select person_id from sync.applied_users union "
                              "select person_id from marts.lms_desired_users) everyone").fetchone()[0]
        conn.execute("update sync.plans set scope_people = %s where plan_id = %s", (people, plan_id))
        mark("scope")
        _insert_ops(conn, plan_id, snapshot_id, scoped, has_manager, has_groups, checked)
        mark("diff")
        if scoped and os.environ.get("HRLMS_PLAN_CHECK_SCOPE", "").strip().lower() in ("1", "true", "yes"):
            _check_scope(conn, plan_id, snapshot_id, has_manager, has_groups, checked)
            mark("check_scope")
        # Earlier unfinished plans are replaced by this one: the diff already holds their remaining work,
        # and ops whose outcome is unknown ('sending' when an apply crashed) are verified first (above).
        conn.execute("update sync.ops set status = 'superseded' "
                     "where plan_id <> %s and status in ('pending', 'escrow', 'sending')", (plan_id,))
        conn.execute("update sync.ops set status = 'superseded' where plan_id <> %s and status = 'held'", (plan_id,))
        conn.execute("update sync.plans set status = 'superseded' "
                     "where plan_id <> %s and status in ('planned', 'partial', 'held', 'approved')", (plan_id,))
        plan = Plan(plan_id, scope={"mode": mode, "people": people, "because": why}, timings=dict(timings))
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
            skipped = _Sql(conn)(
                f"""select count(*) from marts.lms_desired_group_members m
                    join marts.lms_desired_groups g on g.group_key = m.group_key
                    where m.person_id is not null {"and m.person_id in (select person_id from plan_scope)"
                                                   if scoped else ""}
                      and not exists (select 1 from ({active_after_sql("select person_id from plan_scope")
                                                      if scoped else _ACTIVE_AFTER}) a
                                      where a.person_id = m.person_id)""",
                {"snapshot_id": snapshot_id}).fetchone()[0]
            if skipped:
                plan.member_counts["skipped_without_account"] = skipped
        counts = {"ops": plan.counts, "attributes": plan.attribute_counts}
        if plan.member_counts:
            counts["members"] = plan.member_counts
        conn.execute("update sync.plans set counts = %s where plan_id = %s",
                     (psycopg.types.json.Jsonb(counts), plan_id))
        mark("counts")
        verdict = breaker.evaluate(conn, plan_id, snapshot_id, names=checked.names)
        if verdict.held:
            breaker.hold(conn, plan_id, verdict)
        breaker.store_review(conn, plan_id, verdict)
        plan.held, plan.held_reasons = verdict.held, verdict.reasons
        mark("breaker")
        plan.timings = dict(timings)
    return plan


def preview_mapping(conn: psycopg.Connection, mapping_file: str | None = None) -> dict[str, object]:
    """What an outbound mapping would send before it goes live: the full comparison made with it (checked
    against the LMS's schemas as last read) in a transaction that is rolled back. Returns the mapping's
    file and checksum, the accounts each attribute would touch (updates and reactivations), the ops per
    type and whether the breaker would hold the plan."""
    checked = outbound.check(conn, outbound.load(mapping_file) if mapping_file else None)
    last = conn.execute("select logical_date, snapshot_id from sync.plans order by plan_id desc limit 1").fetchone()
    if last is None:
        raise ValueError("no plan yet: a preview compares with what the last runs sent (run the pipeline once)")
    logical_date, snapshot_id = last
    with conn.transaction(force_rollback=True):
        plan = make_plan(conn, logical_date=logical_date, snapshot_id=snapshot_id, scope="full", checked=checked)
    return {"mapping": str(checked.mapping.file), "checksum": checked.mapping.checksum,
            "attributes": dict(sorted(plan.attribute_counts.items())), "ops": plan.counts,
            "held": plan.held_reasons}
