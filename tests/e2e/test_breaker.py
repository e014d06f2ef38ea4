"""The breaker through the real DAG: a snapshot missing 30% of the workers is held (zero LMS writes, the
run fails with the plan id); approving that plan id applies exactly that plan — not a recomputed one;
superseded and rejected plans are recorded and cannot be approved. The CSV enrolment export (a
full-state file an LMS may import) obeys the same decision: nothing is published while the plan is
held (its file is kept aside, named as held), the approved plan's file is published from what was
applied, a rejected or superseded plan's never."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timezone

import pytest

from hrlms.sync.scim import LmsConfig, ScimClient
from hrlms.warehouse import db

from ..alerts.receivers import WebhookSink
from ..sources.hrfiles import ORG_CSV, csv_text, worker

pytestmark = pytest.mark.e2e
D1, D2, D3 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)
PEOPLE = [worker(i, Time_Zone="UTC") for i in range(1, 61)]
# Everybody is in one learning audience (req:SAFE), so the enrolment export has a row per person.
RULES = """
version: 1
requirements: [{id: SAFE, kind: course, title: Workplace safety}]
rules: [{id: safe-all, requirement: SAFE, match: {all: true}, due: {days: 30}}]
"""


def run(dag, day, conf=None):
    return dag.test(logical_date=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc), run_conf=conf)


def land(landing, day, rows):
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(rows))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(ORG_CSV)


def q(sql, *args):
    with db.connect() as c:
        return c.execute(sql, args).fetchall()


def lms_active(client) -> dict[str, bool]:
    users = list(client.iter_users(page_size=500))
    ext = [u["externalId"] for u in users]
    assert len(ext) == len(set(ext)), "duplicate externalIds in the LMS"
    return {u["externalId"]: bool(u.get("active")) for u in users}


def stage_error(run_id, stage):
    rows = q("select detail ->> 'error' from audit.stage_runs where run_key = %s and stage = %s", run_id, stage)
    return rows[0][0] if rows else None


def export_rows(path) -> list[tuple[str, str]]:
    return [(r["user_external_id"], r["requirement_id"])
            for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))]


def applied_audiences() -> list[tuple[str, str]]:
    """What the LMS got: audience memberships of active accounts, as (person, requirement)."""
    return q("select m.person_id, substr(m.group_key, 5) from sync.applied_memberships m "
             "join sync.applied_users u using (person_id) where u.is_active and m.group_key like 'req:%%' "
             "order by 1, 2")


def export_outcome(run_id) -> dict:
    return q("select detail from audit.stage_runs where run_key = %s and stage = 'export'", run_id)[0][0]


def test_a_snapshot_missing_30_percent_is_held_until_that_exact_plan_is_approved(
        provision_dag, fresh_db, fresh_lms, landing, monkeypatch):
    monkeypatch.setenv("HRLMS_LEARNING_RULES", str(landing.parent / "rules.yaml"))
    (landing.parent / "rules.yaml").write_text(RULES)
    exports = landing.parent / "reports" / "exports"
    client = ScimClient(LmsConfig(*fresh_lms))
    land(landing, D1, PEOPLE)
    assert run(provision_dag, D1).state == "success"
    assert set(lms_active(client).values()) == {True} and len(lms_active(client)) == 60
    day1 = exports / f"enrolments_{D1}.csv"
    assert len(export_rows(day1)) == 60 and export_rows(day1) == applied_audiences()
    day1_bytes = day1.read_bytes()

    # Day 2: 18 of 60 workers are missing (a truncated export, or a divestiture nobody announced).
    land(landing, D2, PEOPLE[:42])
    with WebhookSink() as hook:                                  # the alert, through the report task's notifier
        monkeypatch.setenv("HRLMS_ALERT_WEBHOOK_URL", hook.url)
        held_run = run(provision_dag, D2)
    monkeypatch.delenv("HRLMS_ALERT_WEBHOOK_URL")
    assert held_run.state == "failed"
    (plan_id, status, reason), = q("select plan_id, status, held_reason from sync.plans order by plan_id desc limit 1")
    (alert,) = [r["body"] for r in hook.requests]
    assert alert["kind"] == "held" and alert["plan_id"] == plan_id and alert["run_id"] == held_run.run_id
    assert fresh_lms[1] not in str(alert)                        # the LMS token never leaves
    assert status == "held"
    assert "18 deactivations of 60 active accounts" in reason and "snapshot shrank" in reason
    assert f'"approve_plan": {plan_id}' in stage_error(held_run.run_id, "apply")
    assert q("select op_type, status, count(*) from sync.ops where plan_id = %s group by 1, 2 order by 1",
             plan_id) == [("deactivate_user", "held", 18), ("remove_members", "held", 2)]   # 18 leave 2 groups
    assert all(lms_active(client).values())                      # zero deactivations reached the LMS
    report = next((landing.parent / "reports").glob(f"run_{D2.isoformat()}_*.html")).read_text()
    assert f"Plan {plan_id} is HELD by the breaker" in report
    # No enrolment file for the held day is published (an LMS importing full state would drop the 18
    # missing people's enrolments); yesterday's stays as it was; the held file is kept aside for review.
    held = exports / "held" / f"enrolments_{D2}.plan{plan_id}.HELD.csv"
    assert not (exports / f"enrolments_{D2}.csv").exists() and day1.read_bytes() == day1_bytes
    assert sorted(p.name for p in exports.glob("*.csv")) == [day1.name]
    assert len(export_rows(held)) == 42
    outcome = export_outcome(held_run.run_id)
    assert outcome["published"] is False and outcome["plan_id"] == plan_id and outcome["held"] == str(held)
    assert f"HELD with plan {plan_id}: not published" in report and str(held) in report
    report_json = json.loads(next((landing.parent / "reports").glob(f"run_{D2}_*.json")).read_text())
    assert report_json["export"]["held"] == str(held)

    # A person approves that plan: exactly its 18 ops are applied; no new plan is computed.
    held_ops = q("select op_id, coalesce(person_id, group_key) from sync.ops where plan_id = %s order by op_id",
                 plan_id)
    approved = run(provision_dag, D2, {"approve_plan": plan_id, "decided_by": "jane.doe"})
    assert approved.state == "success"
    assert q("select max(plan_id) from sync.plans") == [(plan_id,)]
    assert q("select op_id, coalesce(person_id, group_key) from sync.ops where plan_id = %s and status = 'applied' "
             "order by op_id", plan_id) == held_ops
    assert q("select status from sync.plans where plan_id = %s", plan_id) == [("applied",)]
    assert q("select decision, decided_by from sync.plan_decisions where plan_id = %s", plan_id) == [
        ("approved", "jane.doe")]
    active = lms_active(client)
    gone = {p for (_op, p) in held_ops if not p.startswith(("org:", "req:"))}
    assert {p for p, a in active.items() if not a} == gone and len(gone) == 18
    # The approval publishes the held day's file: what was applied (42 people), not a recomputation.
    day2 = exports / f"enrolments_{D2}.csv"
    assert export_rows(day2) == applied_audiences() and len(export_rows(day2)) == 42
    assert export_outcome(approved.run_id)["published"] is True
    assert not held.exists() and (exports / "held" / f"enrolments_{D2}.plan{plan_id}.APPROVED.csv").exists()
    assert day1.read_bytes() == day1_bytes
    day2_bytes = day2.read_bytes()

    # The same plan cannot be approved twice.
    again = run(provision_dag, D2, {"approve_plan": plan_id})
    assert again.state == "failed"
    assert "is applied, not held" in stage_error(again.run_id, "decision")
    assert export_outcome(again.run_id)["published"] is False and day2.read_bytes() == day2_bytes

    # Day 3: everybody is back except 12 more missing → held; a rerun supersedes that plan; the
    # superseded one cannot be approved, the newer one is rejected: nothing reaches the LMS.
    land(landing, D3, PEOPLE[:30])
    assert run(provision_dag, D3).state == "failed"
    first = q("select max(plan_id) from sync.plans")[0][0]
    assert run(provision_dag, D3).state == "failed"
    second = q("select max(plan_id) from sync.plans")[0][0]
    assert second > first
    assert q("select status from sync.plans where plan_id in (%s, %s) order by plan_id", first, second) == [
        ("superseded",), ("held",)]
    late = run(provision_dag, D3, {"approve_plan": first})
    assert late.state == "failed"
    assert f"waiting for a decision is {second}" in stage_error(late.run_id, "decision")
    assert run(provision_dag, D3, {"reject_plan": second, "decided_by": "jane.doe"}).state == "success"
    assert q("select status from sync.plans where plan_id = %s", second) == [("rejected",)]
    assert q("select count(*) from sync.ops where plan_id = %s and status <> 'rejected'", second) == [(0,)]
    assert {p for p, a in lms_active(client).items() if not a} == gone    # nothing new reached the LMS
    # …nor any enrolment file: the superseded and the rejected plans' files stay aside, so named.
    assert not (exports / f"enrolments_{D3}.csv").exists()
    assert sorted(p.name for p in exports.glob("*.csv")) == [day1.name, day2.name]
    assert day1.read_bytes() == day1_bytes and day2.read_bytes() == day2_bytes
    assert sorted(p.name for p in (exports / "held").iterdir()) == sorted([
        f"enrolments_{D2}.plan{plan_id}.APPROVED.csv", f"enrolments_{D3}.plan{first}.SUPERSEDED.csv",
        f"enrolments_{D3}.plan{second}.REJECTED.csv"])
