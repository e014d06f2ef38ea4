"""The quality gate on one snapshot: batch checks stop the run, row checks quarantine rows.

Runs GX Core checkpoints against the typed staging rows of the snapshot (pushed down to Postgres),
writes the outcome to `dq.gate_runs` / `dq.quarantine` in one transaction, and rebuilds the Data Docs
(the report HR reads). GX is imported inside the functions that use it, never at DAG parse time, nor
by a rerun whose gate is skipped (hrlms.warehouse.builds).
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from hrlms.locks import file_lock
from hrlms.settings import env_float
from hrlms.sources.mapping import KEY_FIELD
from hrlms.warehouse.db import sqlalchemy_url

log = logging.getLogger(__name__)
GX_ROOT = Path(__file__).resolve().parents[3] / "expectations"
DATASOURCE = "warehouse"
URL_VAR = "HRLMS_GX_WAREHOUSE_URL"   # the file context stores "${HRLMS_GX_WAREHOUSE_URL}", never the URL


class GateFailed(RuntimeError):
    """A batch-level defect: nothing downstream may run for this snapshot."""


@dataclass
class GateResult:
    snapshot_id: int
    entity: str
    rows: int
    quarantined_rows: int
    reasons: dict[str, int] = field(default_factory=dict)
    batch_failures: list[str] = field(default_factory=list)
    data_docs: str = ""
    hold_reason: str | None = None   # the snapshot shrank beyond the threshold: its plan is held (breaker)
    lines: dict[str, Any] = field(default_factory=dict)   # with carried verdicts: lines checked, carried

    @property
    def passed(self) -> bool:
        return not self.batch_failures


def _snapshot(conn: psycopg.Connection, snapshot_id: int) -> dict[str, Any]:
    row = conn.execute(
        "select entity, source_uri, source_columns, row_count from raw_hris.snapshots where snapshot_id = %s",
        (snapshot_id,)).fetchone()
    if not row:
        raise GateFailed(f"snapshot {snapshot_id} does not exist")
    return {"entity": row[0], "source": row[1], "columns": row[2], "rows": row[3]}


def previous_row_count(conn: psycopg.Connection, entity: str, snapshot_id: int) -> int | None:
    """Rows of the last snapshot before this one that passed its gate and was not itself held for
    shrinking (the baseline for the drop check)."""
    row = conn.execute(
        """select s.row_count from raw_hris.snapshots s
           join dq.gate_runs g on g.snapshot_id = s.snapshot_id and g.suite = %s and g.success
           where s.entity = %s and s.snapshot_id < %s
             and not exists (select 1 from dq.gate_runs h where h.snapshot_id = s.snapshot_id
                             and h.suite = 'snapshot_hold' and not h.success)
           order by s.snapshot_id desc limit 1""",
        (f"{entity}_batch", entity, snapshot_id)).fetchone()
    return row[0] if row else None


def _create_gate_views(conn: psycopg.Connection, snapshot_id: int, entity: str, carry_from: int | None = None,
                       as_of: Any = None) -> dict[str, Any]:
    """The relations GX reads. Workers come from the run's snapshot as the staging stage parsed it into a
    table (a view over the staging view would re-parse the snapshot for each of GX's ~10 queries). With
    `carry_from`, the row checks (dq.gate_workers) see only the lines whose verdicts cannot be carried from
    that snapshot (carried_verdicts), and when that snapshot passed the batch checks, its person-id uniqueness
    check (dq.gate_workers_distinct) only the lines a duplicate could be on: those not carried and the lines of
    their people (two carried lines are two distinct lines of that snapshot). Returns how the shared values
    were checked (_find_key_conflicts; {} for org units)."""
    from hrlms.transform.dbt import SNAPSHOT_TABLE, check_staged

    if entity == "workers":
        check_staged(conn, snapshot_id)
    lit = sql.Literal(snapshot_id)
    new = _kept_new_lines(conn, snapshot_id, carry_from) if entity == "workers" and carry_from is not None else None
    keys = _find_key_conflicts(conn, snapshot_id, carry_from, as_of, new) if entity == "workers" else {}
    rows_from = distinct_from = sql.SQL(SNAPSHOT_TABLE)
    if new is not None:
        fmt = {"snap": sql.SQL(SNAPSHOT_TABLE), "sid": lit, "new": new}
        # the lines to check, written once (GX sends each check as its own query)
        # (one set of line numbers: the copies and the key conflicts by an index of the parsed rows, the lines not
        # carried as the few whose carry names another source — not a filter on the parsed rows' 1M lines)
        conn.execute(sql.SQL(
            "drop table if exists dq.gate_checked_workers cascade; "
            "create unlogged table dq.gate_checked_workers as select w.* from {snap} w "
            "where w.snapshot_id = {sid} and w.line_no in ("
            " select c.line_no from {snap} c where c.copy_no <> 1 union {new} union"
            " select k.line_no from dq.gate_key_conflicts k where k.snapshot_id = {sid})").format(**fmt))
        rows_from = sql.SQL("dq.gate_checked_workers")
        if conn.execute("select exists (select 1 from dq.gate_runs where snapshot_id = %s"
                        " and suite = 'workers_batch' and success)", (carry_from,)).fetchone()[0]:
            conn.execute(sql.SQL(
                "drop table if exists dq.gate_checked_distinct cascade; "
                "create unlogged table dq.gate_checked_distinct as "
                "with new as materialized (select w.line_no, w.person_id from {snap} w where w.snapshot_id = {sid}"
                " and w.line_no in ({new})) "
                "select w.* from {snap} w where w.snapshot_id = {sid} and w.copy_no = 1 and w.line_no in ("
                " select line_no from new union"
                " select p.line_no from {snap} p where p.person_id in (select person_id from new))"
            ).format(**fmt))
            n = conn.execute("select count(*) from dq.gate_checked_distinct").fetchone()[0]
            if n:     # none: every line carried, and the row-count check needs rows — it reads them all
                distinct_from = sql.SQL("dq.gate_checked_distinct")
                keys["person_ids_checked_on"] = n
    # All three on every call (GX's assets need them to exist); recreated on every run as dbt's rebuild
    # of the table drops the views on it.
    conn.execute(sql.SQL(
        "create or replace view dq.gate_workers as select w.*, c.email_held_by, c.username_held_by, "
        "c.employee_number_held_by from {} w left join ("
        " select line_no,"
        " max(held_by) filter (where rule = 'duplicate_email') as email_held_by,"
        " max(held_by) filter (where rule = 'duplicate_username') as username_held_by,"
        " max(held_by) filter (where rule = 'duplicate_employee_number') as employee_number_held_by"
        " from dq.gate_key_conflicts where snapshot_id = {} group by line_no) c on c.line_no = w.line_no "
        "where w.snapshot_id = {}").format(rows_from, lit, lit))
    conn.execute(sql.SQL("create or replace view dq.gate_workers_distinct as select * from {} "
                         "where snapshot_id = {} and copy_no = 1").format(distinct_from, lit))
    conn.execute(sql.SQL("create or replace view dq.gate_org_units as select * from "
                         "staging.stg_hris__org_units where snapshot_id = {}").format(lit))
    return keys


# The checks on values one person's line shares with another person: {kind: check name}. kind is the key:
# the work e-mail, the LMS userName (hrlms.sync: the login, or the work e-mail when there is none; see
# marts/lms_desired_users) and the employee number.
KEY_CONFLICT_RULES = {"work_email": "duplicate_email", "user_name": "duplicate_username",
                      "employee_number": "duplicate_employee_number"}
DBT_PROJECT = Path(__file__).resolve().parents[3] / "dbt_project" / "dbt_project.yml"

# Which line keeps a value that several people claim, and which lines are quarantined for it. A claimant
# is a person with the value on their line in this snapshot; an LMS account holding it (sync.applied_users,
# active or not) claims it too. People on one LMS account never conflict: a person's account is their
# identity decision (int_identity_decisions, as of the last build), else their own id when the LMS has
# it, else — for a new person — the account of any leaver (gone from the snapshot, or terminated in it,
# at least rehire_min_gap_days ago) who carries the value under one of identity_match_rules: the
# identity model links them as a rehire/conversion, else a new account of their own.
# The value stays with ("earlier holder"): 0. the LMS account that holds it (an active one first); else
# 1. the person who had it in the last good snapshot (snap_workers as before the run's date); else
# 2. the earliest hire date, then start date, then the smallest person_id. Every claimant not on that
# account is a conflict. An invalid e-mail is left to invalid_email; a missing login falls back to the
# e-mail, reported once (duplicate_email).
KEY_CONFLICTS_SQL = """
with lines as (
    select line_no, person_id, employment_status, hire_date, start_date, employee_number, username,
        case when work_email ~ %(email_regex)s then work_email end as work_email
    from {snapshot_table}
    where snapshot_id = %(sid)s and copy_no = 1 and person_id is not null{line_filter}
),
fresh as (
    -- the values of a line that its person's own LMS account does not hold (all of a new person's): only
    -- these can be taken from another account — a value that stays where it is was checked on arrival
    select l.person_id,
        case when l.work_email is distinct from lower(a.email) then l.work_email end as work_email,
        case when coalesce(l.username, l.work_email) is distinct from lower(a.user_name)
            then coalesce(l.username, l.work_email) end as user_name,
        case when l.employee_number is distinct from a.employee_number then l.employee_number end
            as employee_number
    from lines l
    left join sync.applied_users a on a.person_id = l.person_id
    where a.person_id is null or l.work_email is distinct from lower(a.email)
        or coalesce(l.username, l.work_email) is distinct from lower(a.user_name)
        or l.employee_number is distinct from a.employee_number
),
shared as (
    -- values two people claim: on two lines, or on a line and another person's account. One aggregate
    -- and one join per key (all keys in one relation were sorted and merged: 29 s at 1M workers)
    select distinct kind, v from (
        select 'work_email' as kind, work_email as v from lines where work_email is not null
        group by work_email having min(person_id) <> max(person_id)
        union all
        select 'user_name', coalesce(username, work_email) from lines where coalesce(username, work_email) is not null
        group by coalesce(username, work_email) having min(person_id) <> max(person_id)
        union all
        select 'employee_number', employee_number from lines where employee_number is not null
        group by employee_number having min(person_id) <> max(person_id)
        union all
        -- one account per fresh value, looked up by index: LIMIT keeps the planner from flattening the
        -- lookup into a join, which (fresh is estimated at every line, not the few changed ones) hashed
        -- every account once per key (3.4 s at 1M)
        select 'work_email', f.work_email from fresh f
        cross join lateral (select 1 from sync.applied_users a
                            where lower(a.email) = f.work_email and a.person_id <> f.person_id limit 1) a
        where f.work_email is not null
        union all
        select 'user_name', f.user_name from fresh f
        cross join lateral (select 1 from sync.applied_users a
                            where lower(a.user_name) = f.user_name and a.person_id <> f.person_id limit 1) a
        where f.user_name is not null
        union all
        select 'employee_number', f.employee_number from fresh f
        cross join lateral (select 1 from sync.applied_users a
                            where a.employee_number = f.employee_number and a.person_id <> f.person_id
                            limit 1) a
        where f.employee_number is not null
    ) found
),
kept as (
    -- for a later gate's delta (_key_check_delta): this snapshot's shared values, and when the accounts were read
    insert into dq.gate_key_checks (snapshot_id, accounts_as_of, shared)
    select %(sid)s, %(as_of)s, coalesce(jsonb_agg(jsonb_build_array(kind, v) order by kind, v), '[]') from shared
    having cast(%(as_of)s as timestamptz) is not null
    on conflict (snapshot_id) do update set accounts_as_of = excluded.accounts_as_of, shared = excluded.shared
    returning 1
),
claims as (
    -- with what contenders and the final select read of the line: joining lines again for it hashed or
    -- sorted every line for a few claims
    select l.line_no, l.person_id, s.kind, s.v, l.hire_date, l.start_date, l.username from shared s
    join lines l on s.kind = 'work_email' and l.work_email = s.v
    union all
    select l.line_no, l.person_id, s.kind, s.v, l.hire_date, l.start_date, l.username from shared s
    join lines l on s.kind = 'user_name' and coalesce(l.username, l.work_email) = s.v
    union all
    select l.line_no, l.person_id, s.kind, s.v, l.hire_date, l.start_date, l.username from shared s
    join lines l on s.kind = 'employee_number' and l.employee_number = s.v
),
lms_claims as (
    select a.person_id as account, a.is_active, s.kind, s.v from shared s
    join sync.applied_users a on s.kind = 'work_email' and lower(a.email) = s.v
    union all
    select a.person_id, a.is_active, s.kind, s.v from shared s
    join sync.applied_users a on s.kind = 'user_name' and lower(a.user_name) = s.v
    union all
    select a.person_id, a.is_active, s.kind, s.v from shared s
    join sync.applied_users a on s.kind = 'employee_number' and a.employee_number = s.v
),
-- inlined: read by index, with the table's statistics (one decision per person). Materialized, its 1M
-- rows had no statistics, every join on it was estimated thousands of times too large, and the hash of
-- `own` below, sized for billions of rows, cycled through 1024 batches (20 s at 1M with 200 conflicts)
decided as not materialized (
    {decided}
),
present as (
    -- every line of these people (`lines` may hold only the lines with the values looked up)
    select person_id, bool_and(employment_status = 'terminated') as is_terminated from {snapshot_table}
    where snapshot_id = %(sid)s and copy_no = 1
      and person_id in (select person_id from claims union select account from lms_claims)
    group by person_id
),
own_known as (
    select c.person_id, coalesce(d.account_person_id, a.person_id) as account
    from (select distinct person_id from claims) c
    left join decided d on d.person_id = c.person_id
    left join sync.applied_users a on a.person_id = c.person_id
    where d.person_id is not null or a.person_id is not null
),
leavers as (
    select h.kind, h.v, h.account as person_id, coalesce(d.account_person_id, h.account) as account
    from lms_claims h
    left join present p on p.person_id = h.account
    left join decided d on d.person_id = h.account
    where p.person_id is null or p.is_terminated
    union
    select c.kind, c.v, c.person_id, coalesce(d.account_person_id, c.person_id)
    from claims c
    join present p on p.person_id = c.person_id and p.is_terminated
    left join decided d on d.person_id = c.person_id
),
own_new as (
    select c.person_id, l.account
    from claims c
    join leavers l on l.kind = c.kind and l.v = c.v and l.person_id <> c.person_id
    where c.kind = any(%(rules)s)
      and not exists (select 1 from own_known k where k.person_id = c.person_id)
      {gap}
),
own as (
    select person_id, account from own_known
    union
    select person_id, account from own_new
    union
    select c.person_id, c.person_id from claims c
    where not exists (select 1 from own_known k where k.person_id = c.person_id)
      and not exists (select 1 from own_new n where n.person_id = c.person_id)
),
contenders as (
    select h.kind, h.v, h.account, 0 as tier, not h.is_active as inactive,
        cast(null as date) as hire_date, cast(null as date) as start_date, h.account as tie
    from lms_claims h
    union all
    select c.kind, c.v, o.account, case when {had_it} then 1 else 2 end, false, c.hire_date, c.start_date,
        c.person_id
    from claims c
    join own o on o.person_id = c.person_id
),
holder as (
    select distinct on (kind, v) kind, v, account from contenders
    order by kind, v, tier, inactive, hire_date nulls last, start_date nulls last, tie, account
),
conflicts as (
    select c.line_no, c.person_id, c.kind, c.v, c.username, h.account,
        (select min(c2.person_id) from claims c2 join own o2 on o2.person_id = c2.person_id
         where c2.kind = c.kind and c2.v = c.v and o2.account = h.account) as holder_person_id
    from claims c
    join holder h using (kind, v)
    where not exists (select 1 from own o where o.person_id = c.person_id and o.account = h.account)
)
insert into dq.gate_key_conflicts (snapshot_id, line_no, rule, value, held_by)
select %(sid)s, c.line_no,
    case c.kind {rule_names} end,
    c.v, coalesce(c.holder_person_id, c.account)
