"""`make demo`: synthetic HR extract → day 1, day 2, day 2 again through the real Airflow DAG.

Runs `hrlms_provision` with `dag.test()` for each logical date against the services `hrlms.devenv`
started (throwaway Postgres, scim2-server, Ralph LRS), shows progress per stage, then a summary read
back from the warehouse: rows loaded, quarantined and why, LMS operations by type, time per stage, and
where the reports are.

Learning: day 1 assigns requirements by the rules file (audience groups in the LMS). Between day 1 and
day 2 a learner-activity simulator posts xAPI statements for the assigned people to the LRS (their
history: launches, failures, completions, some late) and the LMS exports a transcript file; day 2
pulls both back and writes the compliance report (HTML with charts) next to the Data Docs. At the end, the
access-timeliness headline of the last run (hires active before day one, leavers deactivated in time) and
its page (hrlms.access.report).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hrlms.settings import REPO_ROOT

STAGES = ("ingest", "completions", "staging", "gate", "transform", "plan", "marts", "apply", "export", "report")
console = Console()


def _quiet_airflow() -> None:
    # Task logs go to the run's log files; the console shows our progress instead.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))


def generate(landing: Path, workers: int, seed: int, start: date) -> list:
    from hrlms.synth.generator import generate as gen

    with console.status(f"Generating a synthetic HR extract: {workers:,} workers, 2 days (seed {seed})…"):
        t = time.perf_counter()
        days = gen(landing, workers=workers, days=2, start=start, seed=seed)
    console.print(f"[green]✓[/] HR extract in {landing} ({time.perf_counter() - t:.1f}s): "
                  + ", ".join(f"{d.day}: {d.rows:,} rows, {d.changes} changes, {d.defects} seeded defects"
                              for d in days))
    return days


def run_day(dag, label: str, day: date) -> tuple[str, str]:
    """dag.test() for one logical date, with a progress bar fed by the pipeline's stage hook."""
    from hrlms import pipeline

    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} {task.fields[stage]}"), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"{label} ({day})", total=len(STAGES), stage="")

        def hook(stage: str, event: str, detail: dict) -> None:
            if event == "start":
                progress.update(task, stage=f"{stage}…")
            else:
                progress.update(task, advance=1, stage=f"{stage} {'✓' if event == 'done' else '✗'}")

        pipeline.stage_hook = hook
        try:
            run = dag.test(logical_date=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc))
        finally:
            pipeline.stage_hook = None
        progress.update(task, completed=len(STAGES))
    return run.run_id, str(run.state)


def day_summary(conn, run_key: str) -> dict:
    stages = {s: (float(sec), d) for s, sec, d in conn.execute(
        "select stage, seconds, detail from audit.stage_runs where run_key = %s", (run_key,))}
    ingest = stages.get("ingest", (0, {}))[1]
    gate = stages.get("gate", (0, {}))[1].get("workers", {})
    plan = stages.get("plan", (0, {}))[1]
    apply = stages.get("apply", (0, {}))[1]
    return {
        "seconds": {s: stages[s][0] for s in STAGES if s in stages},
        "rows": (ingest.get("workers") or {}).get("rows"),
        "already_loaded": (ingest.get("workers") or {}).get("already_loaded"),
        "quarantined": gate.get("quarantined"),
        "reasons": gate.get("reasons", {}),
        "plan_id": plan.get("plan_id"),
        "planned": plan.get("ops", {}),
        "attributes": plan.get("attributes", {}),
        "applied": apply.get("applied", {}),
        "writes": apply.get("writes", 0),
        "escrow": apply.get("escrow", 0),
        "dead_letter": apply.get("dead_letter", 0),
        "pulled": stages.get("completions", (0, {}))[1].get("fetched", 0),
        "pulled_new": stages.get("completions", (0, {}))[1].get("inserted", 0),
        "error": next((d.get("error") for _s, (_t, d) in stages.items() if d.get("error")), None),
    }


