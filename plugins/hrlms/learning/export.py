"""CSV enrolment export for LMSs without an API (the delivery next to SCIM audience groups).

One full-state file per logical date, ``enrolments_<YYYY-MM-DD>.csv``, in a stable order. Full state
rather than a delta, like Canvas's SIS import: an LMS that missed a day catches up from the next file —
and an LMS that imports it as full state drops whatever the file leaves out. So the published file is
a delivery like the SCIM apply and obeys the same plan decision (hrlms.sync.breaker):

* it lists what the LMS really got: the active accounts (``sync.applied_users``) and their memberships
  of the ``req:<requirement>`` audience groups (``sync.applied_memberships``), with the descriptive
  columns (kind, title, assigned_on, due_on, status) from ``marts.learning_compliance_status`` — never
  the desired state of a run whose apply failed half-way;
* it is written only after the plan was applied, under the plan's logical date;
* while the plan is held nothing is published: the file the plan would lead to (its desired state) is
  kept aside for review as ``held/enrolments_<date>.plan<N>.HELD.csv``; when the plan is approved (and
  applied) the file is published and the held copy renamed ``…plan<N>.APPROVED.csv``; a rejected or
  superseded plan's file is never published and its held copy is renamed ``…REJECTED.csv`` /
  ``…SUPERSEDED.csv``;
* a dry run publishes nothing.

Files are written to a temporary file and renamed, so a reader never sees half a file; rerunning a date
rewrites the same bytes. Values that a spreadsheet would execute (=, +, -, @ at the start) are prefixed
with a quote so they stay inert.
"""
from __future__ import annotations

import csv
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

COLUMNS = ("user_external_id", "user_name", "email", "requirement_id", "requirement_kind", "requirement_title",
           "assigned_on", "due_on", "status")
HELD_DIR = "held"

# The desired state (what a held plan would lead to): every open, non-exempt assignment of a person with
# an active LMS account, as in the audience groups.
_DESIRED = """
select s.account_person_id, u.user_name, u.email, s.requirement_id, s.requirement_kind, s.requirement_title,
       s.assigned_on, s.due_on, s.status
from marts.learning_compliance_status s
join marts.lms_desired_users u on u.person_id = s.account_person_id and u.is_active
where s.status <> 'exempt'
order by s.account_person_id, s.requirement_id
"""

# The applied state: what the LMS holds (one row per audience membership of an active account). The
# descriptive columns come from the assignment (a non-exempt one first); a membership the LMS still holds
# without an open assignment (its removal failed) keeps the requirement's kind and title, no dates/status.
_APPLIED = """
select m.person_id, u.user_name, u.email, m.requirement_id,
       coalesce(s.requirement_kind, r.kind), coalesce(s.requirement_title, r.title),
       s.assigned_on, s.due_on, s.status
from (select person_id, substr(group_key, 5) as requirement_id from sync.applied_memberships
      where left(group_key, 4) = 'req:') m
join sync.applied_users u on u.person_id = m.person_id and u.is_active
left join learning.requirements r on r.ruleset = 'live' and r.requirement_id = m.requirement_id
left join (
    -- one row per account and requirement, a non-exempt one first (a join, not a lateral subquery per
    -- membership: the mart has no index, and 23k memberships took 35 s at 10k workers that way)
    select distinct on (account_person_id, requirement_id) account_person_id, requirement_id,
           requirement_kind, requirement_title, assigned_on, due_on, status
    from marts.learning_compliance_status
    order by account_person_id, requirement_id, status = 'exempt', assigned_on desc, assignment_id
) s on s.account_person_id = m.person_id and s.requirement_id = m.requirement_id
order by m.person_id, m.requirement_id
"""
_HELD_NAME = re.compile(r"^enrolments_(\d{4}-\d{2}-\d{2})\.plan(\d+)\.HELD\.csv$")


def inert(value: Any) -> str:
    """A CSV cell a spreadsheet will not evaluate as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def published_path(export_dir: Path, day: date) -> Path:
    return export_dir / f"enrolments_{day.isoformat()}.csv"


def held_path(export_dir: Path, day: date, plan_id: int, state: str = "HELD") -> Path:
    return export_dir / HELD_DIR / f"enrolments_{day.isoformat()}.plan{plan_id}.{state}.csv"


def _write(conn: psycopg.Connection, path: Path, query: str) -> int:
    """The query's rows as CSV at `path`, atomically (a temporary file renamed over it). Returns the rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    rows = 0
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh, conn.cursor() as cur:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            cur.execute(query)
            for row in cur:
                writer.writerow([inert(v) for v in row])
                rows += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def write_enrolments(conn: psycopg.Connection, export_dir: Path, logical_date: date) -> dict[str, Any]:
    """Publish the applied state as the full-state file of `logical_date` (no plan check: see deliver)."""
    path = published_path(export_dir, logical_date)
    rows = _write(conn, path, _APPLIED)
    return {"file": path.name, "rows": rows}


