"""Run dbt in-process (dbtRunner) for one snapshot and logical date.

One `dbt build` task rather than a cosmos task per model: figures in
docs/dbt-runner.md. The warehouse credentials reach dbt as env vars; the password as DBT_ENV_SECRET_PASSWORD so
dbt scrubs it from its logs.
"""
from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hrlms.dates import logical_instant
from hrlms.warehouse import builds
from hrlms.warehouse.db import warehouse_url

PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"
log = logging.getLogger(__name__)


class DbtError(RuntimeError):
    pass


@dataclass(frozen=True)
class DbtResult:
    success: bool
    counts: dict[str, int]
    failures: list[str]
    #: the slowest nodes of the invocation, name -> seconds (at most SLOWEST of them), for the stage detail
    slowest: dict[str, float] | None = None


def dbt_env(url: str | None = None) -> dict[str, str]:
    p = urlsplit(url or warehouse_url())
    return {
        "DBT_HOST": p.hostname or "127.0.0.1",
        "DBT_PORT": str(p.port or 5432),
        "DBT_USER": unquote(p.username or "postgres"),
        "DBT_ENV_SECRET_PASSWORD": unquote(p.password or ""),
        "DBT_DBNAME": (p.path or "/warehouse").lstrip("/") or "warehouse",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    }


