"""Benchmark h: the apply on Airflow's CeleryExecutor with 1 and 2 workers (issue 19).

Per size and per worker count (`--workers`, default 1,2): a fresh database, a fresh scim2-server (the same LMS
for every count) and a Celery stack of its own (hrlms.devenv.airflow.celery_airflow: Redis broker, metadata DB on
Postgres, api-server + scheduler + dag-processor, N `airflow celery worker` processes, all on 127.0.0.1). Each
worker has one task slot (`--concurrency 1`) and consumes every queue, so N is the number of task slots; the plan
is applied by `--shards` mapped tasks (HRLMS_APPLY_SHARDS, default 2). Day 1 of a synthetic population is
triggered through the REST API (`POST /api/v2/dags/hrlms_provision/dagRuns`), as an HR export job would.

Measured per run: the apply window (first apply task's start → last one's end, from the task instances), the
LMS writes (audit.stage_runs 'apply'), writes/s over the window, the hostnames the shards ran on, the whole run,
and what limits it — the CPU seconds of the LMS process (scim2-server, one Python process) and of the Celery
workers during the window, read from /proc.

Results: .local/bench/celery.json (bench/report.py renders it), and the run's log.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import common
from bench.common import START

NAME = "celery"
TITLE = "h. The apply on the CeleryExecutor: 1 and 2 workers against the same LMS"
TARGET = "apply throughput with 1 and 2 Celery workers against the same LMS, and what limits it (issue 19)"


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` and their reaped children (/proc/<pid>/stat fields 14–17), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _worker_pids(af) -> list[int]:
    from hrlms.devenv.airflow import session_members

    return [pid for name, proc in af.procs.items() if name.startswith("worker-")
            for pid in [proc.pid, *session_members(proc.pid)]]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_once(workers: int, slots: int, args) -> dict:
    import psycopg

    from hrlms.devenv.airflow import CeleryWorker, celery_airflow
    from hrlms.devenv.scim import LocalScimServer

    folder = common.synthetic_day(workers, args.seed)
    work = common.BENCH_DIR / "work" / f"celery_{workers}_{slots}"
    shutil.rmtree(work, ignore_errors=True)
    landing = work / "landing"
    landing.mkdir(parents=True)
    for f in folder.glob(f"*_{START.isoformat()}.csv"):
        shutil.copy(f, landing / f.name)
    out: dict = {"workers": workers, "celery_workers": slots, "shards": args.shards}
    with common.fresh_database(f"celery{slots}") as url, LocalScimServer(work / "lms") as lms:
        os.environ.update({
            "WAREHOUSE_URL": url, "AIRFLOW_CONN_HRLMS_WAREHOUSE": url, "HRLMS_LMS_URL": lms.base_url,
            "HRLMS_LMS_TOKEN": lms.token, "HRLMS_LANDING_DIR": str(landing), "HRLMS_REPORTS_DIR": str(work / "reports"),
            "AIRFLOW_CONN_HRLMS_LMS": json.dumps({"conn_type": "http", "host": lms.base_url, "password": lms.token}),
            "HRLMS_PROVISION_SCHEDULE": "none", "HRLMS_APPLY_SHARDS": str(args.shards)})
        pool = [CeleryWorker(f"w{i}", concurrency=1) for i in range(1, slots + 1)]
        t = time.perf_counter()
        with celery_airflow(work / "airflow", pool) as af:
            out["stack_up_s"] = round(time.perf_counter() - t, 1)
            token = af.token()
            af.unpause_when_parsed(token, "hrlms_provision")
            resp = af.api("POST", "/dags/hrlms_provision/dagRuns", token,
                          json={"logical_date": f"{START.isoformat()}T00:00:00Z", "conf": {}})
            resp.raise_for_status()
            run_id = resp.json()["dag_run_id"]
            lms_pid = lms._proc.pid if lms._proc else 0
            started, samples = time.perf_counter(), []
            state = "queued"
            while state not in ("success", "failed"):
                if time.perf_counter() - started > args.timeout:
                    raise common.BenchError(f"run {run_id} not finished within {args.timeout} s")
                # CPU counters every second: the window's figures are read from the samples around it
                samples.append((time.time(), _cpu_seconds([lms_pid]), _cpu_seconds(_worker_pids(af))))
                time.sleep(1)
                state = af.api("GET", f"/dags/hrlms_provision/dagRuns/{run_id}", token).json()["state"]
            out["run_s"] = round(time.perf_counter() - started, 1)
            out["state"] = state
            tis = af.api("GET", f"/dags/hrlms_provision/dagRuns/{run_id}/taskInstances", token).json()["task_instances"]
        applies = [t for t in tis if t["task_id"] == "apply"]
        first, last = min(_ts(t["start_date"]) for t in applies), max(_ts(t["end_date"]) for t in applies)
        out["apply_window_s"] = round(last - first, 1)
        out["shards_on"] = {str(t["map_index"]): t["hostname"] for t in applies}
        out["shard_seconds"] = {str(t["map_index"]): round(t["duration"] or 0, 1) for t in applies}
        inside = [s for s in samples if first <= s[0] <= last]
        if len(inside) >= 2:
            span = inside[-1][0] - inside[0][0]
            out["lms_cpu_share"] = round((inside[-1][1] - inside[0][1]) / span, 2)       # cores used by the LMS
            out["workers_cpu_share"] = round((inside[-1][2] - inside[0][2]) / span, 2)   # by the Celery workers
        with psycopg.connect(url, autocommit=True) as c:
            detail = c.execute("select detail from audit.stage_runs where run_key = %s and stage = 'apply'",
                               (run_id,)).fetchone()[0]
            out["ops_applied"] = c.execute("select count(*) from sync.ops where status = 'applied'").fetchone()[0]
        out["writes"] = detail.get("writes", 0)
        out["writes_per_s"] = round(out["writes"] / max(out["apply_window_s"], 0.1), 1)
    common.say(f"  {slots} worker(s): {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    common.exit_on_sigterm()

    def extra(ap):
        ap.add_argument("--workers", default="1,2", help="Celery worker counts to compare (default 1,2)")
        ap.add_argument("--shards", type=int, default=2, help="HRLMS_APPLY_SHARDS (default 2)")
        ap.add_argument("--timeout", type=float, default=1800, help="seconds a run may take (default 1800)")

    args = common.parse_args(f"python -m bench.bench_{NAME}", TITLE, argv, default_sizes="10000", extra=extra)
    counts = [int(n) for n in str(args.workers).split(",") if n.strip()]
    started = datetime.now(timezone.utc)
    server = common.server_info()
    results, rows, checks = [], [], []
    for size in args.sizes:
        by_count = {}
        for n in counts:
            common.say(f"{NAME}: {size:,} workers, {n} Celery worker(s)")
            load = common.loadavg()
            r = run_once(size, n, args)
            r["load_before"], r["load_after"] = load, common.loadavg()
            results.append(r)
            by_count[n] = r
            rows += [common.row(size, f"{n} Celery worker(s): apply window (first shard start → last shard end)",
                                [r["apply_window_s"]], writes=r["writes"], shards_on=r["shards_on"]),
                     common.row(size, f"{n} Celery worker(s): LMS writes/s over the apply window", [r["writes_per_s"]],
                                unit="writes/s", lms_cpu_cores=r.get("lms_cpu_share"),
                                workers_cpu_cores=r.get("workers_cpu_share")),
                     common.row(size, f"{n} Celery worker(s): whole run (trigger → success)", [r["run_s"]])]
            checks.append({"figure": f"{size:,} workers, {n} Celery worker(s): run state, ops all applied",
                           "value": f"{r['state']}, {r['ops_applied']}", "unit": "", "target": "success",
                           "met": r["state"] == "success"})
        if 1 in by_count and 2 in by_count:
            ratio = by_count[2]["writes_per_s"] / max(by_count[1]["writes_per_s"], 0.1)
            rows.append(common.row(size, "2 workers ÷ 1 worker, writes/s", [round(ratio, 2)], unit="×"))
    common.write_single_run(args, NAME, TITLE, TARGET, rows=rows, checks=checks, results=results, started=started,
                            server=server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
