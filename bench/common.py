"""Shared helpers for the benchmarks: arguments, repeats and medians, synthetic data, fresh databases,
isolated child runs, and the result file report.py reads.

Why benchmarks are not tests: timings on a shared 2-core machine are noisy; a benchmark records
medians, every run and the machine's load, and a person reads them (docs/benchmarks.md).

Contract for a benchmark ``bench/bench_<name>.py``:

- ``main(argv) -> int`` parses its arguments with :func:`parse_args` (``--sizes 10000,100000``,
  ``--repeats 3``, ``--out .local/bench``, ``--seed 42``) and runs inside the devenv stack
  (``python -m hrlms.devenv run --airflow-db -- python -m bench.bench_<name> ...``), which sets
  ``WAREHOUSE_URL``, ``HRLMS_LMS_URL`` and the Airflow settings.
- It writes ``<out>/<name>.json`` through a :class:`Recorder` (``add_row``, ``check``, ``note``,
  ``save``)::

    {"name", "title", "target": "text",
     "rows": [{"size": 10000 | null, "metric": "…", "median": 1.2, "runs": [1.1, 1.2, 1.4], "unit": "s",
               ... any extra keys, e.g. "label", "per_1k"}],
     "checks": [{"figure": "…", "target": "≤ 1.5×", "value": 1.23, "unit": "×", "met": true}],
     "notes": ["…"], "profile": {...optional, free form...},
     "meta": {"loadavg_before": [1, 5, 15 min], "loadavg_after": [...], "versions": {...}, ...}}

  ``checks`` are the figures compared with the targets (``TARGET``; docs/architecture.md); report.py lists them first
  (``"binding": false`` marks a check at a size the target is not set for; ``"lower_bound": true`` a
  value that is at least this, e.g. a stage stopped by a timeout — rows may carry it too).
- Work that must not share state between repeats runs in a child process (:func:`run_child`, the
  module's ``--child SPEC`` mode), against a fresh database (:func:`fresh_database`), with its own dbt
  target dir and GX context (:func:`isolate_artifacts`) — as an Airflow task does in production.
- Synthetic HR data is generated once per (workers, seed) under ``.local/bench/data`` and reused
  (:func:`synthetic_day`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hrlms.locks import file_lock

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / ".local" / "bench"
DATA_DIR = BENCH_DIR / "data"
WORK_DIR = BENCH_DIR / "work"
START = date(2026, 1, 5)      # the logical date of the synthetic day (as in the demo)
DISTRIBUTIONS = ("apache-airflow", "dbt-core", "dbt-postgres", "great_expectations", "psycopg", "SQLAlchemy",
                 "scim2-server", "numpy")


class BenchError(RuntimeError):
    """A benchmark run failed (the message names the log file)."""


# -- arguments ---------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int]:
    """"10000,100k,1M" -> [10000, 100000, 1000000]."""
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        mult = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
        out.append(int(float(part[:-1] if mult > 1 else part) * mult))
    return out


def parse_args(prog: str, description: str, argv: list[str] | None, *, default_sizes: str = "10000,100000,1000000",
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes(default_sizes),
                    help=f"workers per run, comma-separated (k/M suffixes allowed; default {default_sizes})")
    ap.add_argument("--repeats", type=int, default=3, help="runs per size (default 3; medians are reported)")
    ap.add_argument("--out", type=Path, default=BENCH_DIR, help="folder for <name>.json (default .local/bench)")
    ap.add_argument("--seed", type=int, default=42, help="synthetic data seed (default 42)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of other sizes from the existing <name>.json (to add a size later, "
                         "e.g. 1M with fewer repeats)")
    ap.add_argument("--child", help=argparse.SUPPRESS)   # JSON spec of one isolated run (run_child)
    if extra:
        extra(ap)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    return args


# -- timing ------------------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return float(statistics.median(values))


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


@contextmanager
def stopwatch(into: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block to into[key] (seconds)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(into.get(key, 0.0) + time.perf_counter() - t, 4)


def wrap_timer(owner: Any, attr: str, record: list[dict], label: Callable[..., str] | str | None = None) -> None:
    """Replace owner.attr (a function looked up at call time) by a wrapper that appends
    {"name": label, "seconds": s} to `record` for every call. For profiling inside a child run."""
    fn = getattr(owner, attr)

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            name = label(*a, **kw) if callable(label) else (label or attr)
            record.append({"name": name, "seconds": round(time.perf_counter() - t, 4), "start": t})

    timed.__wrapped__ = fn
    setattr(owner, attr, timed)


def outermost(calls: list[dict]) -> list[dict]:
    """Calls recorded by wrap_timer (one process) that are not inside another recorded call, with
    "inside": name of the enclosing call for the others — so totals do not count a call twice."""
    out, open_calls = [], []
    for c in sorted(calls, key=lambda c: (c["start"], -c["seconds"])):
        # 1 ms of slack: "seconds" is rounded, so a call that starts as the previous one ends may seem inside it
        while open_calls and c["start"] >= open_calls[-1]["start"] + open_calls[-1]["seconds"] - 0.001:
            open_calls.pop()
        out.append({**c, "inside": open_calls[-1]["name"] if open_calls else None})
        open_calls.append(c)
    return out


def row(size: int | None, metric: str, runs: list[float], unit: str = "s", digits: int = 3, **extra) -> dict:
    """One result row: median and every run."""
    return {"size": size, "metric": metric, "median": round(median(runs), digits),
            "runs": [round(r, digits) for r in runs], "unit": unit, **extra}


# -- synthetic data ----------------------------------------------------------------------------------

def synthetic_day(workers: int, seed: int = 42, day: date = START) -> Path:
    """A folder with one synthetic HR export day (workers_/org_units_/truth_ files for `day`), generated
    once per (workers, seed, day) and reused; safe against two benchmarks generating it at once."""
    folder = DATA_DIR / f"w{workers}_s{seed}_{day.isoformat()}"
    marker = folder / ".complete.json"
    with file_lock(DATA_DIR / f".{folder.name}.lock"):
        if marker.is_file():
            return folder
        from hrlms.synth.generator import generate

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        days = generate(tmp, workers=workers, days=1, start=day, seed=seed)
        seconds = time.perf_counter() - t
        (tmp / ".complete.json").write_text(json.dumps({
            "workers": workers, "seed": seed, "day": day.isoformat(), "rows": days[0].rows,
            "bytes": days[0].workers_path.stat().st_size, "generated_in_s": round(seconds, 1)}))
        tmp.rename(folder)
        print(f"  generated {workers:,} workers ({days[0].rows:,} rows) in {seconds:.1f}s -> {folder}", flush=True)
    return folder


def data_info(folder: Path) -> dict:
    return json.loads((folder / ".complete.json").read_text())


def workers_file(folder: Path, day: date = START) -> Path:
    return folder / f"workers_{day.isoformat()}.csv"


# -- databases ---------------------------------------------------------------------------------------

def warehouse_url() -> str:
    url = os.environ.get("WAREHOUSE_URL")
    if not url:
        raise BenchError("WAREHOUSE_URL is not set: run inside `python -m hrlms.devenv run -- ...` (make bench)")
    return url


def with_dbname(url: str, dbname: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, p.fragment))


@contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """An empty database on the warehouse server for one run (dropped afterwards): every repeat starts
    from the same state, and no rows of an earlier repeat make a later one faster or slower."""
    import psycopg

    base = warehouse_url()
    name = f"bench_{tag}_{os.getpid()}_{time.monotonic_ns() % 10**6}".lower()
    admin = with_dbname(base, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield with_dbname(base, name)
    finally:
        if os.environ.get("HRLMS_BENCH_KEEP_DB"):    # profiling: keep it to query (dropped with the server)
            say(f"    kept database {name} (HRLMS_BENCH_KEEP_DB)")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
                conn.execute("checkpoint")   # the next run does not pay for this one's dirty pages


def server_info(url: str | None = None) -> dict:
    """Server version and the settings that matter for these figures."""
    import psycopg

    names = ("server_version", "shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "fsync",
             "synchronous_commit", "max_parallel_workers_per_gather", "jit", "wal_level")
    with psycopg.connect(url or warehouse_url(), autocommit=True) as conn:
        return {n: conn.execute(f"show {n}").fetchone()[0] for n in names}


def git_state() -> dict:
    """The commit measured, and the files (outside bench/) that differed from it in the working tree —
    other people work in the same checkout, and the figures are of what was on disk."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout

    dirty = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if not ln[3:].startswith("bench/") and ln[3:] != "docs/benchmarks.md"]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_changes_in": dirty}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# -- isolated runs -----------------------------------------------------------------------------------