from conflicts c
where not (c.kind = 'user_name' and c.username is null
           and exists (select 1 from conflicts e where e.line_no = c.line_no and e.kind = 'work_email'))
"""


# Row checks whose verdict depends on other lines (copies, values shared with another person): never carried.
CROSS_LINE_RULES = ("duplicate_row", *KEY_CONFLICT_RULES.values())


def carried_verdicts(conn: psycopg.Connection, snapshot_id: int, carry_from: int) -> list[tuple]:
    """The row-check verdicts (dq.quarantine rows) of the lines the row checks did not see: a line with the
    same text as a line of snapshot `carry_from` (the staging stage's line carry), parsed with the same hints
    and gated by the same checks (the caller's condition), gets that line's verdicts — a row check reads only
    its own line — except the cross-line ones, checked afresh on every line that could fail them."""
    from hrlms.transform.dbt import LINE_CARRY_BY_NUMBER_TABLE, LINE_CARRY_TABLE, SNAPSHOT_TABLE

    # (the carry's copy number is the parsed row's: stg_hris__snapshot_workers takes it from there; a line kept
    # by number is the parsed row of that number)
    return conn.execute(sql.SQL(
        "select %(sid)s, q.entity, lc.line_no, q.rule, q.record_key, q.field, q.value, q.reason, q.related_key "
        "from {carry} lc "
        "join dq.quarantine q on q.snapshot_id = lc.from_snapshot_id and q.entity = 'workers' "
        " and q.line_no = lc.from_line_no and q.rule <> all(%(cross)s) "
        "where lc.snapshot_id = %(sid)s and lc.from_snapshot_id = %(src)s and lc.copy_no = 1 "
        " and not exists (select 1 from dq.gate_key_conflicts k where k.snapshot_id = %(sid)s "
        "                 and k.line_no = lc.line_no) "
        "union all "
        "select %(sid)s, q.entity, q.line_no, q.rule, q.record_key, q.field, q.value, q.reason, q.related_key "
        "from {by_number} n "
        "join dq.quarantine q on q.snapshot_id = n.from_snapshot_id and q.entity = 'workers' "
        " and q.line_no < n.below_line_no and q.rule <> all(%(cross)s) "
        "join {snap} w on w.line_no = q.line_no and w.copy_no = 1 "
        "where n.snapshot_id = %(sid)s and n.from_snapshot_id = %(src)s "
        " and not exists (select 1 from dq.gate_key_conflicts k where k.snapshot_id = %(sid)s "
        "                 and k.line_no = q.line_no)").format(
            carry=sql.SQL(LINE_CARRY_TABLE), by_number=sql.SQL(LINE_CARRY_BY_NUMBER_TABLE),
            snap=sql.SQL(SNAPSHOT_TABLE)),
        {"sid": snapshot_id, "src": carry_from, "cross": list(CROSS_LINE_RULES)}).fetchall()


def identity_settings() -> dict[str, Any]:
    """The identity vars the conflict checks follow (dbt_project.yml: identity_match_rules,
    rehire_min_gap_days), so the gate and int_identity_decisions agree on what a rehire is."""
    from hrlms.transform.dbt import project_vars

    vars_ = project_vars()
    rules = list(vars_.get("identity_match_rules") or [])
    unknown = [r for r in rules if r not in ("employee_number", "work_email")]
    if unknown:
        raise ValueError(f"{DBT_PROJECT}: vars.identity_match_rules: unknown rule(s) {unknown} "
                         f"(known: employee_number, work_email)")
    return {"identity_match_rules": rules, "rehire_min_gap_days": int(vars_.get("rehire_min_gap_days") or 0)}


# schema.sql: the expression indexes whose statistics plan KEY_CONFLICTS_SQL's joins on sync.applied_users
ACCOUNT_KEY_INDEXES = ("applied_users_lower_email_idx", "applied_users_lower_user_name_idx")


def analyze_accounts_if_unplanned(conn: psycopg.Connection) -> bool:
    """ANALYZE sync.applied_users when it has rows but no statistics on lower(email) / lower(user_name) yet
    (only an ANALYZE after their indexes exist collects them; autovacuum's next one waits for a tenth of the
    accounts to change, weeks after the indexes arrive). Without them the planner takes the few changed
    values of a snapshot for as many as the lines and sorts all accounts twice to merge-join them (~3 s at
    1M accounts) instead of looking the values up by index. Returns whether it analyzed."""
    if conn.execute(
            "select not exists (select 1 from sync.applied_users) or (select count(distinct tablename) from pg_stats"
            " where schemaname = 'sync' and tablename = any(%s)) = %s",
            (list(ACCOUNT_KEY_INDEXES), len(ACCOUNT_KEY_INDEXES))).fetchone()[0]:
        return False
    conn.execute("analyze sync.applied_users")
    return True


#: the most values a delta key check looks up among the lines (beyond, reading every line costs no more)
KEY_DELTA_MAX_VALUES = 50_000
# the lines a delta key check reads: those with a value looked up, under any of the three keys (the login falls
# back to the e-mail)
_KEY_DELTA_LINES = (" and (work_email = any(%(c_email)s) or work_email = any(%(c_user)s)"
                    " or username = any(%(c_user)s) or employee_number = any(%(c_number)s))")


def accounts_settled(conn: psycopg.Connection) -> Any:
    """A moment by which every account write begun earlier has committed: a SHARE lock on sync.applied_users waits
    for the writers in flight and is let go at once (writes after it are stamped later: applied_at is the write's
    clock). None when that takes over 10 s: then no later gate builds on this one's key check."""
    try:
        with conn.transaction():
            conn.execute("set local lock_timeout = '10s'")
            conn.execute("lock table sync.applied_users in share mode")
            return conn.execute("select clock_timestamp()").fetchone()[0]
    except psycopg.errors.LockNotAvailable:
        return None


def _new_lines_sql(sid: int, held: int) -> sql.Composed:
    """The line numbers of snapshot `sid` that the staging stage did not carry from snapshot `held` (the carry's
    rows, and the lines it kept by number when it kept them from another snapshot)."""
    from hrlms.transform.dbt import LINE_CARRY_BY_NUMBER_TABLE, LINE_CARRY_TABLE, SNAPSHOT_TABLE

    return sql.SQL(
        "select line_no from {carry} where snapshot_id = {sid} and from_snapshot_id is distinct from {held} "
        "union all select w.line_no from {by_number} n join {snap} w on w.line_no < n.below_line_no "
        "where n.snapshot_id = {sid} and n.from_snapshot_id <> {held}").format(
            carry=sql.SQL(LINE_CARRY_TABLE), by_number=sql.SQL(LINE_CARRY_BY_NUMBER_TABLE),
            snap=sql.SQL(SNAPSHOT_TABLE), sid=sql.Literal(sid), held=sql.Literal(held))


def _kept_new_lines(conn: psycopg.Connection, sid: int, held: int) -> sql.Composed:
    """_new_lines_sql's lines written to a temporary table of this transaction, with statistics; returns the query
    of its line numbers. The gate's queries look them up in the parsed rows: planned over the carry's rows, their
    count was a guess (a third of the lines, on an event run's carry by number), and each query hashed the 1M
    parsed rows (~0.5 s each, three of them) to find a few."""
    conn.execute(sql.SQL("drop table if exists pg_temp.gate_new_lines; "
                         "create temporary table gate_new_lines on commit drop as {}; "
                         "analyze gate_new_lines").format(_new_lines_sql(sid, held)))
    return sql.SQL("select line_no from pg_temp.gate_new_lines")


def _key_check_delta(conn: psycopg.Connection, snapshot_id: int, held: int,
                     new: sql.Composable) -> tuple[dict[str, Any] | None, str]:
    """The values whose claimants may differ from snapshot `held`'s key check: (params for _KEY_DELTA_LINES, how
    many), or (None, why every line must be read).

    A value is shared when two people's lines claim it, or a line claims it that its person's account does not
    hold while another account does (KEY_CONFLICTS_SQL). Every line the staging stage carried from `held` is a
    line of `held`, same text, same parse; lines that are gone only take claimants away. So a value shared now
    and not in `held` is on a line not carried, or involves an account written since `held`'s check: the line
    of its person, or its own values. Looking up those values, and the ones `held` found shared, finds every
    shared value — unless an account was deleted since (a line's value its account held may now be free)."""
    from hrlms.transform.dbt import SNAPSHOT_TABLE

    row = conn.execute("select k.accounts_as_of, k.shared, (select last_at from sync.account_deletes) "
                       "from dq.gate_key_checks k where k.snapshot_id = %s", (held,)).fetchone()
    if row is None:
        return None, f"no key check of snapshot {held} kept"
    as_of, shared, deleted = row
    if deleted is not None and deleted >= as_of:
        return None, "an account was deleted since the last key check"
    changed = conn.execute("select count(*) from sync.applied_users where applied_at >= %s", (as_of,)).fetchone()[0]
    if changed > KEY_DELTA_MAX_VALUES:
        return None, f"{changed} accounts written since the last key check"
    values: dict[str, set[str]] = {k: set() for k in KEY_CONFLICT_RULES}
    for kind, v in shared:
        values[kind].add(v)
    rows = conn.execute(sql.SQL(
        "with changed as materialized ("
        " select person_id, lower(email) as email, lower(user_name) as user_name, employee_number"
        " from sync.applied_users where applied_at >= %(as_of)s) "
        "select w.work_email, w.username, w.employee_number from {snap} w "
        "where w.snapshot_id = %(sid)s and w.copy_no = 1 and w.person_id is not null and w.line_no in ("
        " {new} union select p.line_no from {snap} p where p.person_id in (select person_id from changed)) "
        "union all select email, user_name, employee_number from changed").format(
            snap=sql.SQL(SNAPSHOT_TABLE), new=new),
        {"as_of": as_of, "sid": snapshot_id}).fetchall()
    for email, user_name, number in rows:
        for kind, v in (("work_email", email), ("user_name", email), ("user_name", user_name),
                        ("employee_number", number)):
            if v is not None:
                values[kind].add(v)
    n = sum(map(len, values.values()))
    if n > KEY_DELTA_MAX_VALUES:
        return None, f"{n} values to look up"
    return {"c_email": sorted(values["work_email"]), "c_user": sorted(values["user_name"]),
            "c_number": sorted(values["employee_number"]), "values": n}, ""


def _find_key_conflicts(conn: psycopg.Connection, snapshot_id: int, held: int | None = None,
                        as_of: Any = None, new_lines: sql.Composable | None = None) -> dict[str, Any]:
    """Fill dq.gate_key_conflicts for the snapshot (KEY_CONFLICTS_SQL) and keep its shared values (dq.gate_key_checks,
    with `as_of`: accounts_settled() before). With `held` (a snapshot the staging stage carried lines from) and
    `new_lines` (the query of the lines it did not carry from it: _kept_new_lines), only the lines with a value
    _key_check_delta names are read, when it can. Returns how it checked: lines
    ("all" or "values"), the conflicts found, and with values: from which snapshot, how many values."""
    from hrlms.quality.suites import EMAIL_REGEX
    from hrlms.transform.dbt import SNAPSHOT_TABLE

    ident = identity_settings()
    exists = dict(conn.execute(
        "select n, to_regclass(n) is not null from unnest(array['intermediate.int_identity_decisions',"
        " 'snapshots.snap_workers']) n").fetchall())
    decided = ("select person_id::text, account_person_id::text from intermediate.int_identity_decisions "
               "where account_person_id is not null" if exists["intermediate.int_identity_decisions"] else
               "select cast(null as text) as person_id, cast(null as text) as account_person_id where false")
    history = exists["snapshots.snap_workers"]
    # as the identity model: the leaver's last version before the run's date that was not terminated
    gap = ("and not exists (select 1 from snapshots.snap_workers s where s.person_id = l.person_id"
           " and s.dbt_valid_from < %(day)s and s.employment_status is distinct from 'terminated'"
           " and coalesce(cast(s.dbt_valid_to as date), %(day)s) > %(day)s - %(gap)s)"
           if history and ident["rehire_min_gap_days"] > 0 else "")
    had_it = ("exists (select 1 from snapshots.snap_workers s where s.person_id = c.person_id"
              " and s.dbt_valid_from < %(day)s and (s.dbt_valid_to is null or s.dbt_valid_to >= %(day)s)"
              " and case c.kind when 'work_email' then s.work_email"
              " when 'user_name' then coalesce(s.username, s.work_email) else s.employee_number end = c.v)"
              if history else "false")
    day = conn.execute("select logical_date from raw_hris.snapshots where snapshot_id = %s",
                       (snapshot_id,)).fetchone()[0]
    conn.execute("delete from dq.gate_key_conflicts where snapshot_id = %s", (snapshot_id,))
    delta, why = _key_check_delta(conn, snapshot_id, held, new_lines) \
        if held is not None and as_of is not None and new_lines is not None else \
        (None, "nothing carried" if held is None else "the accounts were not settled")
    # only the held snapshot's check may be needed again (this gate run again; held is this snapshot when its
    # staging was run again)
    conn.execute("delete from dq.gate_key_checks where snapshot_id is distinct from %s", (held,))
    analyze_accounts_if_unplanned(conn)
    cur = conn.execute(
        KEY_CONFLICTS_SQL.format(snapshot_table=SNAPSHOT_TABLE, decided=decided, gap=gap, had_it=had_it,
                                 line_filter=_KEY_DELTA_LINES if delta else "",
                                 rule_names=" ".join(f"when '{k}' then '{r}'" for k, r in KEY_CONFLICT_RULES.items())),
        {"sid": snapshot_id, "day": day, "gap": ident["rehire_min_gap_days"], "email_regex": EMAIL_REGEX,
         "rules": ident["identity_match_rules"], "as_of": as_of, **(delta or {})})
    if delta:
        return {"lines": "values", "values_from_snapshot": held, "values": delta["values"],
                "conflicts": cur.rowcount}
    return {"lines": "all", "why": why, "conflicts": cur.rowcount}


@contextmanager
def gx_lock() -> Iterator[None]:
    """Held while this process reads or writes the GX file context under expectations/gx (suites, validation
    definitions, results, data docs): GX writes those files in place, and two gates on one host (parallel
    Airflow tasks, the test suite's workers) must not interleave. Not re-entrant: take it once."""
    with file_lock(GX_ROOT / "gx" / "uncommitted" / ".hrlms-gx.lock"):
        yield


def _import_gx():
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations  # noqa: F401  (the suites' expectation classes)

    return gx


def preload_gx() -> threading.Thread:
    """Import GX (~3.5 s of a fresh interpreter) in a background thread while the gate's own SQL runs (the
    key conflicts: seconds at 1M workers, in PostgreSQL, on the other core). Whoever needs GX meanwhile waits
    for that import (Python's import lock) instead of starting a second one; a failed import fails again,
    with its error, where GX is used."""
    def run() -> None:
        try:
            _import_gx()
        except Exception as exc:          # reported by the import that needs it
            log.debug("GX preload failed: %s", exc)

    thread = threading.Thread(target=run, name="gx-import", daemon=True)
    thread.start()
    return thread


def get_context():
    """The committed GX file context under expectations/, synchronised with quality/suites.py (take
    gx_lock() around its use)."""
    gx = _import_gx()

    from hrlms.quality.suites import SUITES

    os.environ[URL_VAR] = sqlalchemy_url()
    ctx = gx.get_context(mode="file", project_root_dir=str(GX_ROOT))
    try:
        ds = ctx.data_sources.get(DATASOURCE)
    except (KeyError, ValueError, LookupError):
        ds = ctx.data_sources.add_postgres(DATASOURCE, connection_string="${" + URL_VAR + "}")
    for suite_name, (_entity, _kind, builder, view) in SUITES.items():
        try:
            asset = ds.get_asset(view)
        except LookupError:
            asset = ds.add_table_asset(view, table_name=view, schema_name="dq")
        try:
            batch_def = asset.get_batch_definition("snapshot")
        except (KeyError, ValueError, LookupError):
            batch_def = asset.add_batch_definition_whole_table("snapshot")
        suite = _sync_suite(ctx, suite_name, builder())
        try:
            ctx.validation_definitions.get(suite_name)
        except Exception:
            ctx.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite))
    return ctx