def print_summary(runs: list[tuple[str, date, dict]], lms: dict, issues: dict[str, int], reports: Path,
                  docs: Path, learning: dict) -> None:
    t = Table(title="hrlms demo — summary", show_lines=True)
    t.add_column("")
    for label, day, _ in runs:
        t.add_column(f"{label}\n{day}", justify="right")

    def row(name, fn):
        t.add_row(name, *[fn(s) for _l, _d, s in runs])

    row("rows loaded", lambda s: f"{s['rows']:,}" + (" (same file: no-op)" if s["already_loaded"] else ""))
    row("rows quarantined", lambda s: str(s["quarantined"]))
    row("  why", lambda s: "\n".join(f"{k}: {v}" for k, v in sorted(s["reasons"].items())) or "-")
    row("LMS ops planned", lambda s: "\n".join(f"{k}: {v:,}" for k, v in sorted(s["planned"].items())) or "none")
    row("  changed attributes", lambda s: "\n".join(f"{k}: {v}" for k, v in sorted(s["attributes"].items())) or "-")
    row("LMS writes", lambda s: f"{s['writes']:,}")
    row("escrow / dead letters", lambda s: f"{s['escrow']} / {s['dead_letter']}")
    row("xAPI statements pulled (new)", lambda s: f"{s['pulled']:,} ({s['pulled_new']:,})")
    for stage in STAGES[:-1]:
        row(f"time: {stage}", lambda s, st=stage: f"{s['seconds'].get(st, 0):.1f}s")
    row("time: total", lambda s: f"{sum(s['seconds'].values()):.1f}s")
    console.print(t)
    console.print(f"LMS now holds {lms['total']:,} users ({lms['active']:,} active, {lms['inactive']:,} deactivated; "
                  f"{lms['with_manager']:,} with a manager) and {lms['groups']:,} org groups with "
                  f"{lms['memberships']:,} memberships ({lms['audiences']:,} learning audience groups with "
                  f"{lms['audience_members']:,} members).")
    console.print(f"Learning: {learning['assignments']:,} open assignments — "
                  + ", ".join(f"{k} {v:,}" for k, v in sorted(learning["status"].items()))
                  + f"; {learning['completions']:,} learning events in marts.learning_completions "
                    f"({learning['pulled']:,} xAPI statements pulled).")
    if issues:
        console.print("Open HR data issues (marts.dq_person_issues): "
                      + ", ".join(f"{k}: {v:,}" for k, v in issues.items()))
    console.print(f"Data-quality report (GX Data Docs): [link=file://{docs}]{docs}[/link]")
    console.print(f"Run reports (plan, quarantine, outcomes): {reports}")
    compliance = sorted((reports / "compliance").glob("compliance_*.html"))
    if compliance:
        console.print(f"Compliance report (HR): [link=file://{compliance[-1]}]{compliance[-1]}[/link]")
    exports = sorted((reports / "exports").glob("enrolments_*.csv"))
    if exports:
        console.print(f"CSV enrolment export (LMSs without an API): {exports[-1]}")
    held = sorted((reports / "exports" / "held").glob("enrolments_*.HELD.csv"))
    if held:
        console.print(f"[yellow]Held enrolment export (plan held by the breaker, not published): {held[-1]}[/]")


def print_access(conn, reports: Path, day: date) -> Path:
    """The access-timeliness headline of the last run with access changes (one line) and its page
    (hrlms.access.report) next to the compliance report."""
    from rich.markup import escape

    from hrlms.access.report import describe, headline, write_access_report

    head = headline(conn)
    page = write_access_report(conn, reports, day, head.get("run_key"))
    which = f"last run with access changes, {head['run_logical_ts'][:10]}" if head.get("run_logical_ts") else "last run"
    console.print(f"Access timeliness ({escape(which)}): {escape(describe(head))}; "
                  f"page: [link=file://{page}]{escape(str(page))}[/link]")
    return page