class ChildTimeout(BenchError):
    """A child run took longer than its timeout and was stopped; `seconds` is the limit, `seen` what
    the on_timeout callback found (e.g. the queries still running)."""

    def __init__(self, message: str, seconds: float, seen: Any = None):
        super().__init__(message)
        self.seconds, self.seen = seconds, seen


def run_child(module: str, spec: dict, *, env: dict[str, str], log_name: str, timeout: float | None = None,
              on_timeout: Callable[[], Any] | None = None) -> dict:
    """Run one measurement in a fresh interpreter (``python -m <module> --child SPEC``), as an Airflow
    task runs: imports, caches and memory of earlier repeats do not carry over. Its output goes to
    .local/bench/work/logs/<log_name>.log; it returns what the child passed to :func:`child_done`.
    After `timeout` seconds, `on_timeout()` is called (the child still running), the child is killed and
    ChildTimeout is raised."""
    logs = WORK_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log, result = logs / f"{log_name}.log", logs / f"{log_name}.result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, "--child", json.dumps({**spec, "result": str(result)})]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            seen = on_timeout() if on_timeout else None
            proc.kill()
            proc.wait()
            raise ChildTimeout(f"{module} run {log_name} stopped after {timeout:.0f} s", timeout, seen) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if returncode != 0 or not result.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BenchError(f"{module} run {log_name} failed (exit {returncode}); log {log}:\n{tail}")
    return json.loads(result.read_text())