def _comparable(expectations: list) -> list[dict]:
    out = []
    for e in expectations:
        cfg = e.configuration.to_json_dict() if hasattr(e, "configuration") else e.to_json_dict()
        cfg.pop("id", None)
        out.append(cfg)
    return out


def _sync_suite(ctx, name: str, expectations: list):
    import great_expectations as gx

    try:
        suite = ctx.suites.get(name)
    except Exception:
        suite = None
    if suite is not None and _comparable(suite.expectations) == _comparable(expectations):
        return suite
    if suite is None:
        suite = ctx.suites.add(gx.ExpectationSuite(name=name))
    for e in list(suite.expectations):
        suite.delete_expectation(e)
    for e in expectations:
        suite.add_expectation(e)
    suite.save()
    return suite


def _run_suite(ctx, suite_name: str, params: dict, run_name: str, key: str):
    from great_expectations.core.run_identifier import RunIdentifier

    vd = ctx.validation_definitions.get(suite_name)
    return vd.run(
        expectation_parameters=params,
        run_id=RunIdentifier(run_name=run_name),
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["line_no", key],
                       "partial_unexpected_count": 10_000_000, "return_unexpected_index_query": False},
    )


KEEP_VAR = "HRLMS_GX_KEEP_RESULTS"
DOCS_SITE = "local_site"


