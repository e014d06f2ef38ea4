"""CSV enrolment export for LMSs without an API (the delivery next to SCIM audience groups).

One full-state file per logical date, ``enrolments_<YYYY-MM-DD>.csv``: every open, non-exempt
assignment of a person with an LMS account (as in the audience groups), in a stable order. Full state
rather than a delta, like Canvas's SIS import: an LMS that missed a day catches up from the next file.
Written to a temporary file and renamed, so a reader never sees half a file; rerunning a date rewrites
the same bytes. Values that a spreadsheet would execute (=, +, -, @ at the start) are prefixed with a
quote so they stay inert.
"""
from __future__ import annotations

import csv
import os
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

COLUMNS = ("user_external_id", "user_name", "email", "requirement_id", "requirement_kind", "requirement_title",
           "assigned_on", "due_on", "status")

_QUERY = """
select s.account_person_id, u.user_name, u.email, s.requirement_id, s.requirement_kind, s.requirement_title,
       s.assigned_on, s.due_on, s.status
from marts.learning_compliance_status s
join marts.lms_desired_users u on u.person_id = s.account_person_id and u.is_active
where s.status <> 'exempt'
order by s.account_person_id, s.requirement_id
"""


def inert(value: Any) -> str:
    """A CSV cell a spreadsheet will not evaluate as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_enrolments(conn: psycopg.Connection, export_dir: Path, logical_date: date) -> dict[str, Any]:
    export_dir.mkdir(parents=True, exist_ok=True)
    path = export_dir / f"enrolments_{logical_date.isoformat()}.csv"
    tmp = path.with_suffix(f".csv.tmp{os.getpid()}")
    rows = 0
    with tmp.open("w", newline="", encoding="utf-8") as fh, conn.cursor() as cur:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        cur.execute(_QUERY)
        for row in cur:
            writer.writerow([inert(v) for v in row])
            rows += 1
    os.replace(tmp, path)
    return {"file": path.name, "rows": rows}
