"""Benchmark e: completions — N xAPI statements pulled from the LRS (`hrlms.pipeline.completions`) and
modelled (the learning dbt models in `hrlms.pipeline.transform`); statements/s for each.

Two sources (``--source``):

``ralph`` (default). One repeat = a fresh database and a fresh Ralph LRS (hrlms.devenv.ralph.LocalRalph,
fs backend, pages of up to 1000 statements as in the demo stack). Setup (not measured): the synthetic day
with N workers through ingest → staging → gate → transform (so the learning assignments exist), learner
activity for those assignments from `hrlms.learning.simulator.simulate` (as the demo does), cut to N
statements and written straight into Ralph's data file (`data/fs_lrs.jsonl`, one stored statement per
line: the statement plus `stored` and `authority`, exactly what Ralph writes on POST) — posting through
the API costs O(n²) on the fs backend, which re-reads the file per request. Measured, each in a fresh
interpreter: `pipeline.completions` (the pull: pages, jsonb insert per page), then `pipeline.transform`
again (dbt build; the learning models now see the statements). 'Modelling' = the dbt nodes that read the
statements (stg_lms__xapi_statements, int_learning_events, learning_completions, learning_history,
learning_compliance_*: their execution times in run_results.json, summed over 4 dbt threads) and, as
the upper bound, the whole second transform minus the first one (same day, no statements).

``warehouse`` — our side of a pull at sizes Ralph's fs backend cannot serve (it re-reads and parses its
whole file for every page, so a pull of N statements costs ~N²/1000 statement parses inside the LRS:
hours at 1M). No LRS is started. Setup (not measured) is the same synthetic day, but for a population of
``--workers W`` (default N capped at 100,000; its simulated activity must hold at least N statements,
else the run stops before measuring and asks for a larger W), and the same statements (same lines as
Ralph's file) are written to a JSONL file. Measured, in a fresh interpreter, stage "store":
`pipeline.completions` itself — `pull_statements` opens its `raw_lms.xapi_pulls` record, calls
`_store_page(conn, pull_id, page)` per page and closes the pull with its watermark — with one function
replaced in that interpreter only: `hrlms.learning.xapi._pages` (the HTTP GET of each page and its JSON
decoding) by a generator reading the file in stored order, `json.loads` per line, in pages of
`HRLMS_XAPI_PAGE_SIZE` = 1000 (streamed: one page in memory). Nothing is factored out of the package;
the stand-in is the only glue. Then transform2 (modelling) as in ralph mode. A real pull adds the
LRS's own time per page (query, serialisation, HTTP) to the store figure.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import common
from bench.common import START

NAME = "xapi"
TITLE = "e. Completions: xAPI statements pulled from the LRS and modelled"
TARGET = "pull and model N xAPI statements; statements/s for the pull and for the modelling (issue 6: 1M statements)"
STATEMENT_NODES = ("xapi", "learning_events", "learning_completions", "learning_history", "learning_compliance")
RUN_KEY = "bench-xapi"
SOURCES = {"ralph": "Ralph LRS (fs backend)", "warehouse": "file, no LRS (our side only)"}
MAX_DEFAULT_WORKERS = 100_000   # warehouse mode: default population = N capped at this
SIM_CHUNK = 20_000              # assignments simulated at a time (statements streamed to the file)


def file_pages(path: Path):
    """A stand-in for `hrlms.learning.xapi._pages` (same signature): the statements of `path` (one stored
    statement per line, in stored order, as Ralph keeps them) in pages of `limit`, one page in memory.
    Only a first, unbounded pull is served (the benchmark's database is fresh)."""
    def pages(s, lrs, since, until, limit) -> Iterator[list[dict]]:
        if since is not None or until is not None:
            raise ValueError("the file stand-in serves only a first pull (no since/until)")
        page: list[dict] = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                page.append(json.loads(line))
                if len(page) >= limit:
                    yield page
                    page = []
        if page:
            yield page
    return pages


def child(spec: dict) -> int:
    stage = spec["stage"]
    invocations = common.isolate_artifacts(Path(spec["work"]), gx=stage == "gate")
    from hrlms import pipeline  # noqa: F401  (imported before the clock starts)

    snaps = spec.get("snapshots")
    if stage == "ingest":
        from hrlms.warehouse import db

        with db.connect() as conn:
            db.bootstrap(conn)
    calls: list[dict] = []
    if stage == "store":   # warehouse mode: pipeline.completions with the LRS replaced by the file
        from hrlms.learning import xapi

        xapi._pages = file_pages(Path(spec["statements"]))
        common.wrap_timer(xapi, "_store_page", calls)
    t = time.perf_counter()
    is_transform = stage in ("transform", "transform2")   # transform2: the second transform, with statements
    key = RUN_KEY + (spec.get("suffix", "") if is_transform else "")
    out = common.run_stage({"transform2": "transform", "store": "completions"}.get(stage, stage), key, START, snaps)
    seconds = time.perf_counter() - t
    result = {"seconds": seconds, "out": out, "dbt": invocations}
    if stage == "store":
        result["store_page_s"] = sum(c["seconds"] for c in calls)
        result["store_page_calls"] = len(calls)
    return common.child_done(spec, result)


def write_statements(db_url: str, path: Path, n: int, seed: int) -> dict:
    """Simulated learner activity for the day's assignments, first n statements, appended to `path`
    (Ralph's file, or the warehouse mode's JSONL): each statement plus `stored` and `authority`.

    The assignments are simulated SIM_CHUNK at a time and streamed to the file: the simulator draws
    each person × requirement independently (its own seeded rng, uuid5 ids), so the statements and
    their order are those of one `simulate(all)[:n]`. All assignments are simulated (to report the
    activity available per worker); only the first n statements are written."""
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
        population = conn.execute("select count(distinct person_id) from intermediate.int_learning_worker_attributes"
                                  ).fetchone()[0]
    assignments = [{"person_id": p, "requirement_id": r, "assigned_on": since,
                    "due_on": since + timedelta(days=int(days or 30))} for p, r, since, days in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = datetime.now(UTC)
    written = available = 0
    t = time.perf_counter()
    with open(path, "a", encoding="utf-8") as fh:
        for i in range(0, len(assignments), SIM_CHUNK):
            chunk = simulate(assignments[i:i + SIM_CHUNK], logical_date=START, seed=seed)
            available += len(chunk)
            for s in chunk[:max(0, n - written)]:
                s = {**s, "stored": (stored + timedelta(microseconds=written)).isoformat(),
                     "authority": AUTHORITY_AGENT}
                fh.write(json.dumps(s) + "\n")
                written += 1
    return {"assignments": len(assignments), "statements": written, "statements_available": available,
            "workers_with_attributes": population, "bytes": path.stat().st_size,
            "simulate_and_write_s": round(time.perf_counter() - t, 1)}


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


def population(size: int, source: str, workers: int | None) -> int:
    """Workers of the synthetic day: --workers, else N (ralph) or N capped at 100,000 (warehouse)."""
    if workers:
        return workers
    return size if source == "ralph" else min(size, MAX_DEFAULT_WORKERS)


def one_repeat(size: int, folder: Path, rep: int, seed: int, source: str = "ralph", workers: int | None = None
               ) -> dict:
    tag = f"{size}-r{rep + 1}" + ("-wh" if source == "warehouse" else "")
    work = common.WORK_DIR / NAME / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"wall": {}, "call": {}, "source": source, "workers": workers or size}
    if source == "ralph":
        from hrlms.devenv.ralph import LocalRalph

        lrs_cm = LocalRalph(work / "lrs", max_page_size=1000)
    else:
        lrs_cm = contextlib.nullcontext()
    statements_file = work / "statements.jsonl"
    with common.fresh_database(f"xapi_{size}") as url, lrs_cm as lrs:
        env = {"WAREHOUSE_URL": url, "HRLMS_LANDING_DIR": str(folder), "HRLMS_SOURCE": "file",
               "HRLMS_REPORTS_DIR": str(work / "reports"), "HRLMS_XAPI_PAGE_SIZE": "1000"}
        if lrs is not None:
            env.update({"HRLMS_LRS_URL": lrs.base_url, "HRLMS_LRS_USERNAME": lrs.username,
                        "HRLMS_LRS_PASSWORD": lrs.password})
            pull_stage = "completions"
        else:   # never contacted: the store child replaces the HTTP pages by the file (recorded as lrs_url)
            env.update({"HRLMS_LRS_URL": statements_file.as_uri(), "HRLMS_LRS_USERNAME": "",
                        "HRLMS_LRS_PASSWORD": ""})
            pull_stage = "store"
        snaps = None
        for stage in ("ingest", "staging", "gate", "transform", pull_stage, "transform2"):
            if stage == pull_stage:
                res["setup"] = write_statements(url, lrs.data_dir / "fs_lrs.jsonl" if lrs is not None
                                                else statements_file, size, seed)
                if res["setup"]["statements"] < size:
                    raise common.BenchError(
                        f"{res['workers']:,} workers' simulated activity holds {res['setup']['statements']:,} "
                        f"statements, fewer than N = {size:,}: run with a larger --workers")
                common.say(f"  setup: {res['workers']:,} workers, {res['setup']['assignments']:,} assignments, "
                           f"{res['setup']['statements_available']:,} statements simulated, "
                           f"{res['setup']['statements']:,} written ({res['setup']['bytes'] / 1e6:.0f} MB)")
            t = time.perf_counter()
            out = common.run_child("bench.bench_xapi", {"stage": stage, "work": str(work), "snapshots": snaps,
                                                         "suffix": "-2" if stage == "transform2" else "",
                                                         "statements": str(statements_file)},
                                   env=env, log_name=f"xapi_{tag}_{stage}")
            res["wall"][stage] = time.perf_counter() - t
            res["call"][stage] = out["seconds"]
            if stage == "ingest":
                snaps = {k: v for k, v in out["out"].items() if k != "rows"}
            if stage == pull_stage:
                res["pull"] = out["out"]
            if stage == "store":
                res["store_page_s"] = out["store_page_s"]
            if stage in ("transform", "transform2"):
                res[f"nodes_{stage}"] = node_seconds(out["dbt"])
        import psycopg

        with psycopg.connect(url) as conn:
            res["marts"] = {t: conn.execute(f"select count(*) from marts.{t}").fetchone()[0]
                            for t in ("learning_completions", "learning_history")}
            res["raw"] = conn.execute("select count(*) from raw_lms.xapi_statements").fetchone()[0]
            res["xapi_pull"] = dict(zip(("pages", "fetched", "inserted", "lrs_url", "watermark_after"), conn.execute(
                "select pages, fetched, inserted, lrs_url, watermark_after from raw_lms.xapi_pulls "
                "order by pull_id desc limit 1").fetchone() or ()))
    n = res["setup"]["statements"]
    res["pull_s"] = res["call"][pull_stage]
    res["model_nodes_s"] = sum(res["nodes_transform2"].values())
    res["model_delta_s"] = res["call"]["transform2"] - res["call"]["transform"]
    res["pull_rate"] = n / res["pull_s"]
    res["model_rate"] = n / res["model_nodes_s"] if res["model_nodes_s"] else 0
    if source == "warehouse":   # clean the 1 GB file (the work dir of a repeat is emptied by the next one anyway)
        statements_file.unlink(missing_ok=True)
    return res


def _keep_earlier(rec: common.Recorder, args, source: str) -> None:
    """--merge: common keeps the rows of other sizes and the hand-written analyses; keep also this
    size's rows of the other source, the other notes (the extrapolation note is recomputed) and the
    extrapolation. Rows written before --source existed are Ralph's."""
    if not (args.merge and rec.path.is_file()):
        return
    old = json.loads(rec.path.read_text())
    other = [r for r in old.get("rows", []) if r.get("size") in set(args.sizes)
             and r.get("source", SOURCES["ralph"]) != SOURCES[source]]
    rec.doc["rows"] = [_with_source(r, SOURCES["ralph"]) for r in rec.doc["rows"] + other]
    for text in old.get("notes", []):      # the analyses are kept by common; the other source's notes here
        if not text.startswith(("Pull time grew as N^", common.ANALYSIS)):
            rec.note(text)
    if old.get("extrapolation"):
        rec.doc["extrapolation"] = old["extrapolation"]


def _with_source(r: dict, default: str) -> dict:
    """The row with a 'source' column (right after the standard keys), `default` if it had none."""
    std = {k: r[k] for k in ("size", "metric", "median", "runs", "unit") if k in r}
    return {**std, "source": r.get("source", default), **{k: v for k, v in r.items() if k not in std}}


def main(argv: list[str] | None = None) -> int:
    def extra(ap):
        ap.add_argument("--source", choices=sorted(SOURCES), default="ralph",
                        help="ralph (default): pull from a local Ralph LRS; warehouse: no LRS, measure our side "
                             "of the pull (pipeline.completions fed pages of 1000 from a file) and the modelling")
        ap.add_argument("--workers", type=int, default=None,
                        help="workers of the synthetic day whose activity gives the statements (default N; "
                             f"warehouse: N capped at {MAX_DEFAULT_WORKERS:,})")

    args = common.parse_args("python -m bench.bench_xapi", __doc__.split("\n")[0], argv,
                             default_sizes="10000,100000", extra=extra)
    if args.child:
        return child(common.child_spec(args))
    source = args.source
    rec = common.Recorder(args, NAME, TITLE, TARGET)
    _keep_earlier(rec, args, source)
    rec.doc["meta"]["server"] = common.server_info()
    if source == "ralph":
        rec.note("Size = number of statements N, drawn from the simulated activity of the assignments of a "
                 "synthetic day with N workers (that day's setup — ingest, staging, gate, first transform — is not "
                 "measured). Statements are written into Ralph's fs data file directly (setup), in stored order.")
        rec.note("Pull = `pipeline.completions` in a fresh interpreter: GET pages of 1000 statements (Ralph's fs "
                 "backend re-reads and parses the whole file for every page, so a pull of N statements costs "
                 "~N²/1000 statement parses in the LRS) and one jsonb INSERT … ON CONFLICT per page. "
                 "Modelling = the execution time of the dbt models that read statements in the second "
                 "`dbt build` (summed over dbt's 4 threads, so it can exceed their wall share); 'transform with − "
                 "without statements' is the wall difference of the two builds of the same day.")
    else:
        rec.note(f"Source '{SOURCES['warehouse']}' (`--source warehouse`): Ralph is not started — its fs backend "
                 "re-reads and parses its whole data file for every page of ≤1000, so a pull of N statements costs "
                 "~N²/1000 statement parses inside the LRS (hours at 1M): the LRS, not our code, would be the "
                 "limit. Measured instead, in a fresh interpreter: 'store' = `pipeline.completions` itself "
                 "(pull record in raw_lms.xapi_pulls, `_store_page` = one jsonb INSERT … ON CONFLICT plus the "
                 "pull's counters per page, one transaction each, then the watermark), its HTTP page fetch "
                 "(`hrlms.learning.xapi._pages`) replaced by a reader of the same stored statements from a "
                 "JSONL file, `json.loads` per line, pages of 1000. A real pull adds the LRS's own time per page "
                 "(query, serialisation, HTTP) to this figure. Modelling and transforms as in the Ralph rows.")
    for size in sorted(args.sizes):
        workers = population(size, source, args.workers)
        folder = common.synthetic_day(workers, args.seed)
        common.say(f"[xapi] {size:,} statements from {workers:,} workers ({SOURCES[source]}), "
                   f"{args.repeats} repeat(s)")
        results = []
        for rep in range(args.repeats):
            before = common.loadavg()
            res = one_repeat(size, folder, rep, args.seed, source, workers)
            rec.run_load(f"{size} r{rep + 1}", before, common.loadavg())
            results.append(res)
            what = "store" if source == "warehouse" else "pull"
            common.say(f"  r{rep + 1}: {res['setup']['statements']:,} statements; {what} {res['pull_s']:.1f}s "
                       f"({res['pull_rate']:.0f}/s, {res['pull']}); model nodes {res['model_nodes_s']:.1f}s "
                       f"({res['model_rate']:.0f}/s); transform {res['call']['transform']:.1f}s → "
                       f"{res['call']['transform2']:.1f}s; marts {res['marts']}")

        def col(fn, results=results):
            return [fn(r) for r in results]

        def add(metric, runs, size=size, **kw):
            rec.add_row(_with_source(common.row(size, metric, runs, **kw), SOURCES[source]))

        setup = results[0]["setup"]
        n = setup["statements"]
        if source == "ralph":
            add("pull: pipeline.completions", col(lambda r: r["pull_s"]), digits=2,
                statements=n, pages=results[0]["pull"].get("pages"))
            add("pull: statements/s", col(lambda r: r["pull_rate"]), unit="stmt/s", digits=0)
        else:
            add("store: pipeline.completions, pages from a file (LRS excluded)", col(lambda r: r["pull_s"]),
                digits=2, statements=n, pages=results[0]["pull"].get("pages"), workers_simulated=workers,
                assignments=setup["assignments"],
                statements_per_worker=round(setup["statements_available"] / workers, 2))
            add("store: statements/s, pages of 1000 — our side of a pull, LRS excluded",
                col(lambda r: r["pull_rate"]), unit="stmt/s", digits=0)
            add("store: of which _store_page (insert + counters)", col(lambda r: r["store_page_s"]), digits=2)
        add("modelling: statement models (dbt node time)", col(lambda r: r["model_nodes_s"]), digits=2)
        add("modelling: statements/s (node time)", col(lambda r: r["model_rate"]), unit="stmt/s", digits=0)
        add("transform without statements (setup)", col(lambda r: r["call"]["transform"]), digits=2)
        add("transform with statements", col(lambda r: r["call"]["transform2"]), digits=2,
            learning_completions=results[0]["marts"]["learning_completions"], raw_statements=results[0]["raw"])
        add("transform with − without statements", col(lambda r: r["model_delta_s"]), digits=2)
        if source == "warehouse":
            rec.note(f"{size:,} statements ({SOURCES['warehouse']}): the activity of a synthetic day of "
                     f"{workers:,} workers — {setup['assignments']:,} assignments, "
                     f"{setup['statements_available']:,} statements simulated "
                     f"({setup['statements_available'] / workers:.2f} per worker, "
                     f"{setup['statements_available'] / max(setup['assignments'], 1):.2f} per assignment), the "
                     f"first {n:,} in (person, requirement) order kept ({setup['bytes'] / 1e6:.0f} MB of JSONL). "
                     "The transforms therefore run on that population, not on N workers.")
        rec.set_profile({"size": size, "source": source, "workers": workers,
                         "statement_models_s": results[0]["nodes_transform2"],
                         "same_models_without_statements_s": results[0]["nodes_transform"],
                         "setup": setup, "pull": results[0]["pull"], "xapi_pulls_row": results[0]["xapi_pull"],
                         "stage_wall_s": {k: round(v, 2) for k, v in results[0]["wall"].items()}})
        rec.save()
    pulls = {r["size"]: r["median"] for r in rec.rows if r["metric"] == "pull: pipeline.completions"}
    if len(pulls) >= 2:
        a, b = sorted(pulls)[-2:]
        exp = math.log(pulls[b] / pulls[a]) / math.log(b / a)
        est = pulls[b] * (1_000_000 / b) ** exp
        rec.doc["extrapolation"] = {"from": [a, b], "exponent": round(exp, 2), "pull_1M_s": round(est)}
        rec.note(f"Pull time grew as N^{exp:.2f} between {a:,} and {b:,} statements; extrapolated with that "
                 f"exponent, 1M statements would take ~{est / 60:.0f} min to pull from this LRS (Ralph fs backend: "
                 "each page re-reads the whole file), so 1M was not pulled from Ralph. A pull from an LRS with an indexed store "
                 f"(Ralph on Mongo/ClickHouse/ES, or an LMS's own LRS) would be bounded by our per-page insert; "
                 "see the per-page figures in the JSON.")
    path = rec.save(final=True)
    common.say(f"[xapi] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
