"""Issue 17 against the real stack: an HR change event posted to Airflow's REST API (a token of the API's own,
no listener of ours) triggers hrlms_hr_events through the scheduler (api-server + scheduler + dag-processor on
127.0.0.1, LocalExecutor), and the LMS (scim2-server) holds the change."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from hrlms import pipeline
from hrlms.devenv.airflow import hr_events_airflow

from ..sources.hrfiles import worker
from .test_events import D1, at, land_file, lms

pytestmark = pytest.mark.e2e


def wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@contextmanager
def day_one_and_airflow(landing, tmp_path):
    """Day 1's file (5 workers) in the LMS, then an Airflow of its own (metadata DB in tmp_path) on the test's
    warehouse and LMS (already set: used as given), hrlms_hr_events unpaused: (airflow, token, asset id)."""
    rows = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 6)]
    land_file(landing, D1, rows, mtime=datetime.now(timezone.utc) - timedelta(minutes=5))
    pipeline.run_all("d1", at(D1, 6))
    assert len(lms()) == 5
    with hr_events_airflow(tmp_path / "airflow") as started:
        yield started


def test_events_posted_to_the_rest_api_change_the_lms_and_a_killed_event_run_converges(fresh_db, fresh_lms, landing,
                                                                                       tmp_path):
    """One Airflow for both halves (its start and day 1 cost ~40 s): an event changes the LMS (hire, rename,
    leaver); then the event run's build is SIGKILLed while another event arrives: nothing lost, nothing twice."""
    import signal

    from hrlms.warehouse import db

    with day_one_and_airflow(landing, tmp_path) as (af, token, asset_id):
        hr_ts = datetime.now(timezone.utc).isoformat()
        extra = {"event_id": "wd-1", "hr_timestamp": hr_ts, "source": "workday", "records": [
            worker(6, Manager_ID="P0000001", Job_Title="New hire"),
            {"Employee_ID": "P0000002", "Last_Name": "Married", "Org_Unit": "ORG0002"},
            {"Employee_ID": "P0000003", "Worker_Status": "T", "Termination_Date": "01/02/2026",
             "Last_Day_Of_Work": "01/02/2026"}]}
        posted = time.monotonic()
        resp = af.api("POST", "/assets/events", token, json={"asset_id": asset_id, "extra": extra})
        assert resp.status_code == 200, resp.text

        def arrived():
            users = lms()
            return users if ("P0000006" in users and users["P0000002"]["name"]["familyName"] == "Married"
                             and users["P0000003"]["active"] is False) else None

        users = wait_for("the event's changes in the LMS", arrived, 300, every=0.5)
        latency = time.monotonic() - posted
        assert users["P0000006"]["active"] and users["P0000006"]["title"] == "New hire"
        runs = wait_for("the run to finish", lambda: [
            r for r in af.api("GET", "/dags/hrlms_hr_events/dagRuns", token).json()["dag_runs"]
            if r["state"] in ("success", "failed")], 120)
        assert [r["state"] for r in runs] == ["success"] and runs[0]["run_type"] == "asset_triggered"
        print(f"HR event → LMS: {latency:.1f} s (5 workers; the run's tasks on LocalExecutor)")
        # the run's record: the event landed once, the report written
        tis = af.api("GET", f"/dags/hrlms_hr_events/dagRuns/{runs[0]['dag_run_id']}/taskInstances", token).json()
        assert {t["task_id"]: t["state"] for t in tis["task_instances"]}["report"] == "success"
        print("tasks:", {t["task_id"]: (t["start_date"][11:23], round(t["duration"] or 0, 1))
                         for t in sorted(tis["task_instances"], key=lambda t: t["start_date"] or "")})
        with db.connect(fresh_db) as c:
            first_plans = c.execute("select max(plan_id) from sync.plans").fetchone()[0]

        # A crash of the event run (SIGKILL of its build task) while another event arrives.
        def post(event_id: str, record: dict) -> None:
            extra = {"event_id": event_id, "hr_timestamp": datetime.now(timezone.utc).isoformat(), "records": [record]}
            af.api("POST", "/assets/events", token, json={"asset_id": asset_id, "extra": extra}).raise_for_status()

        post("k-1", {"Employee_ID": "P0000002", "Last_Name": "Killed"})

        def build_running():
            runs = af.api("GET", "/dags/hrlms_hr_events/dagRuns", token).json()["dag_runs"]
            for run in runs:
                tis = af.api("GET", f"/dags/hrlms_hr_events/dagRuns/{run['dag_run_id']}/taskInstances", token).json()
                for ti in tis["task_instances"]:
                    if ti["task_id"] == "build" and ti["state"] == "running" and (pid := _task_pid(ti["id"])):
                        return run["dag_run_id"], pid
            return None

        run_id, pid = wait_for("the event run's build task", build_running, 180, every=0.2)
        time.sleep(3)                                                                  # into staging/the gate
        post("k-2", {"Employee_ID": "P0000004", "Job_Title": "Posted meanwhile"})     # while the run is busy
        os.kill(pid, signal.SIGKILL)                                                   # mid-build

        def converged():
            users = lms()
            return users if (users["P0000002"]["name"]["familyName"] == "Killed"
                             and users["P0000004"]["title"] == "Posted meanwhile") else None

        users = wait_for("both events in the LMS", converged, 360, every=1)
        runs = wait_for("every run to finish", lambda: (lambda rs: rs if rs and all(
            r["state"] in ("success", "failed") for r in rs) else None)(
            af.api("GET", "/dags/hrlms_hr_events/dagRuns", token).json()["dag_runs"]), 180)
        assert {r["state"] for r in runs} == {"success"}
        tis = af.api("GET", f"/dags/hrlms_hr_events/dagRuns/{run_id}/taskInstances", token).json()["task_instances"]
        assert next(t for t in tis if t["task_id"] == "build")["try_number"] >= 2     # killed, then retried
    assert len(users) == 6 and len({u["externalId"] for u in users.values()}) == 6
    with db.connect(fresh_db) as c:
        sent = c.execute("""select person_id, op_type, count(*) from sync.ops where status = 'applied'
                            and person_id in ('P0000002', 'P0000004') and plan_id > %s group by 1, 2""",
                         (first_plans,)).fetchall()
        assert sorted(sent) == [("P0000002", "update_user", 1), ("P0000004", "update_user", 1)]
        assert c.execute("select count(*) from raw_hris.hr_events").fetchone()[0] == 3
        assert c.execute("select run_key from audit.pipeline_lease").fetchone()[0] is None


def _task_pid(ti_id: str) -> int | None:
    """The process running task instance `ti_id` (Airflow titles it 'airflow worker -- <ti id>')."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"airflow worker -- {ti_id}" in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    return int(proc.name)
            except OSError:
                continue
    return None
