"""The change set of a build: who changed since the last completed build, and who is affected without an
edit of their own. Computed once per build of the transform stage (after staging and the gate, before dbt),
kept in `audit.change_sets` / `audit.change_set_people`, and added to `sync.dirty_people`: the people whose
desired LMS state may differ from what the LMS was last given. The plan compares only those accounts
(hrlms.sync.plan), so an ordinary day's diff costs what changed, not the population.

Reasons (a person may have several):

- new, gone, hr_edit — their canonical HR record (every line with their person_id, hashed) differs from
  the base snapshot's;
- quarantine — the gate's verdict on their line changed, or a key they carry (employee number, e-mail)
  appeared on or left a quarantined line (identity matching waits for such lines);
- identity — they share an LMS account with a changed person, or their identity decision is ambiguous
  (re-decided every build); resolution — a person decided their identity since the base build;
- manager_chain — someone above them in the reporting chain (primary or temporary manager, any depth)
  changed, or their manager comes from a fallback rule (the org chain) in the last build and their unit,
  or one above it, changed or holds a changed person (its head may be another now);
- manager — the HR, temporary or resolved manager of a changed person (whether they manage people may
  change). "Changed" here: new, gone, hr_edit, quarantine, identity, resolution, dates or lms;
- org — their org unit, or one above it, was added, removed, moved, renamed, closed or got another head
  (the holding unit's people: those whose HR org code named no unit in the last build);
- dates — one of their own dates reaches its boundary between the base build's logical moment and this
  one, in their time zone: start (minus provision_days_before_start, judged access_lead_hours ahead), the
  day after the last day (minus termination_lookahead_days), a temporary manager's first day and the day
  after their last, a learning or role rule's min/max tenure, an exemption's first day and the day after its last;
- learning_dates — a due date, expiry or renewal window of theirs starts or ends in that span;
- completions — learning records of their LMS account arrived since the base build, or one reaches its
  local day in that span (the holders of the account are named too).
  These two change their compliance status, not what the LMS is given: the plan does not compare them
  (they are not added to sync.dirty_people);
- lms — what we hold of their LMS account was corrected outside a plan (reconcile).

The change set's id is given to dbt: the incremental person models (dbt var incremental_person_models)
delete and recompute only its people (dbt_project/macros/changed_people.sql). A build that did not finish
(a crash in dbt) may have done so in some models already: its people are added to the next change set with
their reasons, and after an unfinished full build the next one is full too.

A full build (everyone dirty) instead, with `built_because`: the first build, HRLMS_REBUILD=always, the
DAG param full_refresh, the dbt project (models, vars, settings it reads), the learning rules, the mapping
hints or the quality checks changed, a learning rule's active window starts or ends, an exemption naming no
person (a whole requirement or rule) starts or ends, the logical moment
went back, a root org unit changed, or the change set holds more than HRLMS_INCREMENTAL_MAX_SHARE of the
population (a full diff is then as cheap).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable

import psycopg
from psycopg.types.json import Jsonb

from hrlms.timing import StepTimes
from hrlms.warehouse import builds

log = logging.getLogger("hrlms.changes")

EVERYONE = "*"
#: Why a person is in a change set, as the run report explains it.
REASONS = {
    "new": "new in the HR file",
    "gone": "no longer in the HR file",
    "hr_edit": "their HR record changed",
    "quarantine": "the gate's verdict on their line, or a quarantined line carrying their key, changed",
    "identity": "they share an LMS account with a changed person, or their identity is still ambiguous",
    "resolution": "a person decided their identity",
    "manager_chain": "someone above them changed, or their manager comes from a fallback rule",
    "manager": "the manager of a changed person",
    "org": "their org unit or one above it changed",
    "dates": "one of their own dates (start, last day, temporary manager, tenure, exemption) was reached",
    "learning_dates": "a due date, expiry or renewal window of theirs started or ended (not sent to the LMS)",
    "completions": "learning records of their account arrived or reached their local day",
    "lms": "our record of their LMS account was corrected (reconcile)",
}

# One hash per person over all of their lines (row(...)::text tells NULL from ''): the line's hash for a
# person on one line, else the hash of their lines' sorted hashes. Only the people on several lines go
# through the ordered aggregate: PostgreSQL 15 sorts its input once per group, which for a million
# one-line people cost more than hashing their lines (0.97 s -> 0.71 s at 100k workers).
_RAW_COLUMNS = ("person_id, employee_number, first_name, last_name, preferred_name, work_email, username, "
                "employment_status, employment_type, hire_date, start_date, termination_date, last_day_of_work, "
                "job_code, job_title, job_family, org_unit_code, manager_person_id, location_code, country, "
                "time_zone, secondary_manager_person_ids, temporary_manager_person_id, temporary_manager_from, "
                "temporary_manager_until")
_PERSON_HASHES = f"""
    with lines as materialized (
        select nullif(btrim(person_id), '') as person_id, md5(row({_RAW_COLUMNS})::text) as lh
        from raw_hris.worker_lines where _snapshot_id = %s and nullif(btrim(person_id), '') is not null
    ), people as (
        select person_id, min(lh) as lh, count(*) as lines from lines group by 1
    )
    select person_id, lh as h from people where lines = 1
    union all
    select person_id, md5(string_agg(lh, ',' order by lh)) from lines
    where person_id in (select person_id from people where lines > 1)
    group by 1
