"""Benchmark g: HR change events through Airflow's REST API → LMS (issue 17, hrlms_hr_events).

Per size (a fresh database, a fresh scim2-server, an Airflow of its own: api-server + scheduler +
dag-processor on 127.0.0.1, LocalExecutor, SQLite metadata DB — what `make airflow-ui` runs):

- setup (not timed as a figure): day 1's synthetic HR file through the whole pipeline (`pipeline.run_all`:
  every account created in the LMS), the Airflow started, hrlms_hr_events unpaused;
- **single events, one at a time**: `--events` events, each changing one active person's job title, posted with
  `POST /api/v2/assets/events` (a JWT from `POST /auth/token`); the latency is measured from the POST to the
  LMS write (`sync.ops.applied_at` of the person's update, written in the apply's transaction right after the
  LMS answered) and confirmed by reading the user back from the LMS; the next event is posted when the run that
  applied it has finished (the latency of an event that meets an idle pipeline);
- **a burst**: `--burst` events (one person each) posted as fast as the API takes them; the time from the first
  POST to the last LMS write, and the number of runs Airflow made of them;
- **the next daily run**: day 2's file = day 1's with the events' changes (as HR's export would have them), written
  after the events; its LMS writes for the events' people (expected 0).

Results: .local/bench/events.json (bench/report.py renders it), and the run's log.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import time
from datetime import datetime, timedelta, timezone

from bench import common
from bench.common import START

NAME = "events"
TITLE = "g. HR change events through Airflow's REST API → LMS (hrlms_hr_events)"
TARGET = ("single events posted one at a time: HR event → LMS write p50 ≤ 15 s, p95 ≤ 30 s with 1M workers in the "
          "warehouse; a burst of 1,000 events within a minute all applied; the next daily run 0 writes for them")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _applied_at(url: str, person_id: str, after: float) -> float | None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("select extract(epoch from min(applied_at)) from sync.ops where person_id = %s "
                        "and op_type = 'update_user' and status = 'applied' and applied_at >= to_timestamp(%s)",
                        (person_id, after - 1)).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def _idle(af, token: str) -> bool:
    runs = af.api("GET", "/dags/hrlms_hr_events/dagRuns", token, params={"limit": 100,
                                                                          "order_by": "-run_after"}).json()["dag_runs"]
    return all(r["state"] in ("success", "failed") for r in runs)


def _landing(folder, work):
    """A fresh `work` folder whose landing holds the synthetic day 1 under today's date, extracted 10 minutes ago:
    (the landing folder, day 1's moment = now). Events are applied at their run's moment (wall time): day 1 is
    run at the same moment (a day-1 run at the synthetic data's own date would leave every date in between for
    the first event run), and HR made the events after the file was extracted."""
    shutil.rmtree(work, ignore_errors=True)
    landing = work / "landing"
    landing.mkdir(parents=True)
    moment1 = datetime.now(timezone.utc).replace(microsecond=0)
    past = time.time() - 600
    for f in folder.glob(f"*_{START.isoformat()}.csv"):
        copy = landing / f.name.replace(START.isoformat(), moment1.date().isoformat())
        shutil.copy(f, copy)
        os.utime(copy, (past, past))
    return landing, moment1


def run_size(workers: int, args) -> dict:
    from hrlms import pipeline
    from hrlms.devenv.airflow import hr_events_airflow
    from hrlms.devenv.scim import LocalScimServer
    from hrlms.sync.scim import ScimClient, lms_config_from_env

    folder = common.synthetic_day(workers, args.seed)
    work = common.BENCH_DIR / "work" / f"events_{workers}"
    landing, moment1 = _landing(folder, work)
    moment2 = moment1 + timedelta(days=1)
    out: dict = {"workers": workers}
    with common.fresh_database("events") as url, LocalScimServer(work / "lms") as lms:
        os.environ.update({
            "WAREHOUSE_URL": url, "AIRFLOW_CONN_HRLMS_WAREHOUSE": url, "HRLMS_LMS_URL": lms.base_url,
            "HRLMS_LMS_TOKEN": lms.token, "HRLMS_LANDING_DIR": str(landing), "HRLMS_REPORTS_DIR": str(work / "reports"),
            "AIRFLOW_CONN_HRLMS_LMS": json.dumps({"conn_type": "http", "host": lms.base_url, "password": lms.token})})
        t = time.perf_counter()
        pipeline.run_all("day1", moment1)
        out["setup_day1_s"] = round(time.perf_counter() - t, 1)
        common.say(f"  day 1 in the LMS ({workers:,} workers) in {out['setup_day1_s']} s")
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            people = [r[0] for r in c.execute("select person_id from sync.applied_users where is_active "
                                              "order by person_id")]
        rng = random.Random(args.seed)
        chosen = rng.sample(people, args.events + args.burst)
        singles, burst = chosen[:args.events], chosen[args.events:]
        with hr_events_airflow(work / "airflow") as (af, token, asset_id):
            titles: dict[str, str] = {}
            tally = [0]

            def post(person: str, n: int) -> float:
                title = f"Events bench title {n}"
                titles[person] = title
                extra = {"event_id": f"bench-{workers}-{n}", "hr_timestamp": datetime.now(timezone.utc).isoformat(),
                         "source": "bench", "records": [{"Employee_ID": person, "Job_Title": title}]}
                return _post(af, token, asset_id, extra, tally)

            with ScimClient(lms_config_from_env()) as client:
                if singles:
                    out["single"] = _singles(af, token, url, singles, post, 0, args.timeout,
                                             lambda p: (client.find_user(external_id=p) or {}).get("title") == titles[p])

            out["burst"] = _burst(af, token, url, burst, post, len(singles), args.timeout) | {"post_retries": tally[0]}
            common.say(f"  burst of {len(burst)}: {out['burst']}")

        # the next daily file, extracted after the events, repeats them
        _write_next_file(landing, moment1.date(), moment2.date(), "Job_Title", titles)
        t = time.perf_counter()
        pipeline.run_all("day2", moment2)
        with psycopg.connect(url, autocommit=True) as c:
            plan_id = c.execute("select max(plan_id) from sync.plans").fetchone()[0]
            sent = c.execute("select count(*) filter (where person_id = any(%s)), count(*) from sync.ops "
                             "where plan_id = %s and status = 'applied'", (list(titles), plan_id)).fetchone()
        out["next_day"] = {"seconds": round(time.perf_counter() - t, 1), "writes_for_event_people": sent[0],
                           "writes": sent[1]}
        common.say(f"  next daily run: {out.get('next_day') or out.get('next_day_error')}")
    return out


def run_size_warehouse(workers: int, args) -> dict:
    """--warehouse-only (1M: scim2-server cannot hold the population in reasonable time): day 1 built by the
    warehouse stages (bench_churn.warehouse_day) and recorded as applied by SQL (bench_churn.seed_applied), a
    fresh scim2-server seeded with the accounts the events touch (their direct reports and groups too), then
    the same single events as run_size, each a rename (a new preferred name: it touches no group and no
    learning rule, so the seeded LMS holds all the event run may write). A first event, not counted, takes the
    run from day 1's moment to now (the dates that crossed in between); then `--events` single events and the
    burst. The next daily run (day 2's file = day 1's with the events' names, extracted after them) is built up to
    its plan, which is not applied (it may touch accounts the seeded LMS does not hold): its ops for the events'
    people are the writes it would send them (expected 0)."""
    from bench import bench_churn
    from hrlms.devenv.airflow import hr_events_airflow
    from hrlms.devenv.scim import LocalScimServer
    from hrlms.sync.scim import ScimClient, lms_config_from_env
    from hrlms.warehouse import lease

    folder = bench_churn.churn_days(workers, args.seed)
    work = common.BENCH_DIR / "work" / f"events_{workers}_wh"
    landing, moment1 = _landing(folder, work)
    out: dict = {"workers": workers, "mode": "warehouse-only day 1, LMS seeded with the accounts the events touch"}
    import psycopg

    with common.fresh_database("events_wh") as url:
        t = time.perf_counter()
        d1 = bench_churn.warehouse_day(db_url=url, folder=landing, on=moment1.date(), run_key="bench-events-d1",
                                       work=work, log=f"events_wh_{workers}_day1")
        out["setup_day1_warehouse_s"] = round(time.perf_counter() - t, 1)
        out["seed_applied"] = bench_churn.seed_applied(url, d1["plan"]["plan_id"])
        with psycopg.connect(url, autocommit=True) as c:
            lease.release(c, "bench-events-d1")          # warehouse_day runs no report stage
            people = [r[0] for r in c.execute("select person_id from sync.applied_users where is_active "
                                              "order by person_id")]
        common.say(f"  day 1 in the warehouse ({workers:,} workers) in {out['setup_day1_warehouse_s']} s, "
                   f"{len(people):,} active accounts recorded as applied")
        rng = random.Random(args.seed)
        chosen = rng.sample(people, 1 + args.events + args.burst)
        warm, singles, burst = chosen[0], chosen[1:1 + args.events], chosen[1 + args.events:]
        with LocalScimServer(work / "lms") as lms:
            out["lms_seed"] = bench_churn.seed_lms(url, None, lms, args.seed_members_max, people=chosen)
            common.say(f"  LMS seeded: {out['lms_seed']['users']:,} users, {out['lms_seed']['groups']:,} groups")
            os.environ.update({
                "WAREHOUSE_URL": url, "AIRFLOW_CONN_HRLMS_WAREHOUSE": url, "HRLMS_LMS_URL": lms.base_url,
                "HRLMS_LMS_TOKEN": lms.token, "HRLMS_LANDING_DIR": str(landing),
                "HRLMS_REPORTS_DIR": str(work / "reports"),
                "AIRFLOW_CONN_HRLMS_LMS": json.dumps({"conn_type": "http", "host": lms.base_url,
                                                      "password": lms.token})})
            with hr_events_airflow(work / "airflow") as (af, token, asset_id), \
                    ScimClient(lms_config_from_env()) as client:
                names: dict[str, str] = {}

                tally = [0]

                def post(person: str, n: int) -> float:
                    names[person] = f"Evt{n}"
                    extra = {"event_id": f"bench-wh-{workers}-{n}", "hr_timestamp": datetime.now(timezone.utc).isoformat(),
                             "source": "bench", "records": [{"Employee_ID": person, "Preferred_Name": names[person]}]}
                    return _post(af, token, asset_id, extra, tally)

                def renamed(person: str) -> bool:
                    user = client.find_user(external_id=person) or {}
                    return (user.get("displayName") or "").startswith(names[person] + " ")

                warm_up = _singles(af, token, url, [warm], post, 0, args.timeout, renamed, quiet=True)
                out["warm_up_s"] = warm_up["latencies_s"][0]
                common.say(f"  warm-up event (day 1's moment → now): {out['warm_up_s']} s")
                if singles:
                    out["single"] = _singles(af, token, url, singles, post, 1, args.timeout, renamed)
                if burst:
                    out["burst"] = _burst(af, token, url, burst, post, 1 + args.events, args.timeout) | \
                        {"post_retries": tally[0]}
                    common.say(f"  burst of {len(burst)}: {out['burst']}")
                out["stages"] = _event_stages(url)
        try:   # the figures above are kept if this fails
            out["next_day"] = _next_day_planned(url, landing, moment1, names, work, workers)
        except Exception as e:  # noqa: BLE001 (reported in the results)
            out["next_day_error"] = f"{type(e).__name__}: {e}"
        common.say(f"  next daily run: {out.get('next_day') or out.get('next_day_error')}")
    return out


def _next_day_planned(url: str, landing, moment1: datetime, names: dict[str, str], work, workers: int) -> dict:
    """Day 2 in the warehouse: day 1's file with the events' preferred names, written after the events; its plan's ops
    for the events' people."""
    import psycopg

    from bench import bench_churn

    day2 = (moment1 + timedelta(days=1)).date()
    _write_next_file(landing, moment1.date(), day2, "Preferred_Name", names)
    t = time.perf_counter()
    d2 = bench_churn.warehouse_day(db_url=url, folder=landing, on=day2, run_key="bench-events-d2", work=work,
                                   log=f"events_wh_{workers}_day2")
    with psycopg.connect(url, autocommit=True) as c:
        ops = c.execute("select count(*) filter (where person_id = any(%s)), count(*) from sync.ops where plan_id = %s",
                        (list(names), d2["plan"]["plan_id"])).fetchone()
    return {"seconds": round(time.perf_counter() - t, 1), "writes_for_event_people": ops[0], "planned_ops": ops[1],
            "event_people": len(names), "counted": "the ops of its plan (built, not applied)"}


def _write_next_file(landing, day1, day2, column: str, values: dict[str, str]) -> None:
    """The next daily export, written now (after the events): day 1's file with `column` set to the events' values,
    and day 1's org file."""
    src_path, dst_path = landing / f"workers_{day1.isoformat()}.csv", landing / f"workers_{day2.isoformat()}.csv"
    with src_path.open(newline="", encoding="utf-8-sig") as src, dst_path.open("w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["Employee_ID"] in values:
                row[column] = values[row["Employee_ID"]]
            writer.writerow(row)
    shutil.copy(landing / f"org_units_{day1.isoformat()}.csv", landing / f"org_units_{day2.isoformat()}.csv")


def _post(af, token: str, asset_id: int, extra: dict, tally: list[int]) -> float:
    """POST one asset event; returns when it was posted. As an HR relay must (at-least-once; the event id makes a
    repeat harmless): a 5xx is retried (counted in tally[0]) — the local Airflow's SQLite metadata DB answers 500
    ("database is locked") when a burst meets task updates."""
    posted = time.time()
    for attempt in range(8):
        resp = af.api("POST", "/assets/events", token, json={"asset_id": asset_id, "extra": extra})
        if resp.status_code < 500:
            break
        tally[0] += 1
        time.sleep(0.25 * 2 ** attempt)
    resp.raise_for_status()
    return posted


def _singles(af, token: str, url: str, people: list[str], post, start: int, timeout: float, read_back,
             quiet: bool = False) -> dict:
    """One event per person, each posted when the run that applied the one before has ended: the latencies from
    the POST to the LMS write, and how many `read_back(person)` confirmed in the LMS."""
    latencies, confirmed = [], 0
    for n, person in enumerate(people, start=start):
        posted = post(person, n)
        while (done := _applied_at(url, person, posted)) is None:
            if time.time() - posted > timeout:
                raise common.BenchError(f"event {n} ({person}) not applied within {timeout} s")
            time.sleep(0.1)
        latencies.append(round(done - posted, 2))
        confirmed += bool(read_back(person))
        if not quiet:
            common.say(f"  event {len(latencies)}/{len(people)}: {latencies[-1]:.1f} s")
        while not _idle(af, token):
            time.sleep(0.5)
    out = {"events": len(latencies), "p50_s": _pct(latencies, 0.5), "p95_s": _pct(latencies, 0.95),
           "max_s": max(latencies), "latencies_s": latencies, "read_back_ok": confirmed}
    if not quiet:
        common.say(f"  single events: p50 {out['p50_s']} s, p95 {out['p95_s']} s")
    return out


def _burst(af, token: str, url: str, burst: list[str], post, start: int, timeout: float) -> dict:
    runs_before = af.api("GET", "/dags/hrlms_hr_events/dagRuns", token).json()["total_entries"]
    first = time.time()
    for n, person in enumerate(burst, start=start):
        post(person, n)
    posted_in = time.time() - first
    pending, last, idle_since = set(burst), first, None
    while pending and time.time() - first < timeout * 4:
        for person in list(pending):
            if (done := _applied_at(url, person, first)) is not None:
                pending.discard(person)
                last = max(last, done)
        idle_since = (idle_since or time.time()) if _idle(af, token) else None
        if pending and idle_since and time.time() - idle_since > 60:
            break
        time.sleep(0.5)
    while not _idle(af, token):
        time.sleep(0.5)
    runs = af.api("GET", "/dags/hrlms_hr_events/dagRuns", token).json()["total_entries"] - runs_before
    return {"events": len(burst), "posted_in_s": round(posted_in, 1), "applied": len(burst) - len(pending),
            "not_applied": sorted(pending)[:20], "first_post_to_last_write_s": round(last - first, 1), "runs": runs}


def _event_stages(url: str) -> list[dict]:
    """Per event run (in order): the seconds of each stage (audit.stage_runs) and the transform's change set."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("""select run_key, stage, seconds, detail -> 'changes' -> 'people'
                            from audit.stage_runs where run_key not like 'bench-%%'
                            order by started_at""").fetchall()
    runs: dict[str, dict] = {}
    for run_key, stage, seconds, people in rows:
        r = runs.setdefault(run_key, {"run_key": run_key})
        r[stage] = round(float(seconds), 2)
        if people is not None:
            r["change_set_people"] = people
    return list(runs.values())


def main(argv: list[str] | None = None) -> int:
    common.exit_on_sigterm()

    def extra(ap):
        ap.add_argument("--events", type=int, default=20, help="single events posted one at a time (default 20)")
        ap.add_argument("--burst", type=int, default=200, help="events in the burst (default 200)")
        ap.add_argument("--timeout", type=float, default=600, help="seconds an event may take (default 600)")
        ap.add_argument("--warehouse-only", action="store_true",
                        help="day 1 in the warehouse only (applied state seeded by SQL), the LMS seeded with the "
                             "accounts the events touch: the mode for 1M workers (events are renames)")
        ap.add_argument("--seed-members-max", type=int, default=20_000,
                        help="warehouse-only: seed the events' groups with all their members up to this many "
                             "memberships, else only the seeded accounts (default 20,000)")

    args = common.parse_args(f"python -m bench.bench_{NAME}", TITLE, argv, default_sizes="10000", extra=extra)
    started = datetime.now(timezone.utc)
    server = common.server_info()            # before run_size points WAREHOUSE_URL at its own database
    results, rows, checks = [], [], []
    for size in args.sizes:
        common.say(f"{NAME}: {size:,} workers")
        load = common.loadavg()
        r = (run_size_warehouse if args.warehouse_only else run_size)(size, args)
        r["load_before"], r["load_after"] = load, common.loadavg()
        results.append(r)
        if "single" in r:
            rows += [common.row(size, "HR event → LMS write, p50 (single events)", [r["single"]["p50_s"]]),
                     common.row(size, "HR event → LMS write, p95 (single events)", [r["single"]["p95_s"]])]
            checks += [{"figure": f"HR event → LMS write p50 at {size:,} workers", "value": r["single"]["p50_s"],
                        "unit": "s", "target": "≤ 15 s (at 1M)", "met": r["single"]["p50_s"] <= 15},
                       {"figure": f"HR event → LMS write p95 at {size:,} workers", "value": r["single"]["p95_s"],
                        "unit": "s", "target": "≤ 30 s (at 1M)", "met": r["single"]["p95_s"] <= 30}]
        if "burst" in r:
            rows.append(common.row(size, f"burst of {r['burst']['events']}: first POST → last LMS write",
                                   [r["burst"]["first_post_to_last_write_s"]], runs_used=r["burst"]["runs"]))
            checks.append({"figure": f"burst of {r['burst']['events']} at {size:,} workers: events applied",
                           "value": r["burst"]["applied"], "unit": "events", "target": f"all {r['burst']['events']}",
                           "met": r["burst"]["applied"] == r["burst"]["events"]})
        if "next_day" in r:
            rows.append(common.row(size, "next daily run: LMS writes for the events' people",
                                   [r["next_day"]["writes_for_event_people"]], unit="writes", digits=0))
            checks.append({"figure": f"next daily run after the events at {size:,} workers: writes for them",
                           "value": r["next_day"]["writes_for_event_people"], "unit": "writes", "target": "0",
                           "met": r["next_day"]["writes_for_event_people"] == 0})
    common.write_single_run(args, NAME, TITLE, TARGET, rows=rows, checks=checks, results=results, started=started,
                            server=server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