def lms_counts() -> dict:
    """What the LMS itself holds now (read back over SCIM, not from our own records)."""
    from hrlms.sync.scim import ENTERPRISE, ScimClient, lms_config_from_env

    with ScimClient(lms_config_from_env()) as c:
        users = list(c.iter_users(page_size=1000))
        groups = list(c.iter_groups(page_size=1000))
    active = sum(1 for u in users if u.get("active"))
    managed = sum(1 for u in users if ((u.get(ENTERPRISE) or {}).get("manager") or {}).get("value"))
    audiences = [g for g in groups if str(g.get("externalId", "")).startswith("req:")]
    return {"total": len(users), "active": active, "inactive": len(users) - active, "with_manager": managed,
            "groups": len(groups), "memberships": sum(len(g.get("members") or []) for g in groups),
            "audiences": len(audiences), "audience_members": sum(len(g.get("members") or []) for g in audiences)}


def simulate_learning(conn, landing: Path, day1: date, day2: date, seed: int) -> dict:
    """Learner activity up to the end of day 1 → the LRS (xAPI), and an LMS transcript file for day 2.

    Each assignment's history starts at the person's start date (at most 400 days back), so some
    annual completions have expired and some people are overdue, as in a real company.
    """
    from hrlms.learning.simulator import simulate
    from hrlms.learning.xapi import lrs_config_from_env, post_statements

    lrs = lrs_config_from_env()
    if lrs is None:
        return {"statements": 0, "transcripts": 0}
    rows = conn.execute(
        """select s.account_person_id, s.requirement_id,
                  greatest(w.start_date, %s::date - 400), s.due_on - s.assigned_on
           from marts.learning_compliance_status s
           join intermediate.int_learning_worker_attributes w on w.person_id = s.person_id
           where s.account_person_id is not null and s.requirement_id <> 'FIN-400'
           order by 1, 2""", (day1,)).fetchall()
    assignments = [{"person_id": p, "requirement_id": r, "assigned_on": since,
                    "due_on": since + timedelta(days=int(days or 30))} for p, r, since, days in rows]
    with console.status(f"Simulating learner activity for {len(assignments):,} assignments…"):
        t = time.perf_counter()
        statements = simulate(assignments, logical_date=day1, seed=seed)
        posted = post_statements(lrs, statements)
    console.print(f"[green]✓[/] {posted:,} xAPI statements posted to the LRS ({time.perf_counter() - t:.1f}s)")
    # The finance certification is tracked in another LMS, which exports a transcript file.
    fin = conn.execute("""select account_person_id from marts.learning_compliance_status
                          where requirement_id = 'FIN-400' and account_person_id is not null
                          order by md5(account_person_id || %s::text)""", (str(seed),)).fetchall()
    lines = ["Record_ID,User_External_ID,User_Email,Course_Code,Status,Completed_On,Score"]
    for n, (person,) in enumerate(fin[: len(fin) * 2 // 3]):
        passed = n % 5 != 0
        lines.append(f"TR{n:06d},{person},,FIN-400,{'Passed' if passed else 'Failed'},"
                     f"{(day1 - timedelta(days=n % 700)).isoformat()},{85 if passed else 55}")
    (landing / f"transcripts_{day2.isoformat()}.csv").write_text("\n".join(lines) + "\n")
    console.print(f"[green]✓[/] LMS transcript export for {day2}: {len(lines) - 1:,} rows")
    return {"statements": posted, "transcripts": len(lines) - 1}


def learning_summary(conn) -> dict:
    status = dict(conn.execute("select status, count(*) from marts.learning_compliance_status group by 1").fetchall())
    return {
        "status": status,
        "assignments": sum(status.values()),
        "completions": conn.execute("select count(*) from marts.learning_completions").fetchone()[0],
        "pulled": conn.execute("select count(*) from raw_lms.xapi_statements").fetchone()[0],
    }


MART_SAMPLES = {
    "marts.learning_compliance_status": "select person_id, requirement_id, status, assigned_on, due_on, completed_on, "
                                        "score, expires_on from marts.learning_compliance_status "
                                        "order by md5(assignment_id) limit 5",
    "marts.learning_compliance_rollup": "select dimension, dimension_label, requirement_id, assigned, completed, overdue, "
                                        "expired, completion_rate from marts.learning_compliance_rollup "
                                        "where dimension = 'org_subtree' and requirement_id = '*' "
                                        "order by assigned desc limit 5",
    "marts.learning_compliance_monthly": "select month_end_on, person_id, requirement_id, status, due_on, expires_on "
                                         "from marts.learning_compliance_monthly order by md5(person_id || requirement_id) "
                                         "limit 3",
    "marts.learning_assignments": "select person_id, requirement_id, assigned_on, due_on, rule_ids, is_open, end_reason "
                                  "from marts.learning_assignments order by is_open, md5(assignment_id) limit 4",
    "marts.learning_completions": "select source, account_person_id, requirement_id, verb, occurred_at, score "
                                  "from marts.learning_completions order by md5(event_id) limit 4",
    "marts.learning_history": "select person_id, requirement_id, occurred_at, event, source, score "
                              "from marts.learning_history where person_id = (select person_id from "
                              "marts.learning_completions where person_id is not null order by md5(event_id) limit 1) "
                              "order by occurred_at limit 6",
}


def print_mart_samples(conn) -> None:
    """A few rows of each learning mart, so the demo shows what BI and HR get."""
    for name, sql in MART_SAMPLES.items():
        cur = conn.execute(sql)
        t = Table(title=f"sample: {name}", title_justify="left")
        for col in cur.description:
            t.add_column(col.name)
        for row in cur.fetchall():
            t.add_row(*("" if v is None else str(v) for v in row))
        console.print(t)


def open_issues(conn) -> dict[str, int]:
    if conn.execute("select to_regclass('marts.dq_person_issues')").fetchone()[0] is None:
        return {}
    return dict(conn.execute("select issue_type, count(*) from marts.dq_person_issues where is_open "
                             "group by 1 order by 2 desc").fetchall())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hrlms.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 5))
    ap.add_argument("--out", type=Path, default=REPO_ROOT / ".local" / "demo")
    args = ap.parse_args(argv)

    _quiet_airflow()
    if args.out.exists():
        shutil.rmtree(args.out)
    landing, reports = args.out / "landing", args.out / "reports"
    os.environ["HRLMS_LANDING_DIR"] = str(landing)
    os.environ["HRLMS_REPORTS_DIR"] = str(reports)
    os.environ.setdefault("HRLMS_SOURCE", "file")

    generate(landing, args.workers, args.seed, args.start)
    with console.status("Loading the hrlms_provision DAG…"):
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).get_dag("hrlms_provision")

    from hrlms.warehouse import db

    day1, day2 = args.start, args.start + timedelta(days=1)
    runs = []
    for label, day in (("day 1: initial", day1), ("day 2: changes", day2), ("day 2 again", day2)):
        run_id, state = run_day(dag, label, day)
        with db.connect() as conn:
            summary = day_summary(conn, run_id)
        if state != "success":
            console.print(f"[red]✗ {label} ended {state}: {summary['error']}[/]")
            return 1
        runs.append((label, day, summary))
        if label.startswith("day 1"):
            with db.connect() as conn:
                simulate_learning(conn, landing, day1, day2, args.seed)
    with db.connect() as conn:
        issues = open_issues(conn)
        learning = learning_summary(conn)
        print_mart_samples(conn)
    print_summary(runs, lms_counts(), issues, reports,
                  REPO_ROOT / "expectations/gx/uncommitted/data_docs/local_site/index.html", learning)
    with db.connect() as conn:
        print_access(conn, reports, day2)
    if runs[-1][2]["writes"] != 0:
        console.print(f"[red]✗ the rerun of day 2 made {runs[-1][2]['writes']} LMS writes (expected 0)[/]")
        return 1
    console.print("[green]✓ the rerun of day 2 made 0 LMS writes[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
