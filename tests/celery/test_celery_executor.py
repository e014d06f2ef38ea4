"""Issue 19 against the real CeleryExecutor: api-server + scheduler + dag-processor + two `airflow celery worker`
processes (a Redis broker, the metadata DB and Celery's result backend on Postgres; all on 127.0.0.1). Runs of
hrlms_provision are triggered through the REST API, as an HR export job would.

Worker placement as a user would set it: w1 consumes the default, warehouse and lms queues, w2 only default and lms
(a machine next to the LMS) — so the warehouse tasks run on w1 only and the apply shards on both.

Day 1 (3,000 synthetic workers): w2 is SIGKILLed — with every process it started, as a lost machine — in the middle
of its apply shard, and restarted as a supervisor would. The shard's task is retried; the retry takes back only
the ops its shard had claimed (they were 'sending': outcome unknown, so it looks the accounts up first) and the run
converges: the LMS holds exactly the desired accounts, one per externalId, every op applied once.
The other shard ran on w1 meanwhile: the apply spread over both workers. Day 2: a clean run on the same stack; the
LMS follows HR exactly.
"""
from __future__ import annotations

import os
from datetime import date, timedelta
from urllib.parse import urlsplit

import pytest

from hrlms.devenv.airflow import CeleryWorker, celery_airflow, session_members
from hrlms.devenv.redis import redis_available
from hrlms.sync.scim import LmsConfig, ScimClient
from hrlms.synth import generate, load_truth
from hrlms.warehouse import db

from ..devenv.test_services import listening_addresses
from ..e2e.expected import desired, diff, lms_actual, next_state
from ..events.test_events_rest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not redis_available(), reason="redis-server not installed (apt-get install -y --no-install-recommends redis-server; "
                              "make test installs it when run as root)")]

D1 = date(2026, 1, 5)
D2 = D1 + timedelta(days=1)
WORKERS = [CeleryWorker("w1", ("default", "warehouse", "lms")), CeleryWorker("w2", ("default", "lms"))]
WAREHOUSE_TASKS = {"ingest", "completions", "staging", "gate", "transform", "plan"}


def trigger(af, token: str, day: date) -> str:
    resp = af.api("POST", "/dags/hrlms_provision/dagRuns", token,
                  json={"logical_date": f"{day.isoformat()}T00:00:00Z", "conf": {}})
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_run_id"]


def finished(af, token: str, run_id: str, timeout: float) -> str:
    return wait_for(f"run {run_id}", lambda: (lambda s: s if s in ("success", "failed") else None)(
        af.api("GET", f"/dags/hrlms_provision/dagRuns/{run_id}", token).json()["state"]), timeout, every=1)


def task_instances(af, token: str, run_id: str) -> list[dict]:
    return af.api("GET", f"/dags/hrlms_provision/dagRuns/{run_id}/taskInstances", token).json()["task_instances"]


def tries(af, token: str, run_id: str, map_index: int) -> list[dict]:
    return af.api("GET", f"/dags/hrlms_provision/dagRuns/{run_id}/taskInstances/apply/{map_index}/tries",
                  token).json()["task_instances"]


def listening_sockets(pids: set[int]) -> set[str]:
    """The addresses `pids` listen on (TCP LISTEN sockets owned by them, from /proc), as "ip:port"."""
    import socket
    from pathlib import Path

    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:                 # 0A = LISTEN
                addr, port = fields[1].split(":")
                raw = bytes.fromhex(addr)
                raw = raw[::-1] if family == socket.AF_INET else b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(f"{socket.inet_ntop(family, raw)}:{int(port, 16)}")
    return found


def check_placement(tis: list[dict]) -> None:
    """The warehouse tasks ran on the warehouse queue (so on w1), the apply shards on the lms queue."""
    for ti in tis:
        if ti["task_id"] in WAREHOUSE_TASKS:
            assert (ti["queue"], ti["hostname"]) == ("warehouse", "w1"), ti
        if ti["task_id"] == "apply":
            assert ti["queue"] == "lms", ti