"""
# The same people as comparing person hashes, from the staging stage's line carry when every line it
# carried came from the base snapshot: a person is edited when one of their lines is not a carried copy of a
# base line, or one of their base lines is no line's source (an edited, removed or — harmlessly — extra
# copied line); new and gone as their lines appear in one snapshot only. A line's copies change no hash
# here but do change its quarantine (duplicate_row), which names the person below.
_EDITS_FROM_CARRIED_LINES = """
    insert into cs_found
    with touched as materialized (
        -- the people of the current lines that were parsed, not carried
        select nullif(btrim(w.person_id), '') as person_id
        from {carry} lc
        join raw_hris.worker_lines w on w._snapshot_id = %(cur)s and w._line_no = lc.line_no
        where lc.snapshot_id = %(cur)s and lc.from_line_no is null
        union
        -- and of the base lines no current line was carried from
        select nullif(btrim(b.person_id), '') from raw_hris.worker_lines b
        where b._snapshot_id = %(base)s
          and not exists (select 1 from {carry} lc where lc.snapshot_id = %(cur)s and lc.from_line_no = b._line_no)
    )
    -- (each snapshot's lines read for the few touched people only: 1M lines, 5,535 touched: 4.7 -> 1.7 s)
    select t.person_id,
           case when b.person_id is null then 'new' when c.person_id is null then 'gone' else 'hr_edit' end
    from touched t
    left join (select distinct nullif(btrim(person_id), '') as person_id from raw_hris.worker_lines
               where _snapshot_id = %(base)s and nullif(btrim(person_id), '') in (select person_id from touched)) b
        on b.person_id = t.person_id
    left join (select distinct nullif(btrim(person_id), '') as person_id from raw_hris.worker_lines
               where _snapshot_id = %(cur)s and nullif(btrim(person_id), '') in (select person_id from touched)) c
        on c.person_id = t.person_id
    where t.person_id is not null
"""

# _EDITS_FROM_CARRIED_LINES when the staging stage carried the base snapshot's lines by their numbers (an event
# run: both snapshots are the same HR file with the lines of people events changed after it; every file line of
# a person no event changed is carried to the same number). Only the events' people can be touched, and their
# lines are known without reading a snapshot: the current snapshot's event lines (raw_hris.hr_event_lines), and
# in the base its own event lines or else the file lines the current events replaced (file_line_no). The same
# people as the general query, by index and one scan of the carry's line numbers (1M workers: 1.6 s → ~0.1 s).
_EDITS_FROM_EVENT_LINES = """
    insert into cs_found
    with cur_lines as materialized (
        select line_no, person_id, file_line_no from raw_hris.hr_event_lines where snapshot_id = %(cur)s
    ),
    base_events as materialized (
        select line_no, person_id from raw_hris.hr_event_lines where snapshot_id = %(base)s
    ),
    base_lines as materialized (
        -- the base's lines of those people: its event lines, else their file lines
        select line_no, person_id from base_events
        union all
        select file_line_no, person_id from cur_lines
        where file_line_no > 0 and person_id not in (select person_id from base_events)
    ),
    carry as materialized (
        -- the carry of the current event lines (by content; the file lines before them were carried by number)
        select line_no, from_line_no from {carry}
        where snapshot_id = %(cur)s and line_no >= (select min(line_no) from cur_lines)
    ),
    touched as (
        select c.person_id from cur_lines c join carry lc on lc.line_no = c.line_no where lc.from_line_no is null
        union
        select b.person_id from base_lines b
        where b.line_no not in (select from_line_no from carry where from_line_no is not null)
    )
    select t.person_id,
           case when not exists (select 1 from base_lines b where b.person_id = t.person_id) then 'new'
                when not exists (select 1 from cur_lines c where c.person_id = t.person_id) then 'gone'
                else 'hr_edit' end
    from touched t
"""


# The seeds' lines in the base snapshot (their unit and manager there, as the parse trims them).
_SEED_BASE_LINES = """
    create temp table cs_seed_base on commit drop as
    {numbers}
    select nullif(btrim(w.person_id), '') as person_id, nullif(upper(btrim(w.org_unit_code)), '') as org_unit_code,
           nullif(btrim(w.manager_person_id), '') as manager_person_id
    from raw_hris.worker_lines w
    where w._snapshot_id = %(base)s and nullif(btrim(w.person_id), '') in (select person_id from cs_seeds)
    {line_filter}
"""
# Their numbers when the staging carried the base by line numbers (_EDITS_FROM_EVENT_LINES holds): a seed's base
# lines are the base's event lines of them, else the file lines their current event lines replace, else (no event
# changed them) the file lines of the same numbers as their current lines.
_SEED_BASE_LINE_NUMBERS = """
    with base_events as materialized (
        select line_no, person_id from raw_hris.hr_event_lines where snapshot_id = %(base)s
    ),
    numbers as (
        select line_no from base_events where person_id in (select person_id from cs_seeds)
        union all
        select file_line_no from raw_hris.hr_event_lines
        where snapshot_id = %(cur)s and file_line_no > 0 and person_id in (select person_id from cs_seeds)
          and person_id not in (select person_id from base_events)
        union all
        select r.line_no from staging.stg_hris__snapshot_workers r
        where r.person_id in (select person_id from cs_seeds)
          and r.line_no < (select min(line_no) from raw_hris.hr_event_lines where snapshot_id = %(cur)s)
    )
"""


def _carried_by_line_number(conn: psycopg.Connection, cur: int, base: int) -> bool:
    """The staging stage built snapshot `cur` from `base` by line numbers (macros/hris_workers.sql
    hris_line_carry_delta, as its ledger row records: that pre-hook refuses a carry that does not cover every line
    once, so _lines_carried_from holds too), and both snapshots' event lines name the file lines they replace
    (_EDITS_FROM_EVENT_LINES holds)."""
    staged = builds.recorded(conn, "staging")
    if not (staged and staged["state"] == "built"
            and ((staged["inputs"].get("snapshots") or {}).get("workers") or [None])[0] == cur
            and ((staged["detail"] or {}).get("lines") or {}).get("by_line_number_from") == base):
        return False
    return conn.execute(
        """select exists (select 1 from raw_hris.hr_event_lines where snapshot_id = %(cur)s)
                  and not exists (select 1 from raw_hris.hr_event_lines
                                  where snapshot_id in (%(cur)s, %(base)s) and file_line_no is null)""",
        {"cur": cur, "base": base}).fetchone()[0]


def _lines_carried_from(conn: psycopg.Connection, cur: int, base: int) -> bool:
    """The staging stage carried lines of snapshot `cur` from snapshot `base` and from no other, and its line
    carry covers every line of `cur` (_EDITS_FROM_CARRIED_LINES holds)."""
    from hrlms.transform.dbt import LINE_CARRY_TABLE

    if conn.execute("select to_regclass(%s) is null", (LINE_CARRY_TABLE,)).fetchone()[0]:
        return False
    lines, carried, others = conn.execute(
        f"select count(*), count(from_snapshot_id), count(*) filter (where from_snapshot_id <> %s) "
        f"from {LINE_CARRY_TABLE} where snapshot_id = %s", (base, cur)).fetchone()
    expected = conn.execute("select row_count from raw_hris.snapshots where snapshot_id = %s", (cur,)).fetchone()
    return carried > 0 and others == 0 and expected is not None and lines == expected[0]


_ORG_HASHES = """
    select nullif(upper(btrim(org_unit_code)), '') as code, min(nullif(upper(btrim(parent_org_unit_code)), '')) as parent,
           md5(string_agg(md5(row(o.*)::text), ',' order by md5(row(o.*)::text))) as h
    from (select org_unit_code, name, parent_org_unit_code, type, status, manager_person_id
          from raw_hris.org_units where _snapshot_id = %s) o
    where nullif(btrim(org_unit_code), '') is not null
    group by 1
"""

#: _ORG_HASHES without the hashes: the parents the org-fallback walk needs on a build on the same org snapshot as
#: its base (1M workers' 112,567 units: 3.9 s for the two hashings)
_ORG_PARENTS = """
    select nullif(upper(btrim(org_unit_code)), '') as code, min(nullif(upper(btrim(parent_org_unit_code)), '')) as parent
    from raw_hris.org_units where _snapshot_id = %s and nullif(btrim(org_unit_code), '') is not null
    group by 1
"""


def _by_index(x, sql: str, params: Any = None) -> None:
    """Run a recursive walk with each step's rows looked up by index (nested loops). The planner cannot know
    how many rows a step finds and guessed tens of thousands: it merge-joined every step with the whole edge
    table (1M workers: 2.2 s per level, 7 s for day 2's reporting chains, against milliseconds by index).
    An error aborts the transaction, and the settings with it: nothing to restore then."""
    x("set local enable_hashjoin = off")
    x("set local enable_mergejoin = off")
    x(sql, params)
    x("set local enable_hashjoin to default")
    x("set local enable_mergejoin to default")


# The reasons that change a person's own state (active, identity, manager): what their reports' and their
# managers' rows depend on.
_SEED_REASONS = "'new', 'gone', 'hr_edit', 'quarantine', 'identity', 'resolution', 'dates', 'lms'"


def max_share() -> float:
    value = os.environ.get("HRLMS_INCREMENTAL_MAX_SHARE", "0.25")
    try:
        share = float(value)
    except ValueError:
        raise ValueError(f"HRLMS_INCREMENTAL_MAX_SHARE must be a number between 0 and 1, not {value!r}") from None
    if not 0 <= share <= 1:
        raise ValueError(f"HRLMS_INCREMENTAL_MAX_SHARE must be between 0 and 1, not {value!r}")
    return share


@dataclass
class ChangeSet:
    change_set_id: int
    full_build: bool
    built_because: str
    people: int = 0
    population: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    base_change_set_id: int | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)     # seconds per step of the computation

    def summary(self) -> dict[str, Any]:
        return {"change_set_id": self.change_set_id, "full_build": self.full_build,
                "built_because": self.built_because, "people": self.people, "population": self.population,
                "reasons": self.counts, "base_change_set_id": self.base_change_set_id, "seconds": self.seconds,
                "timings": self.timings}


def build_inputs(conn: psycopg.Connection, snapshots: dict[str, int]) -> dict[str, Any]:
    """What makes a build full when it changes: everything every person's rows are derived from."""
    from hrlms.quality.gate import gate_inputs
    from hrlms.settings import Settings
    from hrlms.transform import dbt

    settings = Settings.from_env()
    hints = dict(conn.execute("select entity, hints from raw_hris.snapshots where snapshot_id = any(%s)",
                              ([snapshots["workers"], snapshots.get("org_units", -1)],)).fetchall())
    rules = conn.execute("select coalesce(jsonb_agg(jsonb_build_array(ruleset, checksum) order by ruleset), '[]') "
                         "from learning.rule_sets where ruleset = 'live'").fetchone()[0]
    checks = gate_inputs({}, max_drop_share=settings.max_drop_share,
                         max_quarantine_share=settings.max_quarantine_share)
    checks.pop("snapshots")
    return builds.jsonable({"dbt": dbt.project_digest(), "rules": rules, "hints": hints, "checks": checks})


_INPUT_NAMES = {"dbt": "the dbt project (models, vars or the settings it reads)", "rules": "the learning rules",
                "hints": "the mapping (parse hints of the snapshot)", "checks": "the quality checks"}


def compute(conn: psycopg.Connection, run_key: str, snapshots: dict[str, int], logical_ts: datetime, *,
            full_refresh: bool = False) -> ChangeSet:
    """Compute and store the change set of this build (replacing an unfinished one of the same run)."""
    started = time.time()
    inputs = build_inputs(conn, snapshots)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.changes'))")
        base = conn.execute(
            """select change_set_id, snapshot_id, org_snapshot_id, logical_ts, inputs, created_at
               from audit.change_sets where state = 'built' order by change_set_id desc limit 1""").fetchone()
        # Builds since the base that did not finish (a crash in dbt, a rerun of the run): an incremental build
        # may have recomputed their people in some models already, so they are recomputed again (with their
        # reasons); after a full build that did not finish, every model may hold its rows: full again.
        unfinished = _unfinished(conn, base[0] if base else None)
        conn.execute("delete from audit.change_sets where run_key = %s and state = 'computed'", (run_key,))
        why = _full_because(conn, base, inputs, logical_ts, full_refresh) or unfinished
        cs_id = conn.execute(
            """insert into audit.change_sets (run_key, snapshot_id, org_snapshot_id, logical_ts, inputs,
                   base_change_set_id, full_build, built_because)
               values (%s, %s, %s, %s, %s, %s, %s, %s) returning change_set_id""",
            (run_key, snapshots["workers"], snapshots.get("org_units"), logical_ts, Jsonb(inputs),
             base[0] if base else None, bool(why), why or "")).fetchone()[0]
        population = conn.execute("select count(distinct person_id) from staging.stg_hris__snapshot_workers "
                                  "where person_id is not null").fetchone()[0]
        cs = ChangeSet(cs_id, bool(why), why or "", population=population, base_change_set_id=base[0] if base else None)
        if not why:
            cs.timings = StepTimes()
            why = _collect(conn, base, snapshots, logical_ts, cs.timings)
            conn.execute("drop view if exists cs_rows")
        if why:
            cs.full_build, cs.built_because = True, why
        else:
            counts = dict(conn.execute(
                "select r, count(*) from cs_people, unnest(reasons) r group by r order by r").fetchall())
            people = conn.execute("select count(*) from cs_people").fetchone()[0]
            limit = max_share()
            if limit < 1 and population and people > limit * population:
                why = (f"the change set holds {people:,} of {population:,} people "
                       f"({people / population:.0%} > HRLMS_INCREMENTAL_MAX_SHARE {limit:.0%}): a full build")
                cs.full_build, cs.built_because = True, why
            else:
                cs.people, cs.counts = people, counts
                cs.built_because = (f"{people:,} of {population:,} people changed or affected since "
                                    f"change set {base[0]}")
                conn.execute("insert into audit.change_set_people (change_set_id, person_id, reasons) "
                             "select %s, person_id, reasons from cs_people", (cs_id,))
                # dbt reads the change set right away, before autovacuum would analyze it: without statistics
                # the planner takes it for a few rows and joins the models' large tables to it by nested loops
                # (int_learning_status at 100k: 4.1 s instead of 0.1 s)
                conn.execute("analyze audit.change_set_people")
                conn.execute(   # a due date, an expiry or a completion changes nothing the LMS is given
                    """insert into sync.dirty_people (person_id, reasons, change_set_id)
                       select person_id, reasons, %s from cs_people
                       where not reasons <@ array['learning_dates', 'completions']
                       on conflict (person_id) do update set change_set_id = excluded.change_set_id,
                           marked_at = clock_timestamp(),
                           reasons = array(select distinct r from unnest(sync.dirty_people.reasons || excluded.reasons) r
                                           order by r)""", (cs_id,))
            conn.execute("drop table if exists cs_people")
        if cs.full_build:
            cs.people = population
            # the next build compares with this snapshot's hashes
            x = conn.execute
            x("delete from audit.person_hashes where snapshot_id <> %s", (snapshots["workers"],))
            if not x("select exists (select 1 from audit.person_hashes where snapshot_id = %s)",
                     (snapshots["workers"],)).fetchone()[0]:
                x(f"insert into audit.person_hashes (snapshot_id, person_id, h) "
                  f"select %s, person_id, h from ({_PERSON_HASHES}) ph", (snapshots["workers"], snapshots["workers"]))
            conn.execute(
                """insert into sync.dirty_people (person_id, reasons, change_set_id) values (%s, %s, %s)
                   on conflict (person_id) do update set change_set_id = excluded.change_set_id,
                       marked_at = clock_timestamp(), reasons = excluded.reasons""",
                (EVERYONE, ["full_build"], cs_id))
        cs.seconds = round(time.time() - started, 3)
        conn.execute("update audit.change_sets set full_build = %s, built_because = %s, counts = %s, people = %s, "
                     "population = %s where change_set_id = %s",
                     (cs.full_build, cs.built_because, Jsonb(cs.counts), cs.people,
                      population, cs_id))
    log.info("change set %s: %s", cs_id, cs.built_because)
    return cs


def _unfinished(conn: psycopg.Connection, base_id: int | None) -> str:
    """Keep the people of the change sets computed after the base build and never built in the temp table
    cs_unfinished (person_id, reason); returns why this build must be full ("" when it need not)."""
    rows = conn.execute("select change_set_id, run_key, full_build from audit.change_sets "
                        "where state = 'computed' and change_set_id > %s order by change_set_id",
                        (base_id or 0,)).fetchall()
    conn.execute("create temp table cs_unfinished on commit drop as "
                 "select p.person_id, r as reason from audit.change_set_people p, unnest(p.reasons) r "
                 "where p.change_set_id = any(%s)", ([r[0] for r in rows],))
    full = [f"{run_key} (change set {cs_id})" for cs_id, run_key, full_build in rows if full_build]
    return f"a full build that did not finish: {', '.join(full)}" if full else ""


def built(conn: psycopg.Connection, change_set_id: int) -> None:
    """The build of this change set completed: it is the base of the next one."""
    with conn.transaction():
        conn.execute("update audit.change_sets set state = 'built' where change_set_id = %s", (change_set_id,))


def discard(conn: psycopg.Connection, change_set_id: int) -> None:
    """An empty change set whose build is not needed (nothing was due): forgotten, so that the next
    change set is computed from the last built one and covers the whole span since."""
    with conn.transaction():
        conn.execute("delete from audit.change_sets where change_set_id = %s and state = 'computed'",
                     (change_set_id,))


def latest_built(conn: psycopg.Connection) -> int | None:
    row = conn.execute("select max(change_set_id) from audit.change_sets where state = 'built'").fetchone()
    return row[0] if row else None


def mark_dirty(conn: psycopg.Connection, person_ids: Iterable[str], reason: str) -> None:
    """Name people whose LMS state must be compared again by the next plan (e.g. reconcile corrected
    what we hold of their account). Part of the caller's transaction."""
    ids = sorted({p for p in person_ids if p})
    if not ids:
        return
    conn.execute(
        """insert into sync.dirty_people (person_id, reasons)
           select p, array[%s] from unnest(%s::text[]) p
           on conflict (person_id) do update set marked_at = clock_timestamp(),
               reasons = array(select distinct r from unnest(sync.dirty_people.reasons || excluded.reasons) r
                               order by r)""", (reason, ids))


def _full_because(conn, base, inputs: dict[str, Any], logical_ts: datetime, full_refresh: bool) -> str:
    if not builds.skipping_enabled():
        return "HRLMS_REBUILD=always"
    if full_refresh:
        return "full_refresh requested"
    if base is None:
        return "first build (no completed build to compare with)"
    changed = [k for k in ("dbt", "rules", "hints", "checks") if inputs.get(k) != base[4].get(k)]
    if changed:
        return "changed since the last build: " + ", ".join(_INPUT_NAMES[k] for k in changed)
    if logical_ts < base[3]:
        return (f"the logical moment went back ({logical_ts.isoformat()} is before the last build's "
                f"{base[3].isoformat()})")
    # (an exemption naming no person applies to everyone its requirement or rule reaches)
    for what, kind, day in conn.execute(
            """select what, case when d = starts then 'starts' else 'ends' end, d
               from (select 'learning rule ' || rule_id, active_from, active_until + 1 from learning.rules
                     where ruleset = 'live'
                     union all
                     select 'role rule ' || rule_id, active_from, active_until + 1 from learning.role_rules
                     where ruleset = 'live'
                     union all
                     select 'exemption ' || exemption_no, since, until + 1 from learning.exemptions
                     where ruleset = 'live' and person_id is null) w (what, starts, ends),
                    unnest(array[starts, ends]) d
               where d > (%(t0)s at time zone 'Etc/GMT+12')::date and d <= (%(t)s at time zone 'Etc/GMT-14')::date
               order by 3, 1, 2""",
            {"t0": base[3], "t": logical_ts}).fetchall():
        return f"{what} {kind} its active window on {day}"
    return ""


def _collect(conn: psycopg.Connection, base, snapshots: dict[str, int], logical_ts: datetime,
             timings: StepTimes) -> str:
    """Fill the temp table cs_people (person_id, reasons) for a build compared with `base`; returns why the
    build must be full instead ("" when it need not)."""
    base_id, base_snap, base_org, base_ts, _inputs, base_at = base
    cur, org = snapshots["workers"], snapshots.get("org_units")
    from hrlms.transform.dbt import LINE_CARRY_TABLE, project_vars

    v = project_vars()
    p = {"cur": cur, "base": base_snap, "org": org if org is not None else -1,
         "base_org": base_org if base_org is not None else -1, "t": logical_ts, "t0": base_ts, "base_at": base_at,
         "default_tz": str(v.get("default_time_zone") or "UTC"),
         "provision": int(v.get("provision_days_before_start") or 0),
         "lead": timedelta(hours=float(v.get("access_lead_hours") or 0)),
         "lookahead": int(v.get("termination_lookahead_days") or 0)}
    x = conn.execute
    p["tenure"] = [r[0] for r in x(
        """select distinct n from (select min_tenure_days, max_tenure_days from learning.rules where ruleset = 'live'
                                   union all
                                   select min_tenure_days, max_tenure_days from learning.role_rules
                                   where ruleset = 'live') r,
                unnest(array[r.min_tenure_days, r.max_tenure_days + 1]) n
           where n is not null order by 1""").fetchall()]
    mark = timings.mark                        # seconds per step, in the change set's record

    x("create temp table cs_found (person_id text, reason text) on commit drop")
    x("insert into cs_found select person_id, reason from cs_unfinished")   # builds that did not finish
    # (carried by number: the staging's pre-hook checked that the carry covers every line once, all from the base)
    by_number = cur != base_snap and _carried_by_line_number(conn, cur, base_snap)
    carried = by_number or (cur != base_snap and _lines_carried_from(conn, cur, base_snap))
    if cur == base_snap:
        pass                                   # the same file again (ingest keeps one snapshot per content)
    elif by_number:
        x(_EDITS_FROM_EVENT_LINES.format(carry=LINE_CARRY_TABLE), p)
    elif carried:
        x(_EDITS_FROM_CARRIED_LINES.format(carry=LINE_CARRY_TABLE), p)
    else:
        # One hash per person and snapshot, kept for the base of the next build (the base's were kept by the
        # last build; a base from before this table existed, or whose build used the line carry, is hashed now).
        for snap in (base_snap, cur):
            if not x("select exists (select 1 from audit.person_hashes where snapshot_id = %s)", (snap,)).fetchone()[0]:
                x(f"insert into audit.person_hashes (snapshot_id, person_id, h) select %s, person_id, h "
                  f"from ({_PERSON_HASHES}) ph", (snap, snap))
        x("""insert into cs_found
             select coalesce(c.person_id, b.person_id),
                    case when b.person_id is null then 'new' when c.person_id is null then 'gone' else 'hr_edit' end
             from (select person_id, h from audit.person_hashes where snapshot_id = %(cur)s) c
             full join (select person_id, h from audit.person_hashes where snapshot_id = %(base)s) b
               on b.person_id = c.person_id
             where c.h is distinct from b.h""", p)
    # only the base of the next build is needed (an event run by line numbers leaves them: its delete read the
    # million hashes a full build keeps, ~0.35 s; the hashes of a snapshot never change, the next one deletes them)
    if not by_number:
        x("delete from audit.person_hashes where snapshot_id not in (%(cur)s, %(base)s)", p)
    mark("hr_edits_event_lines" if by_number else "hr_edits_carried" if carried else "hr_edits")
    # The run's parsed rows (staging.stg_hris__snapshot_workers holds this snapshot) for relations and dates.
    # (a view, not a copy: most steps look a few people up by the rows' person_id index, and a copy of every
    # worker's row with its analyze cost ~1 s at 1M workers per event run; compute drops it)
    x("""create temp view cs_rows as
         select person_id, manager_person_id, temporary_manager_person_id, org_unit_code, time_zone,
                coalesce(start_date, hire_date) as start_on, coalesce(last_day_of_work, termination_date) as last_on,
                temporary_manager_from, temporary_manager_until, employee_number, work_email
         from staging.stg_hris__snapshot_workers where person_id is not null""")
    mark("rows")
    # Quarantine: the verdict on a person's lines, and the keys on blocking quarantined lines.
    x("""insert into cs_found
         select coalesce(c.k, b.k), 'quarantine' from
           (select record_key as k, string_agg(distinct rule, ',' order by rule) as r from dq.quarantine
            where snapshot_id = %(cur)s and entity = 'workers' and record_key is not null group by 1) c
           full join
           (select record_key as k, string_agg(distinct rule, ',' order by rule) as r from dq.quarantine
            where snapshot_id = %(base)s and entity = 'workers' and record_key is not null group by 1) b
           on b.k = c.k
         where c.r is distinct from b.r""", p)
    x("""create temp table cs_qkeys on commit drop as
         (select * from hrlms_util.quarantined_worker_keys(%(cur)s)
          except select * from hrlms_util.quarantined_worker_keys(%(base)s))
         union
         (select * from hrlms_util.quarantined_worker_keys(%(base)s)
          except select * from hrlms_util.quarantined_worker_keys(%(cur)s))""", p)
    x("""insert into cs_found
         select r.person_id, 'quarantine' from cs_rows r join cs_qkeys k on k.employee_number = r.employee_number
         union
         select r.person_id, 'quarantine' from cs_rows r join cs_qkeys k on k.work_email = r.work_email
         union
         select a.person_id, 'quarantine' from sync.applied_users a join cs_qkeys k
           on k.employee_number = a.employee_number
         union
         select a.person_id, 'quarantine' from sync.applied_users a join cs_qkeys k on k.work_email = lower(a.email)""")
    mark("quarantine")
    # Dates crossing their boundary in the person's own zone between the base build and this one.
    # Only if a local date changes at some UTC offset (every zone's offset is a multiple of 15 minutes within
    # UTC-12 … UTC+14): builds minutes apart (event runs) mostly find none, and read no one's row for it.
    crossing = x("""select exists (
        select 1 from generate_series(-720, 840, 15) m, lateral (select interval '1 minute' * m as o) z
        where (%(t0)s::timestamptz at time zone 'UTC' + z.o)::date <> (%(t)s::timestamptz at time zone 'UTC' + z.o)::date
           or ((%(t0)s::timestamptz + %(lead)s) at time zone 'UTC' + z.o)::date
              <> ((%(t)s::timestamptz + %(lead)s) at time zone 'UTC' + z.o)::date)""", p).fetchone()[0]
    if crossing:
        # (the local dates of each time zone written once: pg_timezone_names reads the zone database per call)
        x("""create temp table cs_zones on commit drop as
             select r.time_zone, (%(t0)s::timestamptz at time zone z.name)::date as d0,
                    (%(t)s::timestamptz at time zone z.name)::date as d1,
                    ((%(t0)s::timestamptz + %(lead)s) at time zone z.name)::date as s0,
                    ((%(t)s::timestamptz + %(lead)s) at time zone z.name)::date as s1
             from (select distinct time_zone from cs_rows) r
             left join pg_catalog.pg_timezone_names tz on tz.name = r.time_zone
             cross join lateral (select coalesce(tz.name, %(default_tz)s) as name) z""", p)
        x("""insert into cs_found
             with rows as (
                 select r.*, zones.d0, zones.d1, zones.s0, zones.s1
                 from cs_rows r
                 join cs_zones zones on zones.time_zone is not distinct from r.time_zone
                 where zones.d1 > zones.d0 or zones.s1 > zones.s0
             )
             select person_id, 'dates' from rows
             where start_on - %(provision)s > s0 and start_on - %(provision)s <= s1
                or last_on - %(lookahead)s + 1 > d0 and last_on - %(lookahead)s + 1 <= d1
                or temporary_manager_from > d0 and temporary_manager_from <= d1
                or temporary_manager_until + 1 > d0 and temporary_manager_until + 1 <= d1
                or exists (select 1 from unnest(%(tenure)s::int[]) n where n > d0 - start_on and n <= d1 - start_on)""", p)
    mark("dates")
    # Learning dates (due, expiry, renewal, exemptions) reached in the span in the person's own zone: the
    # candidates in the span of any zone (UTC-12 … UTC+14), then judged in their zone (cs_zones); a person
    # without a row in this snapshot keeps the broad test. (The broad test alone named everyone with such
    # a date on the run's UTC day in each of the day's hourly runs.)
    lo, hi = "(%(t0)s::timestamptz at time zone 'Etc/GMT+12')::date", "(%(t)s::timestamptz at time zone 'Etc/GMT-14')::date"
    in_zone = f"""left join cs_rows r on r.person_id = c.person_id
                  left join cs_zones z on r.person_id is not null and z.time_zone is not distinct from r.time_zone
                  where case when z.d0 is null then c.d > {lo} and c.d <= {hi} else c.d > z.d0 and c.d <= z.d1 end"""
    if not crossing:   # no local date changed in any zone: only people without a row keep the broad test
        in_zone = f"""left join cs_rows r on r.person_id = c.person_id
                      where r.person_id is null and c.d > {lo} and c.d <= {hi}"""
    status = next((t for t in ("intermediate.int_learning_status", "marts.learning_compliance_status")
                   if x("select to_regclass(%s) is not null", (t,)).fetchone()[0]), None)
    if status:   # one range per date column: int_learning_status indexes each (due_on + 1 > lo: due_on >= lo)
        x(f"""insert into cs_found
              select c.person_id, 'learning_dates' from (
                  select person_id, due_on + 1 as d from {status} where due_on >= {lo} and due_on < {hi}
                  union all
                  select person_id, expires_on from {status} where expires_on > {lo} and expires_on <= {hi}
                  union all
                  select person_id, renewal_opens_on from {status}
                  where renewal_opens_on > {lo} and renewal_opens_on <= {hi}) c
              {in_zone}""", p)
    x(f"""insert into cs_found
          select c.person_id, 'dates' from (
              select person_id, d from learning.exemptions, unnest(array[since, until + 1]) d
              where ruleset = 'live' and person_id is not null and d > {lo} and d <= {hi}) c
          {in_zone}""", p)
    mark("learning_dates")
    # Completions that arrived since the base build (the events are attributed by account or e-mail).
    x("""insert into cs_found
         select coalesce(s.actor_account_name, r.person_id), 'completions'
         from raw_lms.xapi_statements s
         left join cs_rows r on s.actor_account_name is null and r.work_email = lower(replace(s.actor_mbox, 'mailto:', ''))
         where s.loaded_at > %(base_at)s
         union
         select coalesce(t.person_id, r.person_id), 'completions'
         from raw_hris.snapshots sn join raw_lms.transcripts t on t._snapshot_id = sn.snapshot_id
         left join cs_rows r on t.person_id is null and r.work_email = lower(btrim(t.work_email))
         where sn.entity = 'transcripts' and sn.loaded_at > %(base_at)s""", p)
    # Completions and progress already stored whose local day the run reaches now: an event counts from its
    # local date on (learning_compliance_status), which is after t0's local date and not after t's when
    # t0 < occurred_at < t + 1 day.
    if x("select to_regclass('intermediate.int_learning_events') is not null").fetchone()[0]:
        x("""insert into cs_found
             select coalesce(person_id, account_person_id), 'completions' from intermediate.int_learning_events
             where occurred_at > %(t0)s and occurred_at < %(t)s::timestamptz + interval '1 day'
               and coalesce(person_id, account_person_id) is not null""", p)
    mark("completions")
    # Identity: decisions made by people since the base build; accounts shared with changed people;
    # ambiguous decisions (re-decided every build).
    x("""insert into cs_found
         select person_id, 'resolution' from sync.identity_resolutions where resolved_at > %(base_at)s
         union
         select account_person_id, 'resolution' from sync.identity_resolutions
         where resolved_at > %(base_at)s and account_person_id is not null""", p)
    has_decisions = x("select to_regclass('intermediate.int_identity_decisions') is not null").fetchone()[0]
    if has_decisions:
        x("""insert into cs_found
             select d.person_id, 'identity' from intermediate.int_identity_decisions d where d.is_ambiguous
             union
             select d.person_id, 'identity' from cs_found f
             join intermediate.int_identity_decisions d2 on d2.person_id = f.person_id
             join intermediate.int_identity_decisions d on d.account_person_id = d2.account_person_id
             where d.person_id <> f.person_id and f.reason in (""" + _SEED_REASONS + """)
             union
             select d.person_id, 'completions' from cs_found f
             join intermediate.int_identity_decisions d on d.account_person_id = f.person_id
             where f.reason = 'completions' and d.person_id <> f.person_id""")
    mark("identity")
    # Org: units added, removed or changed (parent, name, status, type, head) and every unit below them.
    same_org = p["org"] == p["base_org"]
    if same_org:   # the same org file (an hourly or event run): no unit changed (the parents: below, if needed)
        x("create temp table cs_units (code text) on commit drop")
    else:
        x("create temp table cs_org_cur on commit drop as " + _ORG_HASHES, (p["org"],))
        x("create temp table cs_org_base on commit drop as " + _ORG_HASHES, (p["base_org"],))
        x("analyze cs_org_cur")
        x("analyze cs_org_base")
        x("""create temp table cs_org_changed on commit drop as
             select coalesce(c.code, b.code) as code,
                    c.code is not null and c.parent is null or b.code is not null and b.parent is null as at_top
             from cs_org_cur c full join cs_org_base b on b.code = c.code
             where c.h is distinct from b.h""")
        roots = [r[0] for r in x("select code from cs_org_changed where at_top order by 1 limit 3").fetchall()]
        if roots:
            return f"an org change at the top of the tree (unit {', '.join(roots)})"
        # every unit below a changed one, walked down by index (joined with every unit per level: 0.7 s at 1M)
        x("create index on cs_org_cur (parent)")
        _by_index(x, """create temp table cs_units on commit drop as
             with recursive below (code, depth) as (
                 select code, 0 from cs_org_changed
                 union
                 select c.code, below.depth + 1 from below join cs_org_cur c on c.parent = below.code
                 where below.depth < 64
             )
             select distinct code from below""")
        x("analyze cs_units")   # so the members' join below hashes the few units, not every worker's row
        x("""insert into cs_found
             select r.person_id, 'org' from cs_rows r join cs_units u on u.code = r.org_unit_code""")
        # the holding unit's members are the workers whose HR code names no unit (HR's row can rename it)
        if x("select to_regclass('intermediate.int_workers_placed') is not null").fetchone()[0]:
            x("""insert into cs_found
                 select p.person_id, 'org' from intermediate.int_workers_placed p
                 join cs_units u on u.code = p.org_unit_code where p.is_unknown_org_code""")
    mark("org")
    # People whose own state changed: what the reporting chain below them and their managers depend on
    # (a due date, a completion or a move to another unit changes nobody's manager).
    x(f"""create temp table cs_seeds on commit drop as
          select distinct person_id from cs_found where reason in ({_SEED_REASONS}) and person_id is not null""")
    x("analyze cs_seeds")
    seeds = "select person_id from cs_seeds"
    has_seeds = x("select exists (select 1 from cs_seeds)").fetchone()[0]
    # Their lines in the base snapshot (the unit and manager they had): on an event run by line numbers,
    # otherwise one read of the base's lines (1M workers: two such reads cost ~0.8 s per event run).
    if by_number and has_seeds:
        x(_SEED_BASE_LINES.format(numbers=_SEED_BASE_LINE_NUMBERS,
                                  line_filter="and w._line_no = any(array(select line_no from numbers))"), p)
    else:
        x(_SEED_BASE_LINES.format(numbers="", line_filter="" if has_seeds else "and false"), p)
    # The reporting chain below them (primary and temporary managers, any depth). The edges first, as a
    # table: a join on "primary or temporary manager" in the recursion is a nested loop over everyone.
    # (the edges only when a seed manages someone: most changed people manage nobody, and the walk from them
    # finds no one — one scan of the rows instead of writing and indexing every edge, ~1 s at 1M workers)
    if has_seeds and x("""select exists (select 1 from cs_rows where manager_person_id in (select person_id from cs_seeds)
                                        or temporary_manager_person_id in (select person_id from cs_seeds))""").fetchone()[0]:
        x("""create temp table cs_edges on commit drop as
             select manager_person_id as manager_id, person_id from cs_rows where manager_person_id is not null
             union all   -- duplicates are harmless: the walk below is a union
             select temporary_manager_person_id, person_id from cs_rows where temporary_manager_person_id is not null""")
        x("create index on cs_edges (manager_id)")
        x("analyze cs_edges")
    else:   # nobody's own state changed (an hourly run), or no one reports to them: no chain to walk
        x("create temp table cs_edges (manager_id text, person_id text) on commit drop")
    mark("edges")
    _by_index(x, f"""insert into cs_found
          with recursive down (person_id, depth) as (
              select person_id, 0 from ({seeds}) s
              union
              select e.person_id, down.depth + 1 from down
              join cs_edges e on e.manager_id = down.person_id
              where down.depth < 64
          )
          select person_id, 'manager_chain' from down where depth > 0""")
    mark("manager_chain")
    # (on the same org file without seeds no unit and no person is the start of a walk: nothing to find)
    if (has_seeds or not same_org) and \
            x("select to_regclass('intermediate.int_managers_resolved') is not null").fetchone()[0] and \
            x("select to_regclass('intermediate.int_workers_placed') is not null").fetchone()[0]:
        # People whose manager comes from the org chain (the heads of their unit and the units above), in
        # a unit below a changed unit or below the unit of a changed person (its head may be another now).
        # Walked up from the units of those people (few: most managers come from HR) rather than down from
        # the changed units (1M workers: 1.6 s for the walk down, plus the units of every seed, for one
        # person with a fallback manager).
        x("""create temp table cs_fallback on commit drop as
             select m.person_id, p.org_unit_code from intermediate.int_managers_resolved m
             join intermediate.int_workers_placed p on p.person_id = m.person_id
             where m.fallback_reason is not null and p.org_unit_code is not null""")
        if x("select exists (select 1 from cs_fallback)").fetchone()[0]:
            if same_org:
                x("create temp table cs_org_cur on commit drop as " + _ORG_PARENTS, (p["org"],))
            x("create index on cs_org_cur (code)")
            x("analyze cs_org_cur")
            _by_index(x, """create temp table cs_fallback_up on commit drop as
                 with recursive up (unit, code, depth) as (
                     select org_unit_code, org_unit_code, 0 from (select distinct org_unit_code from cs_fallback) f
                     union
                     select up.unit, c.parent, up.depth + 1 from up join cs_org_cur c on c.code = up.code
                     where c.parent is not null and up.depth < 64
                 )
                 select distinct unit, code from up""")
            x(f"""insert into cs_found
                  with units as (
                      select code from cs_units
                      union
                      select r.org_unit_code from cs_rows r where r.person_id in ({seeds})
                      union
                      select p.org_unit_code from intermediate.int_workers_placed p where p.person_id in ({seeds})
                      union
                      select b.org_unit_code from cs_seed_base b where b.org_unit_code in (select code from cs_fallback_up)
                  )
                  select f.person_id, 'manager_chain' from cs_fallback f
                  where f.org_unit_code in (select u.unit from cs_fallback_up u join units on units.code = u.code)""",
              p)
        mark("org_fallback")
        x(f"""insert into cs_found
              select m.manager_person_id, 'manager' from intermediate.int_managers_resolved m
              where m.person_id in ({seeds}) and m.manager_person_id is not null""")
    x(f"""insert into cs_found
          select m, 'manager' from ({seeds}) f
          join cs_rows r using (person_id), unnest(array[r.manager_person_id, r.temporary_manager_person_id]) m
          where m is not null
          union
          select b.manager_person_id, 'manager' from cs_seed_base b""", p)
    if has_decisions:   # the accounts of everyone found (the LMS knows people by account)
        x("""insert into cs_found
             select d.account_person_id, 'identity' from cs_found f
             join intermediate.int_identity_decisions d on d.person_id = f.person_id
             where d.account_person_id is not null and d.account_person_id <> f.person_id""")
    mark("managers")
    x("""create temp table cs_people on commit drop as
         select person_id, array_agg(distinct reason order by reason) as reasons
         from cs_found where person_id is not null group by person_id""")
    return ""


__all__ = ["ChangeSet", "EVERYONE", "REASONS", "build_inputs", "built", "compute", "latest_built", "mark_dirty",
           "max_share"]
