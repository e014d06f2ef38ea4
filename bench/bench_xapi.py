"""Benchmark e: completions — N xAPI statements pulled from the LRS (`hrlms.pipeline.completions`) and
modelled (the learning dbt models in `hrlms.pipeline.transform`); statements/s for each.

One repeat = a fresh database and a fresh Ralph LRS (hrlms.devenv.ralph.LocalRalph, fs backend, pages of
up to 1000 statements as in the demo stack). Setup (not measured): the synthetic day with N workers
through ingest → staging → gate → transform (so the learning assignments exist), learner activity for
those assignments from `hrlms.learning.simulator.simulate` (as the demo does), cut to N statements and
written straight into Ralph's data file (`data/fs_lrs.jsonl`, one stored statement per line: the
statement plus `stored` and `authority`, exactly what Ralph writes on POST) — posting through the API
costs O(n²) on the fs backend, which re-reads the file per request. Measured, each in a fresh
interpreter: `pipeline.completions` (the pull: pages, jsonb insert per page), then `pipeline.transform`
again (dbt build; the learning models now see the statements). 'Modelling' = the dbt nodes that read the
statements (stg_lms__xapi_statements, int_learning_events, learning_completions, learning_history,
learning_compliance_*: their execution times in run_results.json, summed over 4 dbt threads) and, as
the upper bound, the whole second transform minus the first one (same day, no statements).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import common
from bench.common import START

NAME = "xapi"
TITLE = "e. Completions: xAPI statements pulled from the LRS and modelled"
TARGET = "pull and model N xAPI statements; statements/s for the pull and for the modelling (issue 6: 1M statements)"
STATEMENT_NODES = ("xapi", "learning_events", "learning_completions", "learning_history", "learning_compliance")
RUN_KEY = "bench-xapi"


def child(spec: dict) -> int:
    stage = spec["stage"]
    invocations = common.isolate_artifacts(Path(spec["work"]), gx=stage == "gate")
    from hrlms import pipeline  # noqa: F401  (imported before the clock starts)

    snaps = spec.get("snapshots")
    if stage == "ingest":
        from hrlms.warehouse import db

        with db.connect() as conn:
            db.bootstrap(conn)
    t = time.perf_counter()
    is_transform = stage in ("transform", "transform2")   # transform2: the second transform, with statements
    key = RUN_KEY + (spec.get("suffix", "") if is_transform else "")
    out = common.run_stage("transform" if is_transform else stage, key, START, snaps)
    seconds = time.perf_counter() - t
    return common.child_done(spec, {"seconds": seconds, "out": out, "dbt": invocations})


def write_statements(db_url: str, data_dir: Path, n: int, seed: int) -> dict:
    """Simulated learner activity for the day's assignments, first n statements, into Ralph's file."""
    import psycopg

    from hrlms.devenv.ralph import AUTHORITY_AGENT
    from hrlms.learning.simulator import simulate

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """select s.account_person_id, s.requirement_id, greatest(w.start_date, %s::date - 400),
                      s.due_on - s.assigned_on
               from marts.learning_compliance_status s
               join intermediate.int_learning_worker_attributes w on w.person_id = s.person_id
               where s.account_person_id is not null order by 1, 2""", (START,)).fetchall()
    assignments = [{"person_id": p, "requirement_id": r, "assigned_on": since,
                    "due_on": since + timedelta(days=int(days or 30))} for p, r, since, days in rows]
    statements = simulate(assignments, logical_date=START, seed=seed)[:n]
    data_dir.mkdir(parents=True, exist_ok=True)
    stored = datetime.now(UTC)
    with open(data_dir / "fs_lrs.jsonl", "a", encoding="utf-8") as fh:
        for i, s in enumerate(statements):
            s = {**s, "stored": (stored + timedelta(microseconds=i)).isoformat(), "authority": AUTHORITY_AGENT}
            fh.write(json.dumps(s) + "\n")
    return {"assignments": len(assignments), "statements": len(statements),
            "bytes": (data_dir / "fs_lrs.jsonl").stat().st_size}


def node_seconds(dbt: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for inv in dbt:
        if not inv.get("run_results"):
            continue
        for r in json.loads(Path(inv["run_results"]).read_text()).get("results", []):
            uid = r["unique_id"]
            if uid.startswith("model.") and any(k in uid for k in STATEMENT_NODES):
                name = uid.split(".", 2)[-1]
                out[name] = round(out.get(name, 0.0) + float(r.get("execution_time") or 0), 3)
    return out


def one_repeat(size: int, folder: Path, rep: int, seed: int) -> dict:
    from hrlms.devenv.ralph import LocalRalph

    tag = f"{size}-r{rep + 1}"
    work = common.WORK_DIR / NAME / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"wall": {}, "call": {}}
    with common.fresh_database(f"xapi_{size}") as url, LocalRalph(work / "lrs", max_page_size=1000) as lrs:
        env = {"WAREHOUSE_URL": url, "HRLMS_LANDING_DIR": str(folder), "HRLMS_SOURCE": "file",
               "HRLMS_REPORTS_DIR": str(work / "reports"), "HRLMS_LRS_URL": lrs.base_url,
               "HRLMS_LRS_USERNAME": lrs.username, "HRLMS_LRS_PASSWORD": lrs.password,
               "HRLMS_XAPI_PAGE_SIZE": "1000"}
        snaps = None
        for stage in ("ingest", "staging", "gate", "transform", "completions", "transform2"):
            if stage == "completions":
                res["setup"] = write_statements(url, lrs.data_dir, size, seed)
            t = time.perf_counter()
            out = common.run_child("bench.bench_xapi", {"stage": stage, "work": str(work), "snapshots": snaps,
                                                         "suffix": "-2" if stage == "transform2" else ""},
                                   env=env, log_name=f"xapi_{tag}_{stage}")
            res["wall"][stage] = time.perf_counter() - t
            res["call"][stage] = out["seconds"]
            if stage == "ingest":
                snaps = {k: v for k, v in out["out"].items() if k != "rows"}
            if stage == "completions":
                res["pull"] = out["out"]
            if stage in ("transform", "transform2"):
                res[f"nodes_{stage}"] = node_seconds(out["dbt"])
        import psycopg

        with psycopg.connect(url) as conn:
            res["marts"] = {t: conn.execute(f"select count(*) from marts.{t}").fetchone()[0]
                            for t in ("learning_completions", "learning_history")}
            res["raw"] = conn.execute("select count(*) from raw_lms.xapi_statements").fetchone()[0]
    n = res["setup"]["statements"]
    res["pull_s"] = res["call"]["completions"]
    res["model_nodes_s"] = sum(res["nodes_transform2"].values())
    res["model_delta_s"] = res["call"]["transform2"] - res["call"]["transform"]
    res["pull_rate"] = n / res["pull_s"]
    res["model_rate"] = n / res["model_nodes_s"] if res["model_nodes_s"] else 0
    return res


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m bench.bench_xapi", __doc__.split("\n")[0], argv,
                             default_sizes="10000,100000")
    if args.child:
        return child(common.child_spec(args))
    rec = common.Recorder(args, NAME, TITLE, TARGET)
    rec.doc["meta"]["server"] = common.server_info()
    rec.note("Size = number of statements N, drawn from the simulated activity of the assignments of a synthetic "
             "day with N workers (that day's setup — ingest, staging, gate, first transform — is not measured). "
             "Statements are written into Ralph's fs data file directly (setup), in stored order.")
    rec.note("Pull = `pipeline.completions` in a fresh interpreter: GET pages of 1000 statements (Ralph's fs "
             "backend re-reads and parses the whole file for every page, so a pull of N statements costs "
             "~N²/1000 statement parses in the LRS) and one jsonb INSERT … ON CONFLICT per page. "
             "Modelling = the execution time of the dbt models that read statements in the second "
             "`dbt build` (summed over dbt's 4 threads, so it can exceed their wall share); 'transform with − "
             "without statements' is the wall difference of the two builds of the same day.")
    for size in sorted(args.sizes):
        folder = common.synthetic_day(size, args.seed)
        common.say(f"[xapi] {size:,} statements, {args.repeats} repeat(s)")
        results = []
        for rep in range(args.repeats):
            before = common.loadavg()
            res = one_repeat(size, folder, rep, args.seed)
            rec.run_load(f"{size} r{rep + 1}", before, common.loadavg())
            results.append(res)
            common.say(f"  r{rep + 1}: {res['setup']['statements']:,} statements; pull {res['pull_s']:.1f}s "
                       f"({res['pull_rate']:.0f}/s, {res['pull']}); model nodes {res['model_nodes_s']:.1f}s "
                       f"({res['model_rate']:.0f}/s); transform {res['call']['transform']:.1f}s → "
                       f"{res['call']['transform2']:.1f}s; marts {res['marts']}")

        def col(fn, results=results):
            return [fn(r) for r in results]

        n = results[0]["setup"]["statements"]
        rec.add_row(common.row(size, "pull: pipeline.completions", col(lambda r: r["pull_s"]), digits=2,
                               statements=n, pages=results[0]["pull"].get("pages")))
        rec.add_row(common.row(size, "pull: statements/s", col(lambda r: r["pull_rate"]), unit="stmt/s", digits=0))
        rec.add_row(common.row(size, "modelling: statement models (dbt node time)", col(lambda r: r["model_nodes_s"]),
                               digits=2))
        rec.add_row(common.row(size, "modelling: statements/s (node time)", col(lambda r: r["model_rate"]),
                               unit="stmt/s", digits=0))
        rec.add_row(common.row(size, "transform without statements (setup)", col(lambda r: r["call"]["transform"]),
                               digits=2))
        rec.add_row(common.row(size, "transform with statements", col(lambda r: r["call"]["transform2"]), digits=2,
                               learning_completions=results[0]["marts"]["learning_completions"],
                               raw_statements=results[0]["raw"]))
        rec.add_row(common.row(size, "transform with − without statements", col(lambda r: r["model_delta_s"]),
                               digits=2))
        rec.set_profile({"size": size, "statement_models_s": results[0]["nodes_transform2"],
                         "same_models_without_statements_s": results[0]["nodes_transform"],
                         "setup": results[0]["setup"], "pull": results[0]["pull"]})
        rec.save()
    pulls = {r["size"]: r["median"] for r in rec.rows if r["metric"] == "pull: pipeline.completions"}
    if len(pulls) >= 2:
        a, b = sorted(pulls)[-2:]
        exp = math.log(pulls[b] / pulls[a]) / math.log(b / a)
        est = pulls[b] * (1_000_000 / b) ** exp
        rec.doc["extrapolation"] = {"from": [a, b], "exponent": round(exp, 2), "pull_1M_s": round(est)}
        rec.note(f"Pull time grew as N^{exp:.2f} between {a:,} and {b:,} statements; extrapolated with that "
                 f"exponent, 1M statements would take ~{est / 60:.0f} min to pull from this LRS (Ralph fs backend: "
                 "each page re-reads the whole file), so 1M was not run. A pull from an LRS with an indexed store "
                 f"(Ralph on Mongo/ClickHouse/ES, or an LMS's own LRS) would be bounded by our per-page insert; "
                 "see the per-page figures in the JSON.")
    path = rec.save(final=True)
    common.say(f"[xapi] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