def running_queries(url: str) -> list[dict]:
    """What the database is busy with (for a run stopped by its timeout)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            """select extract(epoch from now() - query_start)::int, left(regexp_replace(query, '\\s+', ' ', 'g'), 300)
               from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()
               and state = 'active' order by query_start""").fetchall()
    return [{"running_s": r[0], "query": r[1]} for r in rows]


def child_spec(args: argparse.Namespace) -> dict:
    return json.loads(args.child)


def child_done(spec: dict, result: dict) -> int:
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


def isolate_artifacts(work: Path, *, gx: bool = True) -> list[dict]:
    """Inside a child: dbt writes its target dir under `work` and GX uses a copy of the committed
    context under `work` (not the checkout's dbt_project/target and expectations/gx/uncommitted, which
    other runs on this machine share and which grow). Several children of one repeat may share `work`
    (the parent empties it before the repeat). `gx=True` imports GX (hrlms.quality.gate). Returns the list each dbt invocation is appended to:
    {"args", "seconds", "run_results": path of a copy of that invocation's run_results.json}."""
    from hrlms.transform import dbt as dbt_mod  # light: dbt itself is imported when it runs

    work.mkdir(parents=True, exist_ok=True)
    target = work / "dbt-target"
    if gx:   # imports GX (hrlms.quality.gate -> suites): pass gx=False where GX is not used
        from hrlms.quality import gate

        if not (work / "expectations").is_dir():
            shutil.copytree(REPO_ROOT / "expectations", work / "expectations",
                            ignore=shutil.ignore_patterns("uncommitted", "__pycache__"))
        gate.GX_ROOT = work / "expectations"
    invocations: list[dict] = []
    original = dbt_mod.run_dbt
    # the pipeline's own dbt builds write no run_results.json (hrlms.transform.dbt.run_dbt): the profile needs it
    os.environ["HRLMS_DBT_WRITE_JSON"] = "true"

    def run_dbt(args, *, target_path=None, **kw):
        t = time.perf_counter()
        try:
            return original(args, target_path=target_path or str(target), **kw)
        finally:
            seconds = round(time.perf_counter() - t, 3)
            rr = Path(target_path or target) / "run_results.json"
            copy = work / f"run_results_{len(list(work.glob('run_results_*.json'))) + 1}.json"
            if rr.is_file():
                shutil.copyfile(rr, copy)
            invocations.append({"args": list(args), "seconds": seconds,
                                "run_results": str(copy) if copy.is_file() else None})

    dbt_mod.run_dbt = run_dbt
    return invocations


def run_stage(stage: str, run_key: str, day, snaps: dict | None = None, **kw):
    """One pipeline stage as its Airflow task runs it (the children of every benchmark call this).
    `kw` for apply: plan_id, shard, shards; for transform: defer_reporting."""
    from hrlms import pipeline

    if stage == "ingest":
        return pipeline.ingest(run_key, day)
    if stage == "completions":
        return pipeline.completions(run_key, day)
    if stage == "transform":    # defer_reporting: as the DAGs (the reporting tables then in stage marts)
        return pipeline.transform(run_key, day, snaps, defer_reporting=bool(kw.get("defer_reporting")))
    if stage == "marts":
        return pipeline.marts(run_key, day)
    with_snapshots = {"staging": pipeline.stage_models, "gate": pipeline.gate, "plan": pipeline.plan}
    if stage in with_snapshots:
        return with_snapshots[stage](run_key, day, snaps)
    if stage == "apply":
        shards = kw.get("shards") or 1
        return pipeline.apply(run_key, day, kw["plan_id"],
                              **({"shard": kw["shard"], "shards": shards} if shards > 1 else {}))
    raise ValueError(f"unknown stage {stage!r}")


def dbt_summary(run_results: str | Path, top: int = 10) -> dict:
    """One dbt invocation from its run_results.json: elapsed time, time by resource type, slowest nodes."""
    doc = json.loads(Path(run_results).read_text())
    nodes = []
    for r in doc.get("results", []):
        uid = r["unique_id"]
        nodes.append({"node": uid.split(".", 2)[-1] if uid.count(".") >= 2 else uid,
                      "type": uid.split(".", 1)[0], "status": r.get("status"),
                      "seconds": round(float(r.get("execution_time") or 0), 3),
                      "rows": (r.get("adapter_response") or {}).get("rows_affected")})
    by_type: dict[str, dict] = {}
    for n in nodes:
        t = by_type.setdefault(n["type"], {"count": 0, "seconds": 0.0})
        t["count"] += 1
        t["seconds"] = round(t["seconds"] + n["seconds"], 3)
    ranked = sorted(nodes, key=lambda n: -n["seconds"])
    return {"elapsed": round(float(doc.get("elapsed_time") or 0), 3), "by_type": by_type,
            "slowest_models": [n for n in ranked if n["type"] in ("model", "snapshot")][:top],
            "slowest_tests": [n for n in ranked if n["type"] == "test"][:5]}


# -- results -----------------------------------------------------------------------------------------

ANALYSIS = "Analysis"     # notes starting with this are written by hand and survive --merge


class Recorder:
    """Collects rows/checks/notes of one benchmark and rewrites <out>/<name>.json after every size, so a
    long run that is stopped still leaves the sizes it finished."""

    def __init__(self, args: argparse.Namespace, name: str, title: str, target: str):
        self.path = Path(args.out) / f"{name}.json"
        self.doc: dict[str, Any] = {
            "name": name, "title": title, "target": target, "rows": [], "checks": [], "notes": [], "profile": {},
            "meta": {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                     "sizes": list(args.sizes), "repeats": args.repeats, "seed": args.seed,
                     "loadavg_before": loadavg(), "loadavg_runs": [], "versions": versions(),
                     "git": git_state()}}
        if getattr(args, "merge", False) and self.path.is_file():
            self._merge(json.loads(self.path.read_text()), set(args.sizes))

    def _merge(self, old: dict, sizes: set[int]) -> None:
        """Keep what an earlier run measured at other sizes (rows, per-size checks, its profile if that
        was at a larger size); this run's sizes replace theirs. The hand-written analyses ("Analysis…"
        notes, dated) are kept too; the generated notes are written again by this run."""
        self.doc["rows"] = [r for r in old.get("rows", []) if r.get("size") not in sizes]
        self.doc["notes"] = [n for n in old.get("notes", []) if n.startswith(ANALYSIS)]
        self.doc["checks"] = [c for c in old.get("checks", []) if c.get("size") is not None
                              and c["size"] not in sizes]
        prof = old.get("profile") or {}
        if prof.get("size") and prof["size"] not in sizes and prof["size"] > max(sizes):
            self.doc["profile"] = prof
        meta, om = self.doc["meta"], old.get("meta", {})
        kept = sorted({r["size"] for r in self.doc["rows"] if r.get("size") is not None})
        meta["earlier_runs"] = om.get("earlier_runs", []) + [
            {"started_at": om.get("started_at"), "sizes": kept, "repeats": om.get("repeats"), "git": om.get("git"),
             "loadavg_before": om.get("loadavg_before"), "loadavg_after": om.get("loadavg_after")}]
        meta["loadavg_runs"] = [r for r in om.get("loadavg_runs", []) if int(r["run"].split()[0]) in kept]
        meta["sizes"] = sorted(set(kept) | sizes)
        meta["repeats_by_size"] = {**{str(s): n for s, n in (om.get("repeats_by_size") or {}).items()
                                      if int(s) in kept},
                                   **{str(s): om.get("repeats") for s in kept
                                      if str(s) not in (om.get("repeats_by_size") or {})},
                                   **{str(s): meta["repeats"] for s in sizes}}

    def sizes_measured(self) -> list[int]:
        return sorted({r["size"] for r in self.doc["rows"] if r.get("size") is not None})

    @property
    def rows(self) -> list[dict]:
        return self.doc["rows"]

    def add_row(self, r: dict) -> None:
        self.doc["rows"].append(r)

    def check(self, figure: str, target: str, value: float, unit: str, met: bool, **extra) -> None:
        """A figure against its target. With lower_bound=True (the value is at least this) a value that
        meets the target proves nothing: met is recorded as None (unknown)."""
        self.doc["checks"] = [c for c in self.doc["checks"] if c["figure"] != figure]
        verdict = None if extra.get("lower_bound") and met else bool(met)
        self.doc["checks"].append({"figure": figure, "target": target, "value": value, "unit": unit,
                                   "met": verdict, **extra})

    def set_profile(self, profile: dict) -> None:
        """The profile of the largest size measured (an earlier, merged run's larger one stays)."""
        old = self.doc.get("profile") or {}
        if not old.get("size") or old["size"] <= profile.get("size", 0):
            self.doc["profile"] = profile

    def note(self, text: str) -> None:
        if text not in self.doc["notes"]:
            self.doc["notes"].append(text)

    def run_load(self, label: str, before: list[float], after: list[float]) -> None:
        self.doc["meta"]["loadavg_runs"].append({"run": label, "before": before, "after": after})

    def save(self, final: bool = False) -> Path:
        meta = self.doc["meta"]
        meta["loadavg_after"] = loadavg()
        meta["finished_at" if final else "updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if final:
            meta.pop("updated_at", None)
            meta["complete"] = True
        self.doc["rows"].sort(key=lambda r: (r.get("size") is None, r.get("size") or 0))
        self.doc["notes"].sort(key=lambda n: n.startswith(ANALYSIS))    # analyses after the generated notes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str) + "\n")
        tmp.replace(self.path)
        return self.path


def say(msg: str) -> None:
    print(msg, flush=True)


def exit_on_sigterm() -> None:
    """SIGTERM unwinds the benchmark's with blocks (Airflow, the LMS, the databases are stopped or dropped)."""
    import signal

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def write_single_run(args: argparse.Namespace, name: str, title: str, target: str, *, rows: list[dict],
                     checks: list[dict], results: list[dict], started: datetime, server: dict) -> Path:
    """<out>/<name>.json of a benchmark that runs each size once (no Recorder): its rows, checks and raw results,
    with the run's meta (times, git state, versions, server, load before the first and after the last size)."""
    doc = {"name": name, "title": title, "target": target, "rows": rows, "checks": checks, "results": results,
           "meta": {"started_at": started.isoformat(timespec="seconds"),
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "sizes": args.sizes, "repeats": 1, "complete": True, "git": git_state(),
                    "versions": versions(), "server": server,
                    "load_before": results[0]["load_before"] if results else [],
                    "load_after": results[-1]["load_after"] if results else []}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1, default=str))
    say(f"wrote {path}")
    return path