def keep_results_from_env() -> int:
    """HRLMS_GX_KEEP_RESULTS (default 30): validation results kept per suite in the GX store, and so
    pages in the Data Docs; 0 keeps all. Older ones go: dq.gate_runs / dq.quarantine hold every
    snapshot's outcome, the GX JSON only repeats it, and unpruned it grows by a few files per run forever."""
    keep = env_float(KEEP_VAR, 30)
    if keep < 0 or keep != int(keep):
        raise ValueError(f"environment variable {KEEP_VAR}={os.environ.get(KEEP_VAR)!r} is not a whole number >= 0")
    return int(keep)


def build_docs(ctx, run_names: list[str], keep: int | None = None) -> list:
    """Render this run's validation results only, drop results beyond the newest `keep` per suite (None =
    HRLMS_GX_KEEP_RESULTS), and rebuild the index over what is kept. Returns the rendered result keys.

    "This run's" = the newest stored result per suite and run name: a run name recurs (a snapshot gated
    again, snapshot ids restarting in a rebuilt warehouse) and the older results under it are earlier
    runs, rendered when they ran; rendering them all again (as before) took 43 s of a 45 s gate in a long
    test session. GX's index still reads every stored result on each build, hence the retention."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    with gx_lock():
        ctx = ctx or get_context()
        keep = keep_results_from_env() if keep is None else keep
        store = ctx.validation_results_store
        by_suite: dict[str, list] = {}
        for key in store.list_keys():
            by_suite.setdefault(key.expectation_suite_identifier.name, []).append(key)
        current, dropped = [], []
        for keys in by_suite.values():
            keys.sort(key=lambda k: k.run_id.run_time, reverse=True)
            seen: set[str] = set()
            for k in keys:
                if k.run_id.run_name in run_names and k.run_id.run_name not in seen:
                    seen.add(k.run_id.run_name)
                    current.append(k)
            if keep:
                dropped += [k for k in keys[keep:] if k not in current]
        for key in dropped:
            try:
                store.remove_key(key)
            except OSError as err:          # a concurrent gate pruned it first
                log.debug("validation result %s already gone: %s", key, err)
        from hrlms.quality.suites import SUITES

        suites = [ExpectationSuiteIdentifier(name=n) for n in SUITES]
        # The index drops the pages of removed results itself (skip_and_clean_missing).
        ctx.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=current + suites)
        if dropped:
            site = ctx.variables.data_docs_sites[DOCS_SITE]["store_backend"]["base_directory"]
            for base in (Path(store.store_backend.full_base_directory), Path(ctx.root_directory) / site / "validations"):
                _remove_empty_dirs(base)
        return current


def _remove_empty_dirs(base: Path) -> None:
    """GX's TupleFilesystemStoreBackend.remove_key means to remove the emptied suite/run/time folders
    (`rrmdir`) but never does (`not Path.iterdir()` is always False), so one empty folder per dropped
    result would pile up instead: remove them here, by file operations, as no GX API does."""
    for dirpath, _dirnames, _filenames in os.walk(base, topdown=False):
        if Path(dirpath) != base and not os.listdir(dirpath):   # listed afresh: children may be gone now
            try:
                os.rmdir(dirpath)
            except OSError:             # refilled meanwhile by a concurrent gate
                pass


def _describe(meta: dict, res: Any, snap: dict) -> str:
    r = res.result or {}
    rule, reason = meta.get("rule", "?"), meta.get("reason", "")
    if rule == "row_count":
        return f"{snap['source']}: {reason} (rows: {r.get('observed_value')})"
    col = meta.get("field") or ""
    src_col = snap["columns"].get(col, col)
    lines = sorted(d.get("line_no") for d in (r.get("unexpected_index_list") or []))[:10]
    values = (r.get("partial_unexpected_list") or [])[:3]
    return (f"{snap['source']}: line(s) {', '.join(map(str, lines))}, field {src_col} ({col}): {reason}"
            f" — {r.get('unexpected_count')} row(s), e.g. {values}")


def gate_inputs(snapshots: dict[str, Any], *, max_drop_share: float, max_quarantine_share: float) -> dict[str, Any]:
    """What a gate's outcome depends on, for the build ledger (hrlms.warehouse.builds): the snapshots,
    the thresholds, and the checks themselves (this package's quality code and the GX project)."""
    from hrlms.warehouse.builds import files_digest

    code = [*Path(__file__).parent.glob("*.py"), GX_ROOT / "gx" / "great_expectations.yml"]
    return {"snapshots": dict(sorted(snapshots.items())), "max_drop_share": max_drop_share,
            "max_quarantine_share": max_quarantine_share, "max_growth_factor": max_growth_factor_from_env(),
            "identity": identity_settings(),
            "checks": files_digest([p for p in code if p.is_file()], GX_ROOT.parent)}


def run_name_for(entity: str, snapshot_id: int) -> str:
    return f"{entity}-snapshot-{snapshot_id}"


def max_growth_factor_from_env() -> float:
    """HRLMS_MAX_GROWTH_FACTOR (default 5): a workers snapshot with more than this many times the rows of the
    last good one is rejected (a wrong or duplicated export must not create accounts); 0 turns it off."""
    raw = os.environ.get("HRLMS_MAX_GROWTH_FACTOR")
    try:
        return float(raw) if raw not in (None, "") else 5.0
    except ValueError:
        raise ValueError(f"environment variable HRLMS_MAX_GROWTH_FACTOR={raw!r} is not a number") from None


def run_gate(conn: psycopg.Connection, snapshot_id: int, *, max_drop_share: float = 0.2,
             max_quarantine_share: float = 0.2, max_growth_factor: float | None = None,
             docs: bool = True, carry_from: int | None = None) -> GateResult:
    """Validate one snapshot. `docs=False` leaves the Data Docs to the caller (build_docs once per run).
    `max_growth_factor` None = HRLMS_MAX_GROWTH_FACTOR (default 5). `carry_from`: a workers snapshot that
    these same checks gated completely (the caller knows: hrlms.pipeline.gate); lines the staging stage
    carried from it keep its row verdicts (carried_verdicts) instead of being checked again."""
    from hrlms.quality.suites import SUITES
    from hrlms.transform.dbt import LINE_CARRY_BY_NUMBER_TABLE, LINE_CARRY_TABLE

    snap = _snapshot(conn, snapshot_id)
    entity = snap["entity"]
    if entity != "workers" or carry_from is None or not conn.execute(
            "select exists (select 1 from dq.gate_runs where snapshot_id = %(cf)s and suite = 'workers_rows')"
            " and (exists (select 1 from " + LINE_CARRY_TABLE + " where snapshot_id = %(sid)s"
            "              and from_snapshot_id = %(cf)s)"
            "      or exists (select 1 from " + LINE_CARRY_BY_NUMBER_TABLE + " where snapshot_id = %(sid)s"
            "                 and from_snapshot_id = %(cf)s))",
            {"cf": carry_from, "sid": snapshot_id}).fetchone()[0]:
        carry_from = None
    as_of = accounts_settled(conn) if entity == "workers" else None
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.gate'))")
        keys = _create_gate_views(conn, snapshot_id, entity, carry_from, as_of)
    # An empty snapshot is a batch defect (GX row_count, min 1 row). A snapshot much smaller than the
    # last good one is not rejected here: it flows, and the breaker holds its plan until a person
    # approves or rejects it (hrlms.sync.breaker) — a divestiture is real, a truncated export is not.
    prev = previous_row_count(conn, entity, snapshot_id)
    min_rows = 1
    if prev and snap["rows"] < math.ceil(prev * (1 - max_drop_share)):
        result_hold = (f"{snap['source']}: {snap['rows']} rows, {1 - snap['rows'] / prev:.0%} fewer than the last "
                       f"good snapshot ({prev} rows; limit {max_drop_share:.0%})")
    else:
        result_hold = None

    run_name = run_name_for(entity, snapshot_id)
    result = GateResult(snapshot_id, entity, snap["rows"], 0, hold_reason=result_hold)
    gate_rows: list[tuple] = []
    quarantine: dict[tuple[int, str], tuple] = {}
    with gx_lock():
        ctx = get_context()
        for suite_name, (suite_entity, kind, _builder, _view) in SUITES.items():
            if suite_entity != entity:
                continue
            vr = _run_suite(ctx, suite_name, {"min_rows": min_rows}, run_name, KEY_FIELD[entity])
            failures = []
            for res in vr.results:
                if res.success:
                    continue
                meta = res.expectation_config.meta or {}
                if res.exception_info and res.exception_info.get("raised_exception"):
                    result.batch_failures.append(f"check {meta.get('rule')} could not run: "
                                                 f"{res.exception_info.get('exception_message')}")
                    continue
                failures.append({"rule": meta.get("rule"), "unexpected_count": (res.result or {}).get("unexpected_count")})
                if kind == "batch":
                    result.batch_failures.append(_describe(meta, res, snap))
                    continue
                rule, fld = meta.get("rule", "unknown"), meta.get("field", "")
                for item in (res.result or {}).get("unexpected_index_list") or []:
                    line_no = item.get("line_no")
                    column = fld or next((k for k in item if k not in ("line_no", KEY_FIELD[entity])), "")
                    value = item.get(column, item.get(res.expectation_config.kwargs.get("column", ""), None))
                    if rule == "unparseable_date":      # the flagged value *is* the field's name
                        column, value = str(value), None
                    elif rule == "duplicate_row":       # the whole line repeats an earlier one
                        column, value = None, None
                    quarantine[(line_no, rule)] = (snapshot_id, entity, line_no, rule, item.get(KEY_FIELD[entity]),
                                                   column or None, None if value is None else str(value),
                                                   meta.get("reason", rule), None)
            gate_rows.append((snapshot_id, suite_name, bool(vr.success) if kind == "batch" else True,
                              json.dumps(vr.statistics, default=str), json.dumps(failures, default=str)))

    if carry_from is not None:
        carried = carried_verdicts(conn, snapshot_id, carry_from)
        for row in carried:
            quarantine.setdefault((row[2], row[3]), row)
        result.lines = {"checked": conn.execute("select count(*) from dq.gate_workers").fetchone()[0],
                        "verdicts_carried_from": carry_from, "carried_verdicts": len(carried)}
    if keys:
        result.lines["shared_values"] = keys

    if entity == "workers":   # a shared value: the value itself, and the person who keeps it
        for line_no, rule, value, held_by in conn.execute(
                "select line_no, rule, value, held_by from dq.gate_key_conflicts where snapshot_id = %s",
                (snapshot_id,)):
            if (line_no, rule) in quarantine:
                quarantine[(line_no, rule)] = (*quarantine[(line_no, rule)][:6], value,
                                               quarantine[(line_no, rule)][7], held_by)

    growth = max_growth_factor_from_env() if max_growth_factor is None else max_growth_factor
    if entity == "workers" and prev and growth > 0 and snap["rows"] > growth * prev:
        result.batch_failures.append(
            f"{snap['source']}: {snap['rows']} rows, {snap['rows'] / prev:.1f}x the last good snapshot "
            f"({prev} rows; limit {growth:g}x): a wrong or duplicated export? If the growth is real, run again "
            f"with HRLMS_MAX_GROWTH_FACTOR raised")
        gate_rows = [(s, n, False if n == "workers_batch" else ok, st, f) for s, n, ok, st, f in gate_rows]

    if entity == "workers" and not result.batch_failures:
        q_lines = {k[0] for k in quarantine}
        if snap["rows"] and len(q_lines) > max_quarantine_share * snap["rows"]:
            by_check: dict[str, int] = {}
            for q in quarantine.values():     # (…, rule, record_key, field, …): which checks, on which fields
                name = f"{q[3]} ({snap['columns'].get(q[5], q[5])})" if q[5] else q[3]
                by_check[name] = by_check.get(name, 0) + 1
            top = ", ".join(f"{n} × {name}" for name, n in sorted(by_check.items(), key=lambda x: -x[1])[:3])
            result.batch_failures.append(
                f"{snap['source']}: {len(q_lines)} of {snap['rows']} rows failed row checks "
                f"(limit {max_quarantine_share:.0%}; mostly {top}): is the mapping right for this file?")
            gate_rows = [(s, n, False if n == "workers_batch" else ok, st, f) for s, n, ok, st, f in gate_rows]

    gate_rows.append((snapshot_id, "snapshot_hold", result_hold is None, json.dumps({"previous_rows": prev}),
                      json.dumps([{"rule": "snapshot_shrank", "message": result_hold}] if result_hold else [])))
    with conn.transaction():
        conn.execute("delete from dq.quarantine where snapshot_id = %s", (snapshot_id,))
        conn.execute("delete from dq.gate_runs where snapshot_id = %s", (snapshot_id,))
        with conn.cursor() as cur:
            cur.executemany("insert into dq.gate_runs (snapshot_id, suite, success, statistics, failures) "
                            "values (%s, %s, %s, %s, %s)", gate_rows)
            if quarantine:
                with cur.copy("copy dq.quarantine (snapshot_id, entity, line_no, rule, record_key, field, value,"
                              " reason, related_key) from stdin") as cp:
                    for row in quarantine.values():
                        cp.write_row(row)
    result.quarantined_rows = len({k[0] for k in quarantine})
    for _line, rule in quarantine:
        result.reasons[rule] = result.reasons.get(rule, 0) + 1
    if docs:
        build_docs(ctx, [run_name])
    result.data_docs = str(GX_ROOT / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html")
    if result.batch_failures:
        raise GateFailed("snapshot rejected by the quality gate:\n  " + "\n  ".join(result.batch_failures))
    return result
