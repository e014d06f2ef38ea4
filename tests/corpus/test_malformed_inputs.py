"""The malformed-input corpus ("safe by default, proven"): every input below either stops the run with a
clear error (file, line, field), is quarantined row by row, or is accepted as the valid data it is — and
the LMS never receives a harmful write.

One baseline (50 workers, provisioned through the real pipeline into a real scim2-server) and then one
logical date per case, in the order of this module (see ``harness.Corpus``). Outcome classes and the
inputs are in ``cases.py``. What the LMS received is read three ways: the plan's ``sync.ops``, the
scim2-server access log (every non-GET request is a write) and the LMS's records (``meta.version``).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import pytest

from hrlms.pipeline import RunFailed
from hrlms.quality.gate import GateFailed
from hrlms.warehouse.load import IngestError

from . import cases
from .cases import (
    FORMAT_VARIANTS,
    PAYLOADS,
    QUARANTINE_DAY_1,
    QUARANTINE_DAY_2,
    REJECTED_AT_INGEST,
    REJECTED_BY_GATE,
    Payload,
    Rejected,
    RowDefect,
)
from .harness import HEADER, Corpus, Run, pid

pytestmark = pytest.mark.e2e


def _raw_counts(c: Corpus) -> dict[str, int]:
    rows = c.sql("select entity, count(*) from raw_hris.snapshots group by entity")
    return dict(rows) | {"workers_rows": c.sql("select count(*) from raw_hris.workers")[0][0],
                         "org_rows": c.sql("select count(*) from raw_hris.org_units")[0][0]}


def _assert_nothing_downstream(c: Corpus, run: Run, plans_before: int, lms_before: dict) -> None:
    assert run.lms_requests == [], "a stopped run must not write to the LMS"
    assert c.sql("select count(*) from sync.plans")[0][0] == plans_before, "no plan for a stopped run"
    assert c.lms_state() == lms_before
    # the run ends failed with the reason, and its report says where it stopped
    assert isinstance(run.report_error, RunFailed) and f"stage {run.failed_stage} failed" in str(run.report_error)
    html = run.report_path.read_text(encoding="utf-8")
    assert f"This run stopped at stage {run.failed_stage}" in html


def _check_rejected(c: Corpus, case: Rejected) -> Run:
    good = c.good_rows()
    day = c.next_day()
    org = case.org(good) if case.org else cases.ORG_CSV
    workers_path = c.land(day, case.build(good), org)
    bad_path = workers_path if case.bad_file == "workers" else c.landing / f"org_units_{day.isoformat()}.csv"
    raw_before, plans_before, lms_before = _raw_counts(c), c.sql("select count(*) from sync.plans")[0][0], c.lms_state()

    run = c.run(day)

    assert run.failed_stage == case.stage, (run.failed_stage, run.error)
    msg = str(run.error)
    print(f"{case.id}: {msg}")     # pytest -rP lists what HR is told for each input
    for part in case.says:
        assert part in msg, (part, msg)
    if case.stage == "ingest":
        err = run.error
        assert isinstance(err, IngestError), repr(err)
        assert err.source == str(bad_path)
        line = case.line(good) if callable(case.line) else case.line
        assert err.line == line, (line, msg)
        assert err.field == case.field, (case.field, msg)
        after = _raw_counts(c)
        if case.bad_file == "workers":
            assert after == raw_before, "a rejected file leaves nothing behind"
        else:   # the workers file before it landed (raw history); the bad org file left nothing behind
            assert after["org_rows"] == raw_before["org_rows"]
            assert after.get("org_units") == raw_before.get("org_units")
    else:
        assert isinstance(run.error, GateFailed), repr(run.error)
        assert str(bad_path) in msg
        suite = "workers_batch" if case.bad_file == "workers" else "org_units_batch"
        assert c.sql("select success from dq.gate_runs where snapshot_id = %s and suite = %s",
                     run.snapshots[case.bad_file], suite) == [(False,)]
    _assert_nothing_downstream(c, run, plans_before, lms_before)
    return run


@pytest.mark.parametrize("case", REJECTED_AT_INGEST, ids=lambda c: c.id)
def test_rejected_at_ingest(corpus: Corpus, case: Rejected) -> None:
    _check_rejected(corpus, case)


@pytest.mark.parametrize("variant", FORMAT_VARIANTS, ids=lambda v: v.id)
def test_accepted_format_variant_lands_the_same_rows(corpus: Corpus, variant: cases.Variant) -> None:
    c = corpus
    good = c.good_rows()
    day = c.next_day()
    c.land(day, variant.build(good))
    run = c.run(day, until="ingest")
    assert run.ok, run.error
    cols = ", ".join(f"coalesce({col}, '')" for col in cases.WORKERS_COLUMNS)
    landed = c.sql(f"select _line_no, {cols} from raw_hris.workers where _snapshot_id = %s order by _line_no",
                   run.snapshots["workers"])
    expected = [(n + 2, *(r[h] for h in HEADER)) for n, r in enumerate(good)]
    assert landed == expected
    assert run.lms_requests == []


@pytest.mark.parametrize("case", REJECTED_BY_GATE, ids=lambda c: c.id)
def test_rejected_by_gate(corpus: Corpus, case: Rejected) -> None:
    _check_rejected(corpus, case)


# --------------------------------------------------------------------------------------------------
# Quarantine days: each defect is its own test; the day runs once (all the way into the LMS).
# --------------------------------------------------------------------------------------------------

@dataclass
class Day:
    run: Run
    lines: dict[str, int]
    users_before: dict[str, dict]
    users_after: dict[str, dict]
    quarantine: dict[int, list[tuple]] = field(default_factory=dict)   # line -> [(rule, record_key, field, value)]

    def touched(self) -> set[str]:
        """Everyone an op of the day's plan names (as the op's person or as a group member)."""
        out = {k for t, k, _f, _s, _m in self.run.ops if t in ("create_user", "update_user", "deactivate_user",
                                                                 "reactivate_user", "set_manager")}
        return out | {m for _t, _k, _f, _s, ms in self.run.ops for m in (ms or [])}


def _run_day(c: Corpus, rows: list[dict], lines: dict[str, int], content: bytes | str | None = None) -> Day:
    day = c.next_day()
    c.land(day, content if content is not None else cases.csv_text(rows))
    before = c.lms_users()
    run = c.run(day)
    assert run.ok, f"{run.failed_stage}: {run.error}"
    q: dict[int, list[tuple]] = {}
    for line, rule, key, fld, value in c.sql(
            "select line_no, rule, record_key, field, value from dq.quarantine where snapshot_id = %s "
            "and entity = 'workers' order by line_no, rule", run.snapshots["workers"]):
        q.setdefault(line, []).append((rule, key, fld, value))
    return Day(run, lines, before, c.lms_users(), q)


def _all_applied(day: Day) -> None:
    assert day.run.ops and all(s == "applied" for *_x, s, _m in day.run.ops), day.run.ops


@pytest.fixture(scope="module")
def quarantine_day_1(corpus: Corpus) -> Day:
    rows, lines = cases.day_rows(corpus.good_rows(), QUARANTINE_DAY_1, cases.LEGIT_DAY_1, [cases.NEW_HIRE_DAY_1])
    day = _run_day(corpus, rows, lines)
    for i, change in cases.LEGIT_DAY_1.items():
        corpus.rows[i].update(change)
    corpus.rows[51] = dict(cases.NEW_HIRE_DAY_1)
    return day


@pytest.fixture(scope="module")
def quarantine_day_2(corpus: Corpus, quarantine_day_1: Day) -> Day:
    rows, lines = cases.day_rows(corpus.good_rows(), QUARANTINE_DAY_2, cases.LEGIT_DAY_2)
    day = _run_day(corpus, rows, lines)
    for i, change in cases.LEGIT_DAY_2.items():
        corpus.rows[i].update(change)
    for d in QUARANTINE_DAY_2:        # the accepted oddities are now the HR state
        if d.outcome == "accepted":
            corpus.rows[d.person].update(d.change)
    return day


def _check_defect(day: Day, d: RowDefect) -> None:
    key = d.key
    line = day.lines[d.id]
    if d.outcome == "quarantined":
        entries = day.quarantine.get(line, [])
        assert (d.rule, key, d.field, d.value) in entries, (line, entries)
    else:
        assert line not in day.quarantine, day.quarantine[line]
    if d.outcome == "quarantined" or d.id == "hire_date_1900_01_01_placeholder" or d.id == "self_manager":
        # no LMS write for this person: the account is exactly as before (or still absent)
        assert key not in day.touched(), [o for o in day.run.ops if o[1] == key or key in (o[4] or [])]
        if key is not None:
            assert day.users_after.get(key) == day.users_before.get(key)


@pytest.mark.parametrize("defect", QUARANTINE_DAY_1, ids=lambda d: d.id)
def test_quarantined_day_1(quarantine_day_1: Day, defect: RowDefect) -> None:
    _check_defect(quarantine_day_1, defect)


def test_quarantine_day_1_the_rest_flows(corpus: Corpus, quarantine_day_1: Day) -> None:
    day = quarantine_day_1
    p51, p20 = pid(51), pid(20)
    assert {(t, k, tuple(f or ()), tuple(m or ())) for t, k, f, _s, m in day.run.ops} == {
        # P51's manager P2 has an LMS account: the create carries it ('manager'), so its set_manager
        # is applied without a request
        ("create_user", p51, ("user_name", "given_name", "family_name", "formatted_name", "display_name", "email",
                              "title", "employee_number", "department", "timezone", "user_type", "work_country",
                              "manager"), ()),
        ("update_user", p20, ("title",), ()),
        ("set_manager", p51, ("manager",), ()),
        ("add_members", "org:ORG0002", (), (p51,)),
        ("add_members", "req:COC-100", (), (p51,)),
        ("add_members", "req:SEC-101", (), (p51,)),
    }
    _all_applied(day)
    assert day.users_after[p20]["title"] == "Senior Analyst"
    assert day.users_after[p51]["active"] is True
    assert corpus.lms_manager(day.users_after[p51]) == day.users_after[pid(2)]["id"]
    assert set(day.users_after) == set(day.users_before) | {p51}
    changed = {k for k in day.users_after if day.users_after[k] != day.users_before.get(k)}
    assert changed == {p51, p20}
    assert day.run.lms_requests and all("/Bulk" in r or "/Users" in r or "/Groups" in r for r in day.run.lms_requests)


@pytest.mark.parametrize("defect", QUARANTINE_DAY_2, ids=lambda d: f"{d.outcome}-{d.id}")
def test_row_defects_day_2(quarantine_day_2: Day, defect: RowDefect) -> None:
    _check_defect(quarantine_day_2, defect)


def test_quarantine_day_2_the_rest_flows(corpus: Corpus, quarantine_day_2: Day) -> None:
    day = quarantine_day_2
    p21, p23, p24 = pid(21), pid(23), pid(24)
    assert {(t, k, tuple(f or ()), tuple(m or ())) for t, k, f, _s, m in day.run.ops} == {
        ("update_user", p21, ("family_name", "formatted_name", "display_name"), ()),
        # the loop P23 <-> P24 is cut at the smallest id: P23 keeps the manager up the chain, P24 gets P23
        ("set_manager", p24, ("manager",), ()),
        ("add_members", "req:MGR-200", (), (p23,)),     # P23 now has a direct report
    }
    _all_applied(day)
    after = day.users_after
    assert after[p21]["name"]["familyName"] == "Renamed" and after[p21]["displayName"] == "First21 Renamed"
    assert corpus.lms_manager(after[p24]) == after[p23]["id"]
    assert corpus.lms_manager(after[p23]) == after[pid(2)]["id"]
    changed = {k for k in after if after[k] != day.users_before.get(k)}
    assert changed == {p21, p24}
    issues = set(corpus.sql("select person_id, issue_type from marts.dq_person_issues where is_open"))
    assert {(p23, "manager_loop"), (p24, "manager_loop"), (pid(26), "self_manager")} <= issues


# --------------------------------------------------------------------------------------------------
# Injection payloads: stored verbatim, read back from the LMS, shown inert.
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def injection_day(corpus: Corpus, quarantine_day_2: Day) -> Day:
    good = corpus.good_rows()
    by_pid = {r["Employee_ID"]: r for r in good}
    for p in PAYLOADS:
        by_pid[pid(p.person)].update(p.change)
    rows = list(by_pid.values())
    lines = {p.id: 2 + next(n for n, r in enumerate(rows) if r["Employee_ID"] == pid(p.person)) for p in PAYLOADS}
    day = _run_day(corpus, rows, lines, content=cases.injection_file(rows))
    for p in PAYLOADS:
        if p.outcome == "accepted":
            corpus.rows[p.person].update(p.change)
    return day


def _attr(user: dict, path: str):
    for part in path.split("."):
        user = user.get(part) if isinstance(user, dict) else None
    return user


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.id)
def test_injection_payload_is_inert(corpus: Corpus, injection_day: Day, payload: Payload) -> None:
    day = injection_day
    key = pid(payload.person)
    if payload.outcome == "quarantined":
        assert ("invalid_email", key, "work_email", cases.SCRIPT_EMAIL) in day.quarantine[day.lines[payload.id]]
        assert day.users_after[key] == day.users_before[key]
        html = day.run.report_path.read_text(encoding="utf-8")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script" not in html.lower()
        data = json.loads(day.run.report_path.with_suffix(".json").read_text(encoding="utf-8"))
        assert cases.SCRIPT_EMAIL in json.dumps(data, ensure_ascii=False)   # the data itself is kept verbatim
        return
    # the LMS holds the value verbatim (read back from scim2-server, not from our own records)
    user = corpus.lms_users()[key]
    for path, value in payload.lms.items():
        assert _attr(user, path) == value, (path, _attr(user, path))
    # the warehouse too, and the SQL text did nothing
    src_to_col = {v: k for k, v in cases.WORKERS_MAPPING.items()}
    for src, value in payload.change.items():
        col = src_to_col[src]
        got = corpus.sql(f"select {col} from marts.workers where person_id = %s", key)
        assert got == [(value.strip(),)], (col, got)
    assert corpus.sql("select to_regclass('raw_hris.workers') is not null, to_regclass('marts.workers') is not null"
                      ) == [(True, True)]


def test_injection_day_exact_writes_and_inert_exports(corpus: Corpus, injection_day: Day) -> None:
    day = injection_day
    want = {
        pid(31): ("given_name", "formatted_name", "display_name"), pid(32): ("family_name", "formatted_name", "display_name"),
        pid(33): ("user_name",), pid(34): ("formatted_name", "display_name"), pid(35): ("title",),
        pid(36): ("title",), pid(37): ("family_name", "formatted_name", "display_name"), pid(39): ("title",),
        pid(40): ("given_name", "family_name", "formatted_name", "display_name"),
    }
    got = {k: tuple(f) for t, k, f, _s, _m in day.run.ops}
    assert {t for t, *_x in day.run.ops} == {"update_user"}
    assert got == want
    _all_applied(day)
    changed = {k for k in day.users_after if day.users_after[k] != day.users_before.get(k)}
    assert changed == set(want)
    # the enrolment export (for LMSs without an API) keeps formulas inert: P33's login starts with '='
    export = corpus.reports / "exports" / f"enrolments_{day.run.day.isoformat()}.csv"
    rows = list(csv.DictReader(io.StringIO(export.read_text(encoding="utf-8"))))
    mine = [r for r in rows if r["user_external_id"] == pid(33)]
    assert mine and all(r["user_name"] == "'" + cases.DDE for r in mine)
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())


# --------------------------------------------------------------------------------------------------
# Last: 60% of the workers vanish from the export. The plan is computed and held: nothing is sent.
# --------------------------------------------------------------------------------------------------

def test_held_sixty_percent_of_rows_missing(corpus: Corpus, injection_day: Day) -> None:
    c = corpus
    good = c.good_rows()
    day = c.next_day()
    c.land(day, cases.csv_text(good[: len(good) * 2 // 5]))       # 20 of 51 rows
    plans_before, lms_before = c.sql("select count(*) from sync.plans")[0][0], c.lms_state()
    run = c.run(day)
    assert not run.ok and run.lms_requests == [] and c.lms_state() == lms_before
    msg = str(run.error)
    assert "shrank" in msg and "Nothing was sent to the LMS" in msg, msg
    assert run.failed_stage == "apply"
    status, reason = c.sql("select status, held_reason from sync.plans where plan_id = %s", run.plan_id)[0]
    assert status == "held" and "20 rows, 61% fewer than the last good snapshot (51 rows" in reason, reason
    assert c.sql("select count(*) from sync.plans")[0][0] == plans_before + 1
    assert {s for *_x, s, _m in run.ops} == {"held"}
    assert sum(1 for t, *_x in run.ops if t == "deactivate_user") == 31
    assert isinstance(run.report_error, RunFailed)
    # nor is the enrolment export published (a full-state file would drop 31 people's enrolments): it is
    # kept aside as held, and the run report says so
    assert not (c.reports / "exports" / f"enrolments_{day.isoformat()}.csv").exists()
    held = c.reports / "exports" / "held" / f"enrolments_{day.isoformat()}.plan{run.plan_id}.HELD.csv"
    assert held.is_file() and run.export["held"] == str(held) and not run.export["published"]
    assert f"HELD with plan {run.plan_id}: not published" in run.report_path.read_text(encoding="utf-8")
