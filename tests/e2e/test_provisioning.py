"""End-to-end: synthetic HR files → real Airflow DAG runs (dag.test) → real Postgres → real scim2-server.

The expected LMS state is computed independently from the generator's truth files (tests/e2e/expected.py)
and compared record by record after every run.
"""
from datetime import date, datetime, timedelta, timezone

import pytest

from hrlms.sync.scim import LmsConfig, ScimClient
from hrlms.synth import generate, load_truth
from hrlms.warehouse import db

from .expected import desired, diff, lms_actual, next_state

D1 = date(2026, 1, 5)
D2 = D1 + timedelta(days=1)
pytestmark = pytest.mark.e2e


def run(dag, day: date, **conf):
    return dag.test(logical_date=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc), run_conf=conf)


USER_OPS = ("create_user", "update_user", "deactivate_user", "reactivate_user")


def user_writes(url: str, run_id: str) -> int:
    """LMS writes for user accounts (groups and managers are checked by the people scenario)."""
    applied = stage(url, run_id, "apply").get("applied", {})
    return sum(applied.get(t, 0) for t in USER_OPS)


def stage(url: str, run_id: str, name: str) -> dict:
    with db.connect(url) as c:
        row = c.execute("select detail from audit.stage_runs where run_key = %s and stage = %s",
                        (run_id, name)).fetchone()
    return row[0] if row else {}


def test_day1_day2_rerun_and_rejected_snapshots(provision_dag, fresh_db, fresh_lms, landing):
    days = generate(landing, workers=600, days=2, start=D1, seed=7)
    t1, t2 = load_truth(days[0].truth_path), load_truth(days[1].truth_path)
    lms = ScimClient(LmsConfig(*fresh_lms))

    # A dry run computes and records the plan, and sends nothing.
    r0 = run(provision_dag, D1, dry_run=True)
    assert r0.state == "success"
    assert stage(fresh_db, r0.run_id, "plan")["ops"]["create_user"] > 0
    dry = stage(fresh_db, r0.run_id, "apply")
    assert dry["plan_id"] == stage(fresh_db, r0.run_id, "plan")["plan_id"] and dry["dry_run"] is True
    assert "writes" not in dry and dry["shards"] == 2        # every mapped apply task ran, none sent anything
    assert lms_actual(lms) == {}
    exported = stage(fresh_db, r0.run_id, "export")          # nor is an enrolment file published
    assert exported["published"] is False and "dry run" in exported["why"]
    assert not list((landing.parent / "reports" / "exports").glob("*.csv"))

    # Day 1: initial provisioning.
    r1 = run(provision_dag, D1)
    assert r1.state == "success"
    want1, bad1 = desired(t1, D1)
    expected1 = next_state({}, want1, bad1)
    assert diff(lms_actual(lms), expected1) == []
    assert user_writes(fresh_db, r1.run_id) == len(expected1)
    assert stage(fresh_db, r1.run_id, "gate")["workers"]["quarantined"] == len(bad1) + sum(
        1 for d in t1.defects if d["defect"] == "duplicate_row")

    # Day 2: exactly the expected deltas.
    r2 = run(provision_dag, D2)
    assert r2.state == "success"
    want2, bad2 = desired(t2, D2)
    expected2 = next_state(expected1, want2, bad2)
    assert diff(lms_actual(lms), expected2) == []
    changed = {p for p in expected2 if expected1.get(p) != expected2[p]}
    assert changed, "the day-2 change set must change something"
    assert user_writes(fresh_db, r2.run_id) == len(changed)
    kinds = {c["kind"] for c in t2.changes}
    assert {"hire", "terminate", "transfer", "rename"} <= kinds

    # Day 2 again: nothing to do, nothing written.
    r3 = run(provision_dag, D2)
    assert r3.state == "success"
    assert stage(fresh_db, r3.run_id, "ingest")["workers"]["already_loaded"] is True
    assert stage(fresh_db, r3.run_id, "apply")["writes"] == 0
    for name in ("staging", "gate", "transform"):     # nothing changed: the warehouse is not rebuilt
        assert "inputs unchanged" in stage(fresh_db, r3.run_id, name)["skipped"]
    assert diff(lms_actual(lms), expected2) == []

    # Day 3: a conflicting duplicate person_id — the run stops at the gate, the LMS is untouched.
    d3 = D2 + timedelta(days=1)
    lines = days[1].workers_path.read_text(encoding="utf-8-sig").splitlines()
    dup = lines[5].replace(",A,", ",L,", 1) if ",A," in lines[5] else lines[5] + "x"
    (landing / f"workers_{d3}.csv").write_text("\n".join(lines + [dup]) + "\n", encoding="utf-8")
    (landing / f"org_units_{d3}.csv").write_bytes(days[1].org_units_path.read_bytes())
    r4 = run(provision_dag, d3)
    assert r4.state == "failed"
    err = stage(fresh_db, r4.run_id, "gate")["error"]
    assert f"workers_{d3}.csv" in err and "Employee_ID (person_id)" in err and "line(s) 6," in err
    assert stage(fresh_db, r4.run_id, "plan") == {}
    assert "stopped at stage gate" in stage(fresh_db, r4.run_id, "export")["why"]   # no enrolment file either
    assert diff(lms_actual(lms), expected2) == []

    # Day 4: a truncated file — the run stops at ingest naming the line, the LMS is untouched.
    d4 = d3 + timedelta(days=1)
    text = days[1].workers_path.read_text(encoding="utf-8-sig")
    (landing / f"workers_{d4}.csv").write_text(text[: len(text) - 40], encoding="utf-8")
    (landing / f"org_units_{d4}.csv").write_bytes(days[1].org_units_path.read_bytes())
    r5 = run(provision_dag, d4)
    assert r5.state == "failed"
    err = stage(fresh_db, r5.run_id, "ingest")["error"]
    assert f"workers_{d4}.csv, line {len(lines)}" in err and "truncated" in err
    assert diff(lms_actual(lms), expected2) == []
    lms.close()
