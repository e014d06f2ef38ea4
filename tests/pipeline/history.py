"""A hand-written 12-day HR + learning history for the incremental-build tests (issue 15).

39-42 people (P01..P42) in a Workday-style export (the mapping of tests/e2e/test_people_scenario,
whose `person()`, `write_day()` and `lms_state()` are reused). Day by day (logical moment 00:00 UTC; most
people are in Europe/London, which is UTC in March 2026):

  D1  Mar 2  first run (full): 39 people, rules v1 (SAFE for Sales due the day after assignment, ANNUAL
             for all, ENG for Engineering, FIN for Finance after 30 days' tenure, MGR for managers), a
             transcript with 4 SAFE completions and P10's year-old ANNUAL certification (completed
             2025-03-05: expires 2026-03-05).
  D2  Mar 3  hire P30 (starts today); future-dated hire P31 (prehire, starts Mar 5); transfer P14
             Sales -> Finance; P11 (Asia/Tokyo) gets a last day of Mar 4.
  D3  Mar 4  no HR edit. P32 (Payroll, started Feb 2) reaches 30 days' tenure: the FIN rule
             (min_tenure_days 30) assigns it; SAFE (due Mar 3) is overdue for P15, P23, P27.
  D4  Mar 5  no HR edit. P31 starts (account created); P11's last day has passed in Tokyo (Mar 5 09:00)
             -> deactivated. P10's ANNUAL expires; P30's SAFE is overdue.
  D5  Mar 6  manager P05 (Platform head; reports P12, P13) leaves, last day Mar 5: the reports fall
             back to P04. P22's row has an unparseable hire date (and a new title): quarantined.
  D6  Mar 7  subtree reorg: ORG8 Data (with child ORG10 ML) moves from Engineering to Finance and is
             renamed "Finance Analytics" (its members lose ENG, gain FIN). P22's row is fixed (the new
             title reaches the LMS).
  D7  Mar 8  late completion: the transcript reports P15's SAFE completed on Mar 4 (overdue -> completed).
             P18 leaves (last day Mar 7).
  D8  Mar 9  the learning rules change (HRLMS_LEARNING_RULES -> rules v2: a new DATA requirement for the
             Finance subtree, ENG's rule drops): a full build. Transfer P23 Sales EMEA -> Engineering.
  D9  Mar 10 no HR edit. P20's temporary manager (P06, Mar 2 - Mar 9) ends: back to P07.
  D10 Mar 11 P18 is rehired (same person_id, new hire date): the old account is reactivated. P12
             (America/Los_Angeles) gets a last day of Mar 11. Hire P34 (future-dated, starts Mar 12).
  D11 Mar 12 no HR edit. P34 starts; P33 (Payroll, started Feb 10) reaches 30 days' tenure (FIN);
             P12 is still on their last day in Los Angeles (Mar 11 16:00).
  D12 Mar 13 P12's last day has passed in Los Angeles: deactivated. P25 gets a new title.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from ..e2e.test_people_scenario import lms_state, person, write_day

__all__ = ["DAYS", "Day", "RULES_V1", "RULES_V2", "lms_state", "write_day", "land", "population",
           "warehouse_database", "scim_server"]

D = [date(2026, 3, 2) + timedelta(days=i) for i in range(12)]   # D[0] = day 1
TOKYO, LA = "Asia/Tokyo", "America/Los_Angeles"

RULES_V1 = """
version: 1
requirements:
  - {id: SAFE, kind: course, title: Workplace safety}
  - {id: ANNUAL, kind: certification, title: Annual compliance, recurrence: {valid_months: 12, window_days: 30}}
  - {id: ENG, kind: course, title: Secure coding}
  - {id: FIN, kind: certification, title: Anti-money-laundering}
  - {id: MGR, kind: learning_path, title: Leading people}
rules:
  - {id: safe-sales, requirement: SAFE, match: {org_subtrees: [ORG6]}, due: {days: 1, after: assignment}}
  - {id: annual, requirement: ANNUAL, match: {all: true}, due: {days: 30, after: assignment}}
  - {id: eng, requirement: ENG, match: {org_subtrees: [ORG4]}, due: {days: 45, after: transfer}}
  - {id: fin, requirement: FIN, match: {org_subtrees: [ORG2], min_tenure_days: 30}, due: {days: 90}}
  - {id: mgr, requirement: MGR, match: {people_manager: true}, due: {days: 60}}