def test_provisioning_on_two_celery_workers_survives_a_lost_worker(fresh_db, fresh_lms, landing, tmp_path,
                                                                     monkeypatch):
    days = generate(landing, workers=3000, days=2, start=D1, seed=19)
    monkeypatch.setenv("HRLMS_PROVISION_SCHEDULE", "none")          # only the runs this test triggers
    monkeypatch.setenv("HRLMS_APPLY_SHARDS", "2")
    monkeypatch.setenv("HRLMS_LMS_BATCH_SIZE", "100")               # many batches: the kill lands mid-shard
    monkeypatch.setenv("HRLMS_APPLY_RETRY_DELAY_SECONDS", "2")
    lms = ScimClient(LmsConfig(*fresh_lms))
    # A lost worker's task is failed (then retried) once its heartbeat is 30 s old (Airflow's default: 300 s).
    with celery_airflow(tmp_path / "airflow", WORKERS,
                        extra_env={"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30"}) as af:
        token = af.token()
        af.unpause_when_parsed(token, "hrlms_provision")
        # nothing of the stack listens beyond loopback (the workers serve no logs: --skip-serve-logs)
        sockets = listening_sockets({pid for proc in af.procs.values()
                                     for pid in (proc.pid, *session_members(proc.pid))})
        assert f"127.0.0.1:{af.port}" in sockets and all(a.startswith("127.0.0.1:") for a in sockets), sockets
        broker = urlsplit(af.env["AIRFLOW__CELERY__BROKER_URL"])
        assert listening_addresses(broker.port) == {"127.0.0.1"} and broker.password

        # Day 1: kill w2 in the middle of its shard.
        run1 = trigger(af, token, D1)

        def w2_shard_sending():
            tis = task_instances(af, token, run1)
            applies = [ti for ti in tis if ti["task_id"] == "apply"]
            assert not applies or any(ti["state"] in (None, "scheduled", "queued", "running") for ti in applies), \
                f"the apply ended before w2's shard could be killed: {[(t['hostname'], t['state']) for t in applies]}"
            for ti in tis:
                if ti["task_id"] == "apply" and ti["state"] == "running" and ti["hostname"] == "w2":
                    with db.connect(fresh_db) as c:
                        sent, sending = c.execute(
                            """select count(*) filter (where status = 'applied'),
                                      count(*) filter (where status = 'sending')
                               from sync.ops where claimed_by = %s""", (str(ti["map_index"]),)).fetchone()
                    if sent >= 100 and sending:
                        return (ti["map_index"],)          # a tuple: shard 0 is a valid answer
            return None

        (killed,) = wait_for("w2's shard sending its ops", w2_shard_sending, 600, every=0.1)
        af.kill("worker-w2")
        with db.connect(fresh_db) as c:
            in_flight = {r[0] for r in c.execute(
                "select op_id from sync.ops where status = 'sending' and claimed_by = %s", (str(killed),))}
            other = 1 - killed
            other_sending = {r[0] for r in c.execute(
                "select op_id from sync.ops where status = 'sending' and claimed_by = %s", (str(other),))}
        assert in_flight, "the kill must leave ops of the killed shard with an unknown outcome"
        af.spawn("worker-w2")                                          # restarted, as a supervisor would
        assert finished(af, token, run1, 600) == "success"

        history = tries(af, token, run1, killed)
        assert len(history) >= 2 and history[0]["hostname"] == "w2" and history[-1]["state"] == "success", history
        # the shards ran on both workers: the other one on w1, once
        assert [(t["hostname"], t["state"]) for t in tries(af, token, run1, other)] == [("w1", "success")]
        check_placement(task_instances(af, token, run1))
        t1 = load_truth(days[0].truth_path)
        want1, bad1 = desired(t1, D1)
        expected1 = next_state({}, want1, bad1)
        assert diff(lms_actual(lms), expected1) == []                  # one account per externalId, as desired
        with db.connect(fresh_db) as c:
            ops = c.execute("""select op_id, status, attempts, claimed_by, verify_first from sync.ops
                               where plan_id = (select max(plan_id) from sync.plans)""").fetchall()
        assert {status for _, status, *_ in ops} == {"applied"}
        retried = {op_id for op_id, _, attempts, _, _ in ops if attempts > 1}
        # The retry took back exactly its own shard's unfinished ops; the other shard's were never claimed twice.
        assert in_flight <= retried
        assert all(claimed == str(killed) and verify for op_id, _, attempts, claimed, verify in ops
                   if op_id in retried)
        assert not retried & other_sending

        # Day 2: a clean run on the same workers (its few ops may all go to one of them: whichever is free).
        run2 = trigger(af, token, D2)
        assert finished(af, token, run2, 600) == "success"
        tis = task_instances(af, token, run2)
        check_placement(tis)
        t2 = load_truth(days[1].truth_path)
        want2, bad2 = desired(t2, D2)
        assert diff(lms_actual(lms), next_state(expected1, want2, bad2)) == []
        print(f"day 1: killed shard {killed} ({len(in_flight)} ops in flight) retried on "
              f"{[t['hostname'] for t in history]}; day 2 shards on "
              f"{sorted(ti['hostname'] for ti in tis if ti['task_id'] == 'apply')}")
