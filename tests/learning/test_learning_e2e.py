"""Learning end to end on real parts: HR files → warehouse → dbt → SCIM audience groups in scim2-server;
xAPI statements in a real Ralph LRS and an LMS transcript file → completions → compliance marts.

Three logical days (and a rerun of day 2): a role change moves a person in and out of an audience in
the LMS; statements pulled twice and a late statement appear exactly once; due dates and annual expiry
flip at the day boundary; transcript rows land in the same marts.
"""
from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest

from hrlms import pipeline
from hrlms.devenv.ralph import LocalRalph
from hrlms.learning.xapi import VERBS, LrsConfig, post_statements
from hrlms.sync.scim import ScimClient, lms_config_from_env
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker

pytestmark = pytest.mark.e2e

D1, D2, D3 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)
# The LRS is shared by the session's tests: a home page of our own keeps these learners apart.
HOME = f"https://hr-{uuid.uuid4().hex[:8]}.example.com"
BASE = "https://lms.example.com/xapi/activities/"
RULES = """
version: 1
requirements:
  - {id: SAFE, kind: course, title: Workplace safety}
  - {id: ENG, kind: course, title: Secure coding}
  - {id: ANNUAL, kind: certification, title: Annual compliance, recurrence: {valid_months: 12, window_days: 30}}
rules:
  - {id: safe-all, requirement: SAFE, match: {all: true}, due: {days: 1}}
  - {id: eng, requirement: ENG, match: {job_families: [Engineering]}, due: {days: 30}}
  - {id: annual, requirement: ANNUAL, match: {all: true}, due: {days: 30}}
"""


def people(day: date):
    rows = [worker(1, Time_Zone="UTC"), worker(2, Time_Zone="UTC"),
            worker(3, Job_Family="Engineering", Time_Zone="UTC"), worker(4, Time_Zone="UTC")]
    if day >= D2:   # role change: P3 leaves engineering, P2 joins it
        rows[1] = worker(2, Job_Family="Engineering", Time_Zone="UTC")
        rows[2] = worker(3, Job_Family="Sales", Time_Zone="UTC")
    return rows


def statement(person: str, verb: str, requirement: str, when: str, score: float | None = None) -> dict:
    s = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{HOME}|{person}|{verb}|{requirement}|{when}")),
         "actor": {"objectType": "Agent", "account": {"homePage": HOME, "name": person}},
         "verb": {"id": VERBS[verb], "display": {"en-US": verb}},
         "object": {"objectType": "Activity", "id": BASE + requirement},
         "timestamp": when}
    if score is not None:
        s["result"] = {"score": {"scaled": score}, "success": score >= 0.7, "completion": True}
    return s


def run(landing, day, key=None):
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(people(day)))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(ORG_CSV)
    return pipeline.run_all(key or f"learning-{day}", day)


def q(sql, *args):
    with db.connect() as c:
        return c.execute(sql, args).fetchall()


def ours(sql_where: str = "true"):
    """(events, distinct event ids) of this test's learners in marts.learning_completions."""
    return q(f"select count(*), count(distinct event_id) from marts.learning_completions "
             f"where account_person_id is not null and {sql_where}")


def statuses():
    return {(p, r): s for p, r, s in q("select person_id, requirement_id, status from marts.learning_compliance_status")}


def lms_audiences() -> dict[str, list[str]]:
    """What the LMS itself holds: audience group externalId -> members' externalIds (read over SCIM)."""
    with ScimClient(lms_config_from_env()) as c:
        users = {u["id"]: u["externalId"] for u in c.iter_users(page_size=500)}
        out: dict[str, list[str]] = {}
        for g in c.iter_groups(page_size=500):
            if str(g.get("externalId", "")).startswith("req:"):
                assert g["externalId"] not in out, f"duplicate group {g['externalId']}"
                out[g["externalId"]] = sorted(users[m["value"]] for m in g.get("members") or [])
    return out