"""
# Day 8: DATA for the Finance subtree (with the same min tenure), ENG's rule is gone (its spells end).
RULES_V2 = RULES_V1.replace(
    "  - {id: MGR,", "  - {id: DATA, kind: course, title: Data handling}\n  - {id: MGR,").replace(
    "  - {id: eng, requirement: ENG, match: {org_subtrees: [ORG4]}, due: {days: 45, after: transfer}}\n",
    "  - {id: data, requirement: DATA, match: {org_subtrees: [ORG2], min_tenure_days: 30}, due: {days: 10}}\n")
assert "id: data," in RULES_V2 and "id: eng," not in RULES_V2 and "id: DATA," in RULES_V2

ORGS_1 = [("ORG1", "Company", "", "P01"), ("ORG2", "Finance", "ORG1", "P02"), ("ORG3", "Payroll", "ORG2", "P03"),
          ("ORG4", "Engineering", "ORG1", "P04"), ("ORG5", "Platform", "ORG4", "P05"),
          ("ORG7", "Cloud", "ORG5", "P07"), ("ORG8", "Data", "ORG4", "P08"), ("ORG10", "ML", "ORG8", "P09"),
          ("ORG6", "Sales", "ORG1", "P06"), ("ORG9", "Sales EMEA", "ORG6", "P29")]
# Day 6: the Data subtree (ORG8 + ORG10) moves under Finance and is renamed.
ORGS_2 = [("ORG8", "Finance Analytics", "ORG2", "P08") if o[0] == "ORG8" else o for o in ORGS_1]


def titled(row: dict, title: str) -> dict:
    return {**row, "Job_Title": title}


def day1_rows() -> dict[str, dict]:
    rows = [
        person("P01", "ORG1", None), person("P02", "ORG2", "P01"), person("P03", "ORG3", "P02"),
        person("P04", "ORG4", "P01"), person("P05", "ORG5", "P04"), person("P06", "ORG6", "P01"),
        person("P07", "ORG7", "P04"), person("P08", "ORG8", "P04"), person("P09", "ORG10", "P08"),
        person("P29", "ORG9", "P06"),
        person("P10", "ORG3", "P03"), person("P11", "ORG3", "P03", tz=TOKYO),
        person("P12", "ORG5", "P05", tz=LA), person("P13", "ORG5", "P05"),
        person("P14", "ORG6", "P06"), person("P15", "ORG6", "P06"),
        person("P16", "ORG4", "P04", kind="CTR"), person("P17", "ORG2", "P02"),
        person("P18", "ORG2", "P02"), person("P19", "ORG7", "P07"),
        person("P20", "ORG7", "P07", temp=("P06", D[0], D[7])),               # temporary manager Mar 2-9
        person("P21", "ORG7", "P07", tz=TOKYO), person("P22", "ORG8", "P08"),
        person("P23", "ORG9", "P29"), person("P24", "ORG4", "P04"), person("P25", "ORG10", "P09"),
        person("P26", "ORG10", "P09", tz=LA), person("P27", "ORG9", "P29"), person("P28", "ORG1", "P01"),
        person("P32", "ORG3", "P03", hire=date(2026, 2, 2)),                   # 30 days' tenure on Mar 4
        person("P33", "ORG3", "P03", hire=date(2026, 2, 10)),                  # 30 days' tenure on Mar 12
        person("P35", "ORG6", "P06", kind="INT"), person("P36", "ORG2", "P02", tz=LA),
        person("P37", "ORG3", "P03"), person("P38", "ORG3", "P03"), person("P39", "ORG6", "P06"),
        person("P40", "ORG4", "P04"), person("P41", "ORG2", "P02"), person("P42", "ORG1", "P01"),
    ]
    return {r["Employee_ID"]: r for r in rows}


def _workers() -> list[list[dict]]:
    """The workers file of each day (list index = day - 1)."""
    days: list[dict[str, dict]] = [day1_rows()]

    def nxt() -> dict[str, dict]:
        days.append(dict(days[-1]))
        return days[-1]

    r = nxt()                                                                   # D2
    r["P30"] = person("P30", "ORG9", "P29", hire=D[1])
    r["P31"] = person("P31", "ORG3", "P03", status="P", hire=D[3])              # starts Mar 5
    r["P14"] = person("P14", "ORG2", "P02")                                     # transfer
    r["P11"] = person("P11", "ORG3", "P03", tz=TOKYO, term=D[2], last=D[2])      # last day Mar 4
    nxt()                                                                       # D3: no HR edit
    nxt()                                                                       # D4: no HR edit
    r = nxt()                                                                   # D5
    r["P05"] = person("P05", "ORG5", "P04", status="T", term=D[3], last=D[3])    # a manager leaves
    r["P22"] = {**titled(r["P22"], "Senior Staff"), "Hire_Date": "02/31/2020"}   # quarantined
    r = nxt()                                                                   # D6 (+ reorg in ORGS)
    r["P22"] = titled(person("P22", "ORG8", "P08"), "Senior Staff")             # fixed
    r = nxt()                                                                   # D7
    r["P18"] = person("P18", "ORG2", "P02", status="T", term=D[5], last=D[5])    # leaver, last day Mar 7
    r = nxt()                                                                   # D8 (+ rules v2)
    r["P23"] = person("P23", "ORG4", "P04")                                     # transfer
    nxt()                                                                       # D9: no HR edit
    r = nxt()                                                                   # D10
    r["P18"] = person("P18", "ORG2", "P02", hire=D[9])                          # rehire, same id
    r["P12"] = person("P12", "ORG5", "P05", tz=LA, term=D[9], last=D[9])         # last day Mar 11 (LA)
    r["P34"] = person("P34", "ORG7", "P07", status="P", hire=D[10])             # starts Mar 12
    nxt()                                                                       # D11: no HR edit
    r = nxt()                                                                   # D12
    r["P25"] = titled(r["P25"], "Lead")
    return [list(d.values()) for d in days]


TRANSCRIPT_HEADER = "Record_ID,User_External_ID,User_Email,Course_Code,Status,Completed_On,Score\n"
TRANSCRIPTS = {
    D[0]: [f"T-{p},{p},,SAFE,Completed,2026-03-02," for p in
           ("P06", "P29", "P35", "P39")]
          + ["T-P10-A,P10,,ANNUAL,Passed,2025-03-05,88",          # expires 2026-03-05 (D4)
             "T-P17-A,P17,,ANNUAL,Passed,2025-12-01,91"],
    D[6]: ["T-P15-S,P15,,SAFE,Completed,2026-03-04,"],           # late: done Mar 4, reported Mar 8
}


@dataclass(frozen=True)
class Day:
    n: int                              # 1-based
    day: date
    workers: list[dict]
    orgs: list[tuple]
    rules: str                          # "v1" | "v2"
    full: bool                          # the plan must be a full one
    expect: dict[str, set[str]] = field(default_factory=dict)   # person -> reasons (any of) in the change set
    hr_edit: bool = True

    @property
    def rules_text(self) -> str:
        return RULES_V1 if self.rules == "v1" else RULES_V2


_EXPECT: dict[int, dict[str, set[str]]] = {
    2: {"P30": {"new"}, "P31": {"new"}, "P14": {"hr_edit"}, "P11": {"hr_edit"}},
    3: {"P32": {"dates", "learning_dates"}, "P27": {"learning_dates"}, "P15": {"learning_dates"}},
    4: {"P31": {"dates"}, "P11": {"dates"}, "P10": {"learning_dates"}, "P30": {"learning_dates"}},
    5: {"P05": {"hr_edit"}, "P12": {"manager_chain"}, "P13": {"manager_chain"}, "P22": {"quarantine"}},
    6: {"P08": {"org"}, "P22": {"hr_edit", "quarantine"}, "P09": {"org"}, "P25": {"org"}, "P26": {"org"}},
    7: {"P15": {"completions"}, "P18": {"hr_edit"}},
    9: {"P20": {"dates"}},
    10: {"P18": {"hr_edit"}, "P12": {"hr_edit"}, "P34": {"new"}},
    11: {"P34": {"dates"}, "P33": {"dates", "learning_dates"}},
    12: {"P12": {"dates"}, "P25": {"hr_edit"}},
}
_NO_HR_EDIT = {3, 4, 9, 11}


def _days() -> list[Day]:
    workers = _workers()
    out = []
    for i, d in enumerate(D, start=1):
        out.append(Day(i, d, workers[i - 1], ORGS_1 if i < 6 else ORGS_2, "v1" if i < 8 else "v2",
                       full=i in (1, 8), expect=_EXPECT.get(i, {}), hr_edit=i not in _NO_HR_EDIT))
    for a, b in zip(out, out[1:]):       # the no-edit days really are copies of the day before
        assert (a.workers == b.workers and a.orgs == b.orgs) == (not b.hr_edit), b.n
    return out


DAYS = _days()


def population(day: Day) -> int:
    return len(day.workers)


def land(landing: Path, day: Day, rules_dir: Path) -> Path:
    """The day's HR files (and transcript, if any) in `landing`; returns the day's rules file."""
    write_day(landing, day.day, day.workers, day.orgs)
    if day.day in TRANSCRIPTS:
        (landing / f"transcripts_{day.day}.csv").write_text(
            TRANSCRIPT_HEADER + "".join(line + "\n" for line in TRANSCRIPTS[day.day]))
    rules_dir.mkdir(exist_ok=True)
    path = rules_dir / f"rules_{day.rules}.yaml"
    if not path.exists():
        path.write_text(day.rules_text)
    return path


@contextmanager
def warehouse_database(admin_url: str) -> Iterator[str]:
    """An empty database of its own (as the `fresh_db` fixture, without touching the environment)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@contextmanager
def scim_server(directory: Path) -> Iterator[tuple[str, str]]:
    """A scim2-server of its own (as the `fresh_lms` fixture, without touching the environment)."""
    from hrlms.devenv.scim import LocalScimServer

    with LocalScimServer(directory) as server:
        yield server.base_url, server.token
