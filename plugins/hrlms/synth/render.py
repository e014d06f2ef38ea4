"""Turn the population into a day's rows: source-format columns, canonical truth, line numbers.

Most values are lookups into small tables (name pools, dates, jobs, units), so columns are built by
numpy object-array indexing of pre-formatted tables: the same index gives the file text, the
canonical truth value and its JSON encoding without per-row Python formatting.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import numpy as np

from .messiness import Injection, Messiness, inject
from .population import Population
from .reference import EMAIL_DOMAIN, LOCATIONS, STATUS_CANONICAL, STATUS_CODES, TERMINATED, TYPE_CANONICAL, TYPE_CODES

# canonical field -> source column (must equal mappings/synthetic_hr.yaml; a test checks it).
WORKER_COLUMNS: dict[str, str] = {
    "person_id": "Employee_ID", "employee_number": "Employee_Number", "first_name": "First_Name",
    "last_name": "Last_Name", "preferred_name": "Preferred_Name", "work_email": "Work_Email",
    "username": "Login", "employment_status": "Worker_Status", "employment_type": "Worker_Type",
    "hire_date": "Hire_Date", "start_date": "Start_Date", "termination_date": "Termination_Date",
    "last_day_of_work": "Last_Day_Of_Work", "job_code": "Job_Code", "job_title": "Job_Title",
    "job_family": "Job_Family", "org_unit_code": "Org_Unit", "manager_person_id": "Manager_ID",
    "location_code": "Location", "country": "Country", "time_zone": "Time_Zone",
}
ORG_COLUMNS: dict[str, str] = {"org_unit_code": "Org_Code", "name": "Org_Name",
                               "parent_org_unit_code": "Parent_Org_Code", "type": "Org_Type", "status": "Org_Status"}
DATE_FORMAT = "%m/%d/%Y"
_enc = json.JSONEncoder(ensure_ascii=False).encode


@dataclass
class _Col:
    source: np.ndarray      # text written to the file ("" = empty)
    truth: np.ndarray       # JSON-encoded canonical value ("null" = none)


def _obj(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _table(source: list[str], canonical: list[str | None], index: np.ndarray) -> _Col:
    return _Col(_obj(source)[index], _obj(["null" if v is None else _enc(v) for v in canonical])[index])


def _ascii(values: list[str]) -> _Col:
    """Per-person ASCII values (ids, logins): JSON encoding is just quoting."""
    src = _obj(values)
    return _Col(src, '"' + src + '"')


def _dates(ordinals: np.ndarray) -> _Col:
    uniq, inv = np.unique(ordinals, return_inverse=True)
    src = ["" if o == 0 else date.fromordinal(int(o)).strftime(DATE_FORMAT) for o in uniq]
    iso = [None if o == 0 else date.fromordinal(int(o)).isoformat() for o in uniq]
    return _table(src, iso, inv)


def build_columns(pop: Population, status: np.ndarray) -> dict[str, _Col]:
    """Clean columns for every population row, keyed by canonical field."""
    pools, jobs, org = pop.pools, pop.jobs, pop.org
    mgr = pop.manager_index()
    has_mgr = mgr >= 0
    mgr_ids = np.full(len(pop), "", dtype=object)
    mgr_ids[has_mgr] = _obj(pop.pid_str)[mgr[has_mgr]]
    pref_idx = np.where(pop.pref >= 0, pop.pref, len(pools.first))
    email = [f"{u}@{EMAIL_DOMAIN}" for u in pop.username]
    loc = pop.loc.astype(np.int64)
    return {
        "person_id": _ascii(pop.pid_str),
        "employee_number": _ascii(pop.empno_str),
        "first_name": _table(pools.first, pools.first, pop.first),
        "last_name": _table(pools.last, pools.last, pop.last),
        "preferred_name": _table(pools.first + [""], pools.first + [None], pref_idx),
        "work_email": _ascii(email),
        "username": _ascii(pop.username),
        "employment_status": _table(list(STATUS_CODES), list(STATUS_CANONICAL), status),
        "employment_type": _table(list(TYPE_CODES), list(TYPE_CANONICAL), pop.etype),
        "hire_date": _dates(pop.hire),
        "start_date": _dates(pop.start),
        "termination_date": _dates(pop.term),
        "last_day_of_work": _dates(pop.lwd),
        "job_code": _table(jobs.codes, jobs.codes, pop.job),
        "job_title": _table(jobs.titles, jobs.titles, pop.job),
        "job_family": _table(jobs.families, jobs.families, pop.job),
        "org_unit_code": _table(org.codes, org.codes, pop.unit),
        "manager_person_id": _Col(mgr_ids, np.where(has_mgr, '"' + mgr_ids + '"', "null")),
        "location_code": _table([x.code for x in LOCATIONS], [x.code for x in LOCATIONS], loc),
        "country": _table([x.country for x in LOCATIONS], [x.country for x in LOCATIONS], loc),
        "time_zone": _table([x.time_zone for x in LOCATIONS], [x.time_zone for x in LOCATIONS], loc),
    }


@dataclass
class RenderedDay:
    """Everything needed to write one day's worker file and its truth."""

    day: date
    fmt: str
    source: dict[str, np.ndarray]   # canonical field -> file text per population row (after messiness)
    truth: dict[str, np.ndarray]    # canonical field -> JSON-encoded clean value per population row
    duplicates: np.ndarray          # population rows written twice (second copy right after the first)
    lines: np.ndarray               # physical line of each population row's first copy
    defects: list[dict]
    cosmetic: list[dict]


def render_day(pop: Population, day: date, m: Messiness, rng: np.random.Generator, fmt: str) -> RenderedDay:
    status = pop.status_on(day.toordinal())
    cols = build_columns(pop, status)
    source = {k: c.source.copy() for k, c in cols.items()}
    rows_with_term = (pop.term != 0) & (status == TERMINATED)
    unknown = [pop.org.unknown_code(int(k)) for k in rng.integers(0, 10 ** 6, 64)]
    inj: Injection = inject(source, rows_with_term=rows_with_term, hire=pop.hire, heads=pop.is_head(),
                            unknown_org=unknown, m=m, rng=rng)
    first_line = 2 if fmt == "csv" else 1
    shift = np.zeros(len(pop) + 1, dtype=np.int64)
    np.add.at(shift, inj.duplicates + 1, 1)
    lines = first_line + np.arange(len(pop)) + np.cumsum(shift)[:-1]
    dup_set = set(inj.duplicates.tolist())

    def line_of(r: int, kind: str) -> int:
        return int(lines[r]) + (1 if kind == "duplicate_row" and r in dup_set else 0)

    defects = [{"line": line_of(r, k), "person_id": pop.pid_str[r], "defect": k, "field": f} for r, k, f in inj.defects]
    cosmetic = [{"line": int(lines[r]), "person_id": pop.pid_str[r], "kind": k, "field": f} for r, k, f in inj.cosmetic]
    defects.sort(key=lambda d: d["line"])
    cosmetic.sort(key=lambda d: d["line"])
    return RenderedDay(day, fmt, source, {k: c.truth for k, c in cols.items()}, inj.duplicates, lines,
                       defects, cosmetic)


def org_records(pop: Population) -> list[dict[str, str]]:
    """Org units keyed by canonical field (all clean; every unit ACTIVE)."""
    org = pop.org
    return [{"org_unit_code": org.codes[u], "name": org.names[u],
             "parent_org_unit_code": org.codes[org.parent[u]] if org.parent[u] >= 0 else "",
             "type": org.utype[u], "status": "ACTIVE"} for u in range(len(org))]
