"""The breaker through the real DAG: a snapshot missing 30% of the workers is held (zero LMS writes, the
run fails with the plan id); approving that plan id applies exactly that plan — not a recomputed one;
superseded and rejected plans are recorded and cannot be approved."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from hrlms.sync.scim import LmsConfig, ScimClient
from hrlms.warehouse import db

from ..alerts.receivers import WebhookSink
from ..sources.hrfiles import ORG_CSV, csv_text, worker

pytestmark = pytest.mark.e2e
D1, D2, D3 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)
PEOPLE = [worker(i, Time_Zone="UTC") for i in range(1, 61)]


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


def test_a_snapshot_missing_30_percent_is_held_until_that_exact_plan_is_approved(
        provision_dag, fresh_db, fresh_lms, landing, monkeypatch):
    monkeypatch.setenv("HRLMS_LEARNING_RULES", str(landing.parent / "no_rules.yaml"))
    (landing.parent / "no_rules.yaml").write_text("requirements: [{id: NONE, kind: course, title: none}]\n")
    client = ScimClient(LmsConfig(*fresh_lms))
    land(landing, D1, PEOPLE)
    assert run(provision_dag, D1).state == "success"
    assert set(lms_active(client).values()) == {True} and len(lms_active(client)) == 60

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
             plan_id) == [("deactivate_user", "held", 18), ("remove_members", "held", 1)]   # 18 leave their group
    assert all(lms_active(client).values())                      # zero deactivations reached the LMS
    report = next((landing.parent / "reports").glob(f"run_{D2.isoformat()}_*.html")).read_text()
    assert f"Plan {plan_id} is HELD by the breaker" in report

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
    gone = {p for (_op, p) in held_ops if not p.startswith("org:")}
    assert {p for p, a in active.items() if not a} == gone and len(gone) == 18

    # The same plan cannot be approved twice.
    again = run(provision_dag, D2, {"approve_plan": plan_id})
    assert again.state == "failed"
    assert "is applied, not held" in stage_error(again.run_id, "decision")

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