@contextmanager
def _env(extra: dict[str, str]):
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_dbt(args: list[str], *, snapshot_id: int, org_snapshot_id: int, logical_date: date | datetime,
            target_path: str | None = None, tracked: bool = False, change_set_id: int | None = None,
            staging_carry: bool = False, staging_delta: int | None = None) -> DbtResult:
    """`logical_date` is the run's logical moment (a bare date = 00:00 UTC): models get its UTC date
    (`logical_date`) and the instant itself (`logical_ts`) to derive each worker's local date.
    `tracked`: the caller is a pipeline stage that keeps the build ledger itself; any other command that
    changes relations makes the ledger forget what it knew (hrlms.warehouse.builds).
    `change_set_id`: the change set of an incremental build (macros/changed_people.sql); None = every row.
    `staging_carry`: stg_hris__snapshot_workers may copy the lines of the snapshot it holds instead of parsing
    them again (only when this project parsed them: macros/hris_workers.sql); `staging_delta` (with it): the
    snapshot the table holds, when staging_delta() found the run's snapshot to be built from its file by events."""
    from dbt.cli.main import dbtRunner

    if not tracked and args and args[0] in MUTATING:
        from hrlms.warehouse import db

        with db.connect() as conn:
            db.bootstrap(conn)
            builds.forget(conn)

    ts = logical_instant(logical_date)
    # As environment variables read by the run_param macro when nodes run, not --vars: a change of --vars
    # makes dbt re-parse the whole project (measured ~5.5 s); these leave the parse as it was.
    run_params = {"HRLMS_RUN_SNAPSHOT_ID": str(snapshot_id), "HRLMS_RUN_ORG_SNAPSHOT_ID": str(org_snapshot_id),
                  "HRLMS_RUN_LOGICAL_DATE": ts.date().isoformat(), "HRLMS_RUN_LOGICAL_TS": ts.isoformat(),
                  "HRLMS_RUN_CHANGE_SET_ID": str(change_set_id or -1),
                  "HRLMS_RUN_STAGING_CARRY": "1" if staging_carry else "0",
                  "HRLMS_RUN_STAGING_DELTA": str(staging_delta if staging_carry and staging_delta else -1)}
    # dbt writes its manifest, partial-parse state and run results there: one folder per concurrent process.
    target = target_path or os.environ.get("HRLMS_DBT_TARGET_PATH") or str(PROJECT_DIR / "target")
    cli = [*args, *cli_options(target)]
    pipeline_build = tracked and bool(args) and args[0] in MUTATING
    if pipeline_build and os.environ.get("HRLMS_DBT_WRITE_JSON", "").strip().lower() not in ("1", "true", "yes"):
        # the stage reads the results from the invocation itself; manifest.json and run_results.json would be written
        # for no reader (1M workers: ~0.35 s per invocation, two of them before an event reaches the LMS)
        cli.append("--no-write-json")
    with _env(dbt_env() | run_params):
        manifest = _parsed(target, cli_options(target)) if pipeline_build else None
        res = dbtRunner(manifest=manifest).invoke(cli)
    if res.exception is not None:
        raise DbtError(f"dbt {' '.join(args)} could not run: {res.exception}")
    counts: dict[str, int] = {}
    failures = []
    times: dict[str, float] = {}
    for r in getattr(res.result, "results", None) or []:   # parse/compile return other objects
        status = str(getattr(r, "status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
        if status in ("error", "fail"):
            failures.append(f"{r.node.name}: {r.message}")
        if getattr(r, "execution_time", None) is not None and getattr(r, "node", None) is not None:
            times[r.node.name] = round(float(r.execution_time), 2)
    slowest = dict(sorted(times.items(), key=lambda kv: -kv[1])[:SLOWEST])
    return DbtResult(bool(res.success), counts, failures, slowest)


def cli_options(target: str) -> list[str]:
    """The options of every invocation: this project, its profile, and where dbt writes (`target`)."""
    return ["--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR), "--target-path", target,
            "--log-path", str(Path(target) / "logs"), "--quiet", "--no-use-colors"]


#: how many of the slowest dbt nodes a stage keeps in its detail
SLOWEST = 12

#: the project parsed once per process, target folder, project and warehouse (a pipeline process runs dbt twice:
#: an event run's staging and transform): dbt does not parse again
_PARSED: tuple[tuple[str, str], Any] | None = None
#: the parsed project kept in the target folder for the next process with the same key (each task is a process):
#: unpickling it takes ~0.2 s where dbt's partial parse took ~1 s per task
MANIFEST_CACHE = "hrlms_manifest.pickle"


def _parsed(target: str, common: list[str]):
    """The parsed project for the pipeline's own invocations (None: dbt parses it itself). The run parameters
    are read when nodes run, not when parsing (macros/run_param.sql), so one parse serves every run: in this
    process, and in the next ones through MANIFEST_CACHE while the project, its settings, the warehouse and
    dbt's version are the same (the key)."""
    global _PARSED
    from dbt.cli.main import dbtRunner

    # the nodes name their database (the profile's): a process may run dbt on several warehouses (tests)
    where = {k: v for k, v in os.environ.items() if k.startswith("DBT_") and "SECRET" not in k}
    key = (target, json.dumps([project_digest(), where, _dbt_versions()], sort_keys=True))
    if _PARSED is None or _PARSED[0] != key:
        manifest = _cached_manifest(Path(target) / MANIFEST_CACHE, key[1])
        if manifest is None:
            res = dbtRunner().invoke(["parse", *common])
            if not res.success or res.result is None:
                return None
            manifest = res.result
            _keep_manifest(Path(target) / MANIFEST_CACHE, key[1], manifest)
        _PARSED = (key, manifest)
    return _PARSED[1]


def _dbt_versions() -> list[str]:
    from importlib.metadata import version

    return [version("dbt-core"), version("dbt-postgres"), version("dbt-adapters")]


def _manifest_state(manifest) -> dict[str, Any]:
    """The manifest's data fields (its lookups and caches are rebuilt on use): dbt's own pickling of a Manifest
    (`__reduce_ex__`, dbt-core 1.11) passes its fields by position, one of them missing, which shifts the rest."""
    from dataclasses import fields

    return {f.name: getattr(manifest, f.name) for f in fields(manifest) if not f.name.startswith("_")}


def _cached_manifest(path: Path, key: str):
    """The manifest kept under `key`, or None (none kept, another key, unreadable: dbt parses)."""
    import pickle

    from dbt.contracts.graph.manifest import Manifest

    try:
        with path.open("rb") as f:
            kept_key, state = pickle.load(f)
        return Manifest(**state) if kept_key == key else None
    except Exception:   # noqa: BLE001 - missing, partial or from another dbt: parse instead
        return None


def _keep_manifest(path: Path, key: str, manifest) -> None:
    """Write the manifest under `key` (a temporary file renamed over the old one: a reader sees one or the other)."""
    import pickle

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            pickle.dump((key, _manifest_state(manifest)), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception as exc:   # noqa: BLE001 - the next process parses again
        tmp.unlink(missing_ok=True)
        log.warning("dbt manifest not kept for the next process: %s", exc)


def project_vars() -> dict[str, Any]:
    """The vars of dbt_project.yml as written (the settings the gate and the change sets follow too)."""
    import yaml

    return (yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text()) or {}).get("vars") or {}


SNAPSHOT_TABLE = "staging.stg_hris__snapshot_workers"
#: data tests over the whole delivery log (marts.access_events): not a run's gate — a daily build skips them,
#: tests and `dbt test --select tag:access_audit` run them
AUDIT_TESTS = "tag:access_audit"
#: the models that read the org snapshot and nothing else (dbt tag org_snapshot): a build on the org snapshot of the
#: last completed build, with the same project, leaves them as they are (hrlms.pipeline.transform)
ORG_SNAPSHOT_MODELS = "tag:org_snapshot"
#: the data tests of org_unit_tree's units and parents and of the hierarchy bridge against them (dbt tag
#: org_structure): on the org snapshot of the last completed build they judge what it judged (org_unit_tree takes its
#: units from int_org_units_resolved, kept; only their heads change), and are left out (hrlms.pipeline.transform)
ORG_STRUCTURE_TESTS = "tag:org_structure"
#: what analysts and HR read and the LMS plan does not (dbt tag reporting): the DAGs build them after the apply
#: (hrlms.pipeline.marts)
REPORTING_MODELS = "tag:reporting"
#: the views over them, rebuilt with them (a table rebuilt whole under a view drops it: cascade)
REPORTING_VIEWS = "tag:reporting+,config.materialized:view"
#: the view of the org snapshot the reporting org models (org_units, snap_org_units) read
ORG_CURRENT_VIEW = "int_org_units_current"
#: dbt commands that change relations: run outside the pipeline's stages they make the build ledger stale
MUTATING = {"build", "run", "snapshot", "seed"}
_PROJECT_PARTS = ("dbt_project.yml", "profiles.yml", "packages.yml", "models", "macros", "snapshots", "tests",
                  "seeds", "analyses")


def project_digest() -> dict[str, Any]:
    """What the dbt project builds from, for the build ledger: a digest of its files and the values of
    the environment variables they read (env_var('HRLMS_...'); the run parameters excepted)."""
    files = [p for part in _PROJECT_PARTS for p in ((PROJECT_DIR / part).rglob("*") if (PROJECT_DIR / part).is_dir()
                                                   else [PROJECT_DIR / part]) if p.is_file()]
    names = set()
    for p in files:
        if p.suffix in (".sql", ".yml", ".yaml"):
            names.update(re.findall(r"env_var\(\s*['\"](HRLMS_[A-Z0-9_]+)['\"]", p.read_text(errors="replace")))
    return {"files": builds.files_digest(files, PROJECT_DIR),
            "env": {n: os.environ.get(n) for n in sorted(names) if not n.startswith("HRLMS_RUN_")}}


def transform_inputs(conn, snapshots: dict[str, int], logical_date: date | datetime) -> dict[str, Any]:
    """Everything the intermediate and mart models read besides staging, as small values: the run's
    snapshots and moment, the code, the learning rules, completions (xAPI, transcripts), identity
    decisions made by people, the quarantine, and reconcile runs (they rewrite sync.applied_users).
    sync.applied_users as written by the run's own apply is left out: identity decisions are sticky
    once made, so the accounts a plan created do not change what a rebuild would decide."""
    row = conn.execute(
        """select
             (select coalesce(jsonb_agg(jsonb_build_array(ruleset, checksum) order by ruleset), '[]')
                from learning.rule_sets),
             (select jsonb_build_array(count(*), max(stored)::text) from raw_lms.xapi_statements),
             (select jsonb_build_array(count(*), max(snapshot_id)) from raw_hris.snapshots
               where entity = 'transcripts'),
             (select jsonb_build_array(count(*), max(resolved_at)::text) from sync.identity_resolutions),
             (select count(*) from dq.quarantine where snapshot_id = any(%s)),
             (select max(started_at)::text from audit.stage_runs where run_key like 'reconcile:%%')""",
        ([snapshots["workers"], snapshots.get("org_units", -1)],)).fetchone()
    return {"snapshots": builds.snapshot_keys(conn, snapshots),
            "logical_ts": logical_instant(logical_date).isoformat(), "dbt": project_digest(),
            "rules": row[0], "xapi": row[1], "transcripts": row[2], "resolutions": row[3],
            "quarantined": row[4], "reconciled": row[5]}


class NotStaged(RuntimeError):
    """The staging stage has not been run for this snapshot (its parsed rows are another snapshot's)."""


def accounts_only_from_later_plans(conn, built_at) -> bool:
    """True when every sync.applied_users row written after the build at `built_at` was written by an op
    of a plan made after it (the run's own apply). Anything else (an older plan's late op, a hand edit)
    may change an identity decision, so the transform must run again. Reconcile is in transform_inputs."""
    row = conn.execute(
        """select exists (
             select 1 from sync.applied_users u
             left join sync.ops o on o.op_id = u.last_op_id
             left join sync.plans p on p.plan_id = o.plan_id
             where u.applied_at > %s and (p.plan_id is null or p.created_at < %s))""",
        (built_at, built_at)).fetchone()
    return not row[0]


def staged_snapshot(conn) -> int | None:
    """The snapshot `SNAPSHOT_TABLE` holds (None: no table, or empty)."""
    if conn.execute("select to_regclass(%s) is null", (SNAPSHOT_TABLE,)).fetchone()[0]:
        return None
    row = conn.execute(f"select snapshot_id from {SNAPSHOT_TABLE} limit 1").fetchone()
    return int(row[0]) if row else None


def check_staged(conn, snapshot_id: int) -> None:
    """The gate and the transform read the run's parsed snapshot from `SNAPSHOT_TABLE`, which the staging
    stage rebuilds for each run: refuse to go on when it holds another snapshot (a stage run out of order
    would check or model the wrong people) or nothing while the snapshot has rows (the table is unlogged:
    a database crash empties it)."""
    if conn.execute("select to_regclass(%s) is null", (SNAPSHOT_TABLE,)).fetchone()[0]:
        held = "does not exist"
    else:
        row = conn.execute(f"select snapshot_id from {SNAPSHOT_TABLE} limit 1").fetchone()
        if row and row[0] == snapshot_id:
            return
        expected = conn.execute("select row_count from raw_hris.snapshots where snapshot_id = %s",
                                (snapshot_id,)).fetchone()
        if row is None and (expected is None or expected[0] == 0):
            return
        held = f"holds snapshot {row[0]}" if row else "is empty"
    raise NotStaged(f"{SNAPSHOT_TABLE} {held}, not snapshot {snapshot_id}: run the staging stage "
                    f"(dbt build --select staging) for this snapshot first")


LINE_CARRY_TABLE = "staging.stg_hris__snapshot_line_carry"
#: the carry's file lines when the staging stage kept them in place (macros/hris_workers.sql, hris_line_carry_delta):
#: (snapshot_id, from_snapshot_id, below_line_no, lines): every line numbered below below_line_no is
#: from_snapshot_id's line of the same number, and has no row in LINE_CARRY_TABLE
LINE_CARRY_BY_NUMBER_TABLE = "staging.stg_hris__snapshot_line_carry_by_number"


def staged_lines(conn, snapshot_id: int) -> dict[str, Any]:
    """How the staging stage got the snapshot's rows: lines parsed, lines copied from an earlier snapshot's
    identical lines or kept by number (macros/hris_workers.sql) and which snapshot that was (None: every line
    was parsed)."""
    parsed, carried, source = conn.execute(
        f"select count(*) filter (where from_line_no is null), count(from_line_no), max(from_snapshot_id) "
        f"from {LINE_CARRY_TABLE} where snapshot_id = %s", (snapshot_id,)).fetchone()
    if conn.execute("select to_regclass(%s) is not null", (LINE_CARRY_BY_NUMBER_TABLE,)).fetchone()[0]:
        for from_id, lines in conn.execute(f"select from_snapshot_id, lines from {LINE_CARRY_BY_NUMBER_TABLE} "
                                           f"where snapshot_id = %s", (snapshot_id,)):
            carried, source = carried + lines, max(source or from_id, from_id)
    if not parsed and not carried:          # nothing could be carried: every line was parsed
        parsed = conn.execute(f"select count(*) from {SNAPSHOT_TABLE}").fetchone()[0]
    return {"parsed": parsed, "carried": carried, "carried_from_snapshot": source}


def staging_delta(conn, snapshot_id: int) -> int | None:
    """The snapshot `SNAPSHOT_TABLE` holds, when `snapshot_id` differs from it only by the lines of people HR
    events changed: an event-built snapshot (hrlms.sources.events.overlay) of the same HR file as the held one
    (the held one is that file, or built from it by events whose people are all among this one's). The staging
    carry then follows the line numbers instead of hashing every line (macros/hris_workers.sql). None otherwise."""
    held = staged_snapshot(conn)
    if held is None or held == snapshot_id:
        return None
    ok = conn.execute(
        """select e.base_snapshot_id is not null and coalesce(h.base_snapshot_id, h.snapshot_id) = e.base_snapshot_id
                  and h.entity = e.entity and h.hints is not distinct from e.hints
                  and exists (select 1 from raw_hris.hr_event_lines where snapshot_id = e.snapshot_id)
                  and not exists (select 1 from raw_hris.hr_event_lines hl where hl.snapshot_id = h.snapshot_id
                                  and hl.person_id not in (select person_id from raw_hris.hr_event_lines
                                                           where snapshot_id = e.snapshot_id))
           from raw_hris.snapshots e, raw_hris.snapshots h
           where e.snapshot_id = %s and h.snapshot_id = %s""", (snapshot_id, held)).fetchone()
    return held if ok and ok[0] else None


def is_staged(conn, snapshot_id: int) -> bool:
    try:
        check_staged(conn, snapshot_id)
    except NotStaged:
        return False
    return True


def build(*, snapshot_id: int, org_snapshot_id: int, logical_date: date | datetime, select: str | None = None,
          exclude: str | None = None, unit_tests: bool = False, tracked: bool = False,
          change_set_id: int | None = None, indirect_selection: str | None = None) -> DbtResult:
    """dbt build (models, snapshots, data tests) for one run. dbt unit tests check the SQL, not the data,
    so a daily run skips them (~8 s each); CI runs them once (tests/dbt/test_dbt_unit_tests.py).
    With `change_set_id` an incremental build: the incremental person models recompute that change set's
    people only (macros/changed_people.sql). Without, a full build: `--full-refresh` recreates them (the
    history models say full_refresh=false and keep their rows). `indirect_selection`: dbt's mode for the
    tests of excluded models (default eager: a test with any parent excluded is left out; cautious keeps the
    tests that also read a model that is built)."""
    args = ["build"] + (["--select", select] if select else []) + (["--exclude", exclude] if exclude else [])
    if indirect_selection:
        args += ["--indirect-selection", indirect_selection]
    if change_set_id is None:
        args.append("--full-refresh")
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    result = run_dbt(args, snapshot_id=snapshot_id, org_snapshot_id=org_snapshot_id, logical_date=logical_date,
                     tracked=tracked, change_set_id=change_set_id)
    if not result.success:
        raise DbtError("dbt build failed: " + "; ".join(result.failures[:10]))
    return result