def write_held(conn: psycopg.Connection, export_dir: Path, logical_date: date, plan_id: int) -> dict[str, Any]:
    """Keep the file a held plan would lead to aside, for review (never where an LMS picks files up)."""
    path = held_path(export_dir, logical_date, plan_id)
    rows = _write(conn, path, _DESIRED)
    return {"file": str(path), "rows": rows}


def _fate(conn: psycopg.Connection, plan_id: int) -> str | None:
    """APPROVED / REJECTED / SUPERSEDED once a held plan's fate is known; None while it is held."""
    row = conn.execute(
        """select p.status, (select d.decision from sync.plan_decisions d where d.plan_id = p.plan_id
                             order by d.decided_at desc limit 1)
           from sync.plans p where p.plan_id = %s""", (plan_id,)).fetchone()
    if row is None:
        return "SUPERSEDED"          # the plan is gone (a rebuilt warehouse): never publishable
    status, decision = row
    if decision in ("approved", "rejected"):
        return decision.upper()
    return None if status == "held" else "SUPERSEDED"


def settle_held(conn: psycopg.Connection, export_dir: Path) -> dict[str, str]:
    """Rename the held copies whose plan has been decided or superseded (…HELD.csv → …APPROVED.csv,
    …REJECTED.csv, …SUPERSEDED.csv). Returns {old name: new name}."""
    renamed: dict[str, str] = {}
    folder = export_dir / HELD_DIR
    if not folder.is_dir():
        return renamed
    for path in sorted(folder.iterdir()):
        m = _HELD_NAME.match(path.name)
        if not m:
            continue
        fate = _fate(conn, int(m.group(2)))
        if fate:
            target = held_path(export_dir, date.fromisoformat(m.group(1)), int(m.group(2)), fate)
            os.replace(path, target)
            renamed[path.name] = target.name
    return renamed


def deliver(conn: psycopg.Connection, export_dir: Path, plan_id: int | None, *, dry_run: bool = False,
            no_plan_reason: str = "") -> dict[str, Any]:
    """The export of a run whose plan is `plan_id`, obeying the plan's decision. Returns what happened:
    ``published`` (bool), ``file``/``rows`` of the published file or of the held copy (``held``), and
    ``why`` when nothing was published. Idempotent: a rerun writes the same files."""
    detail: dict[str, Any] = {"published": False}
    settled = settle_held(conn, export_dir)
    if settled:
        detail["held_copies"] = settled
    if plan_id is None:
        detail["why"] = no_plan_reason or "this run made no plan: nothing was applied, nothing is exported"
        return detail
    row = conn.execute(
        """select status, logical_date, held_reason,
                  exists (select 1 from sync.plan_decisions d where d.plan_id = p.plan_id and d.decision = 'approved'),
                  (select max(l.plan_id) from sync.plans l where l.plan_id > p.plan_id
                   and (l.status in ('applied', 'partial') or l.finished_at is not null))
           from sync.plans p where plan_id = %s""", (plan_id,)).fetchone()
    if row is None:
        detail["why"] = f"plan {plan_id} does not exist"
        return detail
    status, day, held_reason, approved, later = row
    detail.update({"plan_id": plan_id, "plan_status": status})
    if status == "held":
        held = write_held(conn, export_dir, day, plan_id)
        detail.update({"held": held["file"], "rows": held["rows"],
                       "why": f"plan {plan_id} is held by the breaker: nothing is published until it is approved; "
                              f"the file it would lead to is kept for review in {held['file']}"})
    elif dry_run:
        detail["why"] = "dry run: nothing is delivered"
    elif held_reason and not approved:
        detail["why"] = f"plan {plan_id} was held and then {status}: its export is never published"
    elif later is not None:
        detail["why"] = (f"plan {later} was applied after plan {plan_id}: the file of its date holds the "
                         f"current state, this date's file is left as it is")
    else:
        detail.update({"published": True} | write_enrolments(conn, export_dir, day))
    return detail