def exported(landing, day: date) -> dict[str, list[str]]:
    """The day's published CSV enrolment export as audience group -> members."""
    import csv

    out: dict[str, list[str]] = {}
    with (landing.parent / "reports" / "exports" / f"enrolments_{day.isoformat()}.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            out.setdefault("req:" + r["requirement_id"], []).append(r["user_external_id"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture
def own_lrs(tmp_path):
    """A Ralph of this test's own: the pull's watermark is the newest statement timestamp in the warehouse,
    and statements other tests of the session posted to the shared LRS (stamped today) would move it past
    this test's (stamped 2026-01-05), so its day-2 pull would skip them."""
    with LocalRalph(tmp_path / "lrs") as server:
        yield LrsConfig(server.base_url, server.username, server.password)


@pytest.fixture
def learning_env(fresh_db, fresh_lms, landing, own_lrs, tmp_path, monkeypatch):
    lrs_config = own_lrs
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("HRLMS_LEARNING_RULES", str(rules))
    monkeypatch.setenv("HRLMS_LRS_URL", lrs_config.url)
    monkeypatch.setenv("HRLMS_LRS_USERNAME", lrs_config.username)
    monkeypatch.setenv("HRLMS_LRS_PASSWORD", lrs_config.password)
    monkeypatch.setenv("HRLMS_XAPI_ACTOR_HOMEPAGE", HOME)
    monkeypatch.setenv("HRLMS_XAPI_ACTIVITY_BASE", BASE)
    monkeypatch.setenv("HRLMS_XAPI_OVERLAP_HOURS", "72")
    return lrs_config


def test_assignments_reach_the_lms_and_completions_come_back_exactly_once(learning_env, landing):
    lrs = learning_env
    # Day 1: everyone gets SAFE and ANNUAL; P3 (engineering) gets ENG — as audience groups in the LMS.
    run(landing, D1)
    assert lms_audiences() == {
        "req:SAFE": ["P0000001", "P0000002", "P0000003", "P0000004"],
        "req:ENG": ["P0000003"],
        "req:ANNUAL": ["P0000001", "P0000002", "P0000003", "P0000004"],
    }
    export = (landing.parent / "reports" / "exports" / f"enrolments_{D1.isoformat()}.csv").read_text().splitlines()
    assert len(export) == 1 + 9 and export[0].startswith("user_external_id,user_name,email,requirement_id")
    assert exported(landing, D1) == lms_audiences()        # the CSV export lists what the LMS holds

    # Learner activity arrives in the LRS during day 1 (and a year-old annual certification).
    first = [
        statement("P0000001", "completed", "SAFE", "2026-01-05T10:00:00+00:00"),
        statement("P0000002", "launched", "SAFE", "2026-01-05T11:00:00+00:00"),
        statement("P0000001", "passed", "ANNUAL", "2025-01-07T10:00:00+00:00", 0.9),   # valid until 2026-01-06
        statement("P0000004", "passed", "ANNUAL", "2025-01-05T09:00:00+00:00", 0.8),   # expired on 2026-01-05
        statement("P0000003", "failed", "ENG", "2026-01-05T12:00:00+00:00", 0.3),
        statement("P0000009", "completed", "SAFE", "2026-01-05T12:00:00+00:00"),        # unknown learner
    ]
    assert post_statements(lrs, first) == len(first)

    # Day 2: the role change moves the ENG audience from P3 to P2; completions are pulled.
    run(landing, D2)
    assert lms_audiences()["req:ENG"] == ["P0000002"]
    assert exported(landing, D2) == lms_audiences()
    ended = q("select person_id, ended_on, end_reason from marts.learning_assignments where not is_open")
    assert ended == [("P0000003", D2, "no_longer_matched")]
    s = statuses()
    assert s["P0000001", "SAFE"] == "completed"
    assert s["P0000002", "SAFE"] == "in_progress"
    assert s["P0000003", "SAFE"] == "not_started"          # due 2026-01-06: fine during the 6th
    assert s["P0000001", "ANNUAL"] == "completed"
    assert s["P0000004", "ANNUAL"] == "expired"
    assert ("P0000003", "ENG") not in s                   # no longer assigned…
    assert q("select verb from marts.learning_completions where person_id = 'P0000003' and requirement_id = 'ENG'") \
        == [("failed",)]                                   # …but its history is kept
    assert ours() == [(6, 6)]

    # Day 2 again: pulled twice, still exactly once; no LMS writes.
    again = run(landing, D2, key="learning-rerun")
    assert again["apply"]["writes"] == 0
    assert q("select count(*) from raw_lms.xapi_statements where actor_account_homepage = %s", HOME) == [(6,)]
    assert ours() == [(6, 6)]

    # A late statement (it happened on day 1 before the newest one already pulled, so it is older than
    # the watermark but inside the overlap window) and an LMS transcript.
    assert post_statements(lrs, [statement("P0000003", "completed", "SAFE", "2026-01-05T08:00:00+00:00")]) == 1
    (landing / f"transcripts_{D3.isoformat()}.csv").write_text(
        "Record_ID,User_External_ID,User_Email,Course_Code,Status,Completed_On,Score\n"
        "T-1,,user4@example.com,SAFE,Passed,2026-01-06,92\n")
    run(landing, D3)
    s = statuses()
    assert s["P0000003", "SAFE"] == "completed"            # the late statement counted
    assert s["P0000002", "SAFE"] == "overdue"              # due the 6th: overdue from the 7th
    assert s["P0000001", "ANNUAL"] == "expired"            # completed 2025-01-07: expired from 2026-01-07
    assert s["P0000004", "SAFE"] == "completed"            # from the transcript file
    assert q("select source, score from marts.learning_completions where event_id = 'transcript:T-1'") == [
        ("transcript", Decimal("0.92"))]
    assert ours() == [(8, 8)]
    report = landing.parent / "reports" / "compliance" / f"compliance_{D3.isoformat()}.html"
    assert "<svg" in report.read_text()

    # Access latency (marts.access_events): every completion is visible from the build of the run that pulled
    # it, minutes (of the run's own time line) after the LRS stored it; the role change moved the ENG audience
    # in day 2's run; assignments are measured against their due dates.
    d2, d3 = f"learning-{D2}", f"learning-{D3}"
    assert q("select person_id, run_key, effective_basis from marts.access_events "
             "where event_type = 'completion_visible' order by 1, 2") == [
        ("P0000001", d2, "logical_moment_plus_elapsed"), ("P0000001", d2, "logical_moment_plus_elapsed"),
        ("P0000003", d3, "logical_moment_plus_elapsed"), ("P0000004", d2, "logical_moment_plus_elapsed"),
        ("P0000009", d2, "logical_moment_plus_elapsed")]
    low, high = q("select min(latency_hours), max(latency_hours) from marts.access_events "
                  "where event_type = 'completion_visible'")[0]
    assert 0 <= low <= high < 1, (low, high)
    moved = q("select event_type, person_id from marts.access_events where run_key = %s "
              "and event_type like 'audience%%' order by 1, 2", d2)
    assert ("audience_joined", "P0000002") in moved and ("audience_left", "P0000003") in moved, moved
    assert q("select count(*) > 0, bool_and(on_time = (effective_at <= target_at)) from marts.access_events "
             "where event_type = 'assignment_due'") == [(True, True)]
