"""The provisioning pipeline, one function per stage. DAG tasks are thin wrappers around these.

Every stage is idempotent and takes only ids/dates (what XCom carries); state lives in the warehouse.
Each stage records its wall time and counts in `audit.stage_runs` for the run summary and report.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from hrlms.dates import logical_instant
from hrlms.settings import Settings
from hrlms.warehouse import builds, db

log = logging.getLogger("hrlms.pipeline")

#: Optional observer (the demo's progress display): called with (stage, "start"|"done"|"failed", detail).
stage_hook = None


def _record(conn, run_key: str, logical_date: date | datetime, stage: str, started: float, detail: dict[str, Any]) -> None:
    seconds = round(time.time() - started, 3)
    with conn.transaction():
        conn.execute(
            """insert into audit.stage_runs (run_key, logical_date, stage, started_at, seconds, detail)
               values (%s, %s, %s, to_timestamp(%s), %s, %s)
               on conflict (run_key, stage) do update set started_at = excluded.started_at,
                   seconds = excluded.seconds, detail = excluded.detail""",
            (run_key, logical_instant(logical_date).date(), stage, started, seconds, Jsonb(detail)))
        # the run holding the warehouse lease shows it is alive (hrlms.warehouse.lease)
        conn.execute("update audit.pipeline_lease set heartbeat_at = clock_timestamp() where run_key = %s", (run_key,))
    log.info("stage %s finished in %.2fs: %s", stage, seconds, json.dumps(detail, default=str))


@contextmanager
def _stage(run_key: str, logical_date: date | datetime, stage: str, detail: dict[str, Any]):
    """Time a stage and record it (also when it fails: the run report shows why)."""
    started = time.time()
    if stage_hook:
        stage_hook(stage, "start", detail)
    with db.connect() as conn:
        db.bootstrap(conn)
        try:
            yield conn
        except Exception as exc:
            detail["error"] = str(exc)[:4000]
            _record(conn, run_key, logical_date, stage, started, detail)
            if stage_hook:
                stage_hook(stage, "failed", detail)
            raise
        _record(conn, run_key, logical_date, stage, started, detail)
    if stage_hook:
        stage_hook(stage, "done", detail)


def ingest(run_key: str, logical_date: date | datetime) -> dict[str, Any]:
    """Land the HR snapshot(s) for the logical date in raw_hris. Returns snapshot ids and row counts."""
    from hrlms.sources.mapping import load_mapping

    settings = Settings.from_env()
    mapping = load_mapping(settings.mapping)
    day = logical_instant(logical_date).date()
    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "ingest", detail) as conn:
        for entity in ("workers", "org_units"):
            if entity not in mapping.entities:
                continue
            em = mapping.entity(entity)
            if settings.source == "http":
                from hrlms.sources.http import http_source_from_env, ingest_http

                res = ingest_http(conn, em, mapping.name, http_source_from_env(), day)
            else:
                from hrlms.sources.files import ingest_file, landing_path

                res = ingest_file(conn, em, mapping.name, landing_path(settings.landing_dir, em, day), day)
            detail[entity] = {"snapshot_id": res.snapshot_id, "rows": res.rows, "source": res.source_uri,
                              "already_loaded": res.already_loaded}
            if entity == "workers":
                _lay_events_over(conn, res.snapshot_id, em, day, detail)
        _ingest_learning(conn, settings, mapping, day, detail)
    # (not detail["events"]: its snapshot_id is the workers' — the ledger keys snapshots by id, and an "events" entry
    # took the workers' place, so the event runs after this one found no HR file built)
    return {e: v["snapshot_id"] for e, v in detail.items() if e != "events" and "snapshot_id" in v} | \
        {"rows": detail["workers"]["rows"]}


def _last_built(conn) -> dict[str, int]:
    """The snapshots of the warehouse's last transform build ({} before the first)."""
    snaps = ((builds.recorded(conn, "transform") or {}).get("inputs") or {}).get("snapshots") or {}
    return {e: int(v[0]) for e, v in snaps.items() if isinstance(v, list) and v and v[0] is not None}


def _lay_events_over(conn, file_snapshot_id: int, em, day: date, detail: dict[str, Any]) -> None:
    """HR change events made after the file was extracted are laid over it (the run builds that snapshot);
    the events the file supersedes and contradicts are listed (the file wins). Nothing when no event ever
    arrived."""
    from hrlms.sources import events

    if not events.has_events(conn):
        return
    previous = _last_built(conn).get("workers")
    count, listed = events.disagreements(conn, file_snapshot_id, previous)
    ov = events.overlay(conn, file_snapshot_id, em, day)
    detail["events"] = ov.summary() | {"disagreements": listed[:200], "disagreement_count": count}
    if ov.snapshot_id != file_snapshot_id:
        detail["workers"]["file_snapshot_id"] = file_snapshot_id
        detail["workers"]["snapshot_id"] = ov.snapshot_id


def receive_events(run_key: str, logical_date: date | datetime, received: list) -> dict[str, Any]:
    """Stage 'events' of an event run (hrlms_hr_events): land the run's asset events in raw_hris
    (hrlms.sources.events.land; the same event id twice is landed once)."""
    from hrlms.sources import events
    from hrlms.sources.mapping import load_mapping

    em = load_mapping(Settings.from_env().mapping).entity("workers")
    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "events", detail) as conn:
        detail.update(events.land(conn, received, em, run_key).summary())
    return {"new": detail["new"], "records": detail["records"]}


def event_snapshot(run_key: str, logical_date: date | datetime) -> dict[str, Any]:
    """Stage 'ingest' of an event run: take the warehouse lease, then the snapshot to build = the HR file of
    the last build with every event HR made after it (hrlms.sources.events.overlay), and the org units of
    the last build. Returns {} when no HR file was ever built (the events wait for the first file run)."""
    from hrlms.sources import events
    from hrlms.sources.mapping import load_mapping
    from hrlms.warehouse import lease

    em = load_mapping(Settings.from_env().mapping).entity("workers")
    day = logical_instant(logical_date).date()
    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "ingest", detail) as conn:
        detail["lease_wait_s"] = lease.acquire(conn, run_key)
        built = _last_built(conn)
        if "workers" not in built:
            detail["skipped"] = "no HR file has been built yet: the events wait for the first run of hrlms_provision"
            return {}
        ov = events.overlay(conn, built["workers"], em, day)
        rows = conn.execute("select row_count from raw_hris.snapshots where snapshot_id = %s",
                            (ov.snapshot_id,)).fetchone()[0]
        detail["workers"] = {"snapshot_id": ov.snapshot_id, "rows": rows, "source": events.ASSET_URI,
                             "file_snapshot_id": ov.base_snapshot_id, "already_loaded": ov.reused}
        detail["events"] = ov.summary()
        if older := events.older_than_file(conn, run_key, ov.base_snapshot_id):
            # HR made these before the file this run builds on was extracted: the file is their reference
            detail["events"]["older_than_file"] = older[:200]
    snaps = {"workers": ov.snapshot_id, "rows": rows}
    if "org_units" in built:
        snaps["org_units"] = built["org_units"]
    return snaps


def event_build(run_key: str, logical_date: date | datetime, received: list | None = None) -> dict[str, Any]:
    """An event run's warehouse work in one process (hrlms_hr_events' build task: one task start between an
    event and its plan): receive_events (when given the run's `received` events), event_snapshot, staging,
    gate, transform, plan. Returns the plan and the apply's shards (apply_shards), {} when no HR file was built
    yet (nothing to apply)."""
    if received is not None:
        receive_events(run_key, logical_date, received)
    snaps = event_snapshot(run_key, logical_date)
    if not snaps:
        return {}
    stage_models(run_key, logical_date, snaps, workers_only=True)
    gate(run_key, logical_date, snaps, docs_after_apply=True)
    transform(run_key, logical_date, snaps, defer_reporting=True)
    planned = plan(run_key, logical_date, snaps)
    return planned | {"shards": apply_shards(planned["plan_id"])}


def _ingest_learning(conn, settings: Settings, mapping, day: date, detail: dict[str, Any]) -> None:
    """The assignment rules file (validated; an invalid file stops the run here, before anything reaches
    the LMS) and, when the mapping has one and it landed, the day's LMS transcript export."""
    from hrlms.learning.rules import load_rules, store_rules

    rules = load_rules(settings.learning_rules)
    changed = store_rules(conn, rules)
    detail["learning_rules"] = {"file": rules.path.name, "checksum": rules.checksum[:12], "changed": changed,
                                "rules": len(rules.ruleset.rules)}
    if "transcripts" in mapping.entities and settings.source == "file":
        from hrlms.sources.files import ingest_file, landing_path

        em = mapping.entity("transcripts")
        path = landing_path(settings.landing_dir, em, day)
        if path.is_file():
            res = ingest_file(conn, em, mapping.name, path, day)
            detail["transcripts"] = {"snapshot_id": res.snapshot_id, "rows": res.rows, "source": res.source_uri,
                                     "already_loaded": res.already_loaded}


def completions(run_key: str, logical_date: date | datetime) -> dict[str, Any]:
    """Pull new xAPI statements from the LRS (watermark + overlap; skipped when no LRS is configured)."""
    from hrlms.learning.xapi import lrs_config_from_env, pull_statements

    settings = Settings.from_env()
    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "completions", detail) as conn:
        lrs = lrs_config_from_env()
        if lrs is None:
            detail["skipped"] = "no LRS configured (HRLMS_LRS_URL or connection hrlms_lrs)"
            return detail
        res = pull_statements(conn, lrs, run_key=run_key, page_limit=settings.xapi_page_size)
        detail.update({"pull_id": res.pull_id, "pages": res.pages, "fetched": res.fetched, "inserted": res.inserted})
    return detail


def _run_plan(conn, run_key: str) -> tuple[int | None, str]:
    """The plan this run made or decided on (stage 'plan' or 'decision'), or (None, why there is none)."""
    row = conn.execute("select stage, detail ->> 'plan_id', detail ->> 'error' from audit.stage_runs "
                       "where run_key = %s and stage in ('plan', 'decision') order by started_at desc limit 1",
                       (run_key,)).fetchone()
    if row and row[2] is None and row[1]:
        return int(row[1]), ""
    if row and row[2] is not None:
        return None, f"stage {row[0]} failed: nothing was applied, nothing is exported"
    failed = conn.execute("select stage from audit.stage_runs where run_key = %s and detail ? 'error' "
                          "order by started_at limit 1", (run_key,)).fetchone()
    return None, (f"the run stopped at stage {failed[0]} before a plan was made: nothing was applied, "
                  f"nothing is exported" if failed else "this run made no plan: nothing is exported")


def export_enrolments(run_key: str, logical_date: date | datetime, *, dry_run: bool = False) -> dict[str, Any]:
    """CSV enrolment file for LMSs without an API: after the apply, the full state the LMS holds, published
    only when the run's plan was applied (held: kept aside for review; rejected/superseded: never;
    dry run: nothing). See hrlms.learning.export."""
    from hrlms.learning.export import deliver

    settings = Settings.from_env()
    detail: dict[str, Any] = {"dry_run": dry_run}
    with _stage(run_key, logical_date, "export", detail) as conn:
        plan_id, why = _run_plan(conn, run_key)
        detail.update(deliver(conn, settings.export_dir, plan_id, dry_run=dry_run, no_plan_reason=why))
    return detail


def _unchanged(conn, run_key: str, stage: str, inputs: dict[str, Any], detail: dict[str, Any],
               still_valid=None) -> bool:
    """True (and `detail` = the recorded outcome) when the stage last completed from the same inputs, so
    its work would rebuild what the warehouse already holds (hrlms.warehouse.builds). Otherwise the stage
    is marked 'building' and the caller does the work, then calls builds.finished. `still_valid(prev)`:
    a further check against the recorded build, returning why it no longer holds ("" when it does)."""
    prev, why = builds.unchanged(conn, stage, inputs)
    if prev is not None and still_valid is not None:
        why = still_valid(prev)
        prev = None if why else prev
    if prev is None:
        detail["built_because"] = why
        builds.started(conn, stage, run_key, inputs)
        return False
    detail.update(prev["detail"])
    detail.pop("built_because", None)
    detail["skipped"] = (f"inputs unchanged since run {prev['run_key']} built them "
                         f"({prev['finished_at']:%Y-%m-%d %H:%M:%S %Z}); HRLMS_REBUILD=always rebuilds")
    log.info("stage %s: %s", stage, detail["skipped"])
    return True


def stage_models(run_key: str, logical_date: date | datetime, snapshots: dict[str, int], *,
                 workers_only: bool = False) -> None:
    """Build the staging layer and its tests: typed views of every snapshot, and the run's workers
    snapshot parsed once into a table (stg_hris__snapshot_workers) that the gate and the transform read.
    `workers_only` (an event run: only worker lines changed, no learning or org file was landed): when the last
    staging build was made by this dbt project on the same org snapshot, its views stand as they are and only
    the workers' parsed snapshot and its tests are built."""
    from hrlms.transform import dbt

    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "staging", detail) as conn:
        from hrlms.sources import events
        from hrlms.warehouse import lease

        # one pipeline at a time on the warehouse once HR events arrive (an event run may be building), or
        # while another run holds it: hrlms.warehouse.lease
        if events.has_events(conn) or lease.holder(conn) not in (None, run_key):
            detail["lease_wait_s"] = lease.acquire(conn, run_key)
        inputs = {"snapshots": builds.snapshot_keys(conn, snapshots), "dbt": dbt.project_digest()}
        # lines already parsed by this project may be copied rather than parsed again (a full parse otherwise)
        previous = builds.recorded(conn, "staging")
        carry = builds.built_from(previous, "dbt", inputs["dbt"])
        views_kept = workers_only and _org_models_current(previous, inputs)
        if _unchanged(conn, run_key, "staging", inputs, detail,
                      still_valid=lambda prev: "" if dbt.is_staged(conn, snapshots["workers"]) else
                      f"{dbt.SNAPSHOT_TABLE} no longer holds the snapshot"):
            return
        select = "staging"
        if views_kept:
            select = dbt.SNAPSHOT_TABLE.split(".")[1]
            detail["views"] = "kept: built by this dbt project on the same org snapshot (an event run's delta)"
        # an event-built snapshot of the held snapshot's file: its unchanged lines are known by number
        delta = dbt.staging_delta(conn, snapshots["workers"]) if carry else None
        command = ["build", "--select", select, "--exclude-resource-type", "unit_test"]
        if views_kept and delta:
            # its rows are the held table's, which passed the model's tests, and the event lines, each line once
            # (the carry's pre-hook checks it): the tests would read a million rows to judge a few lines
            command = ["run", "--select", select]
            detail["tests"] = "not run: the unchanged lines carried by their numbers, every line once (pre-hook)"
        res = dbt.run_dbt(command,
                          snapshot_id=snapshots["workers"],
                          org_snapshot_id=snapshots.get("org_units", -1),
                          logical_date=logical_instant(logical_date), tracked=True, staging_carry=carry,
                          staging_delta=delta)
        if not res.success:
            raise dbt.DbtError("dbt staging failed: " + "; ".join(res.failures))
        detail.update(res.counts)
        detail["lines"] = dbt.staged_lines(conn, snapshots["workers"]) | \
            ({"by_line_number_from": delta} if delta else {})
        builds.finished(conn, "staging", run_key, detail)


def gate(run_key: str, logical_date: date | datetime, snapshots: dict[str, int], *,
         docs_after_apply: bool = False) -> dict[str, Any]:
    """GX on the snapshot: raises GateFailed on batch defects; quarantines rows otherwise. Renders the Data Docs
    of its checks, or with `docs_after_apply` (an event run), leaves them to the run's report task (gate_docs)
    unless the snapshot is rejected: HR reads a rejection at once, an event's row verdicts ~30 s later."""
    from hrlms.quality.gate import build_docs, gate_inputs, preload_gx, run_gate, run_name_for

    settings = Settings.from_env()
    detail: dict[str, Any] = {}
    # workers first: their shared-value checks (SQL) run while GX is imported, which the checks of both need
    entities = [e for e in ("workers", "org_units") if e in snapshots]
    with _stage(run_key, logical_date, "gate", detail) as conn:
        inputs = gate_inputs(builds.snapshot_keys(conn, {e: snapshots[e] for e in entities}),
                             max_drop_share=settings.max_drop_share,
                             max_quarantine_share=settings.max_quarantine_share)
        # the row verdicts of the snapshot these checks gated last may be carried to its unchanged lines
        previous = builds.recorded(conn, "gate")
        carry_from = ((previous["inputs"].get("snapshots") or {}).get("workers") or [None])[0] \
            if builds.built_from(previous, "checks", inputs["checks"]) else None
        org_kept = _org_gate_current(previous, inputs)
        if _unchanged(conn, run_key, "gate", inputs, detail):
            return {"quarantined": detail["workers"]["quarantined"], "hold": detail["workers"].get("hold")}
        preload_gx()      # while the shared-value checks run in the warehouse
        if org_kept:      # an event or hourly run: the org file the last gate judged, by the same checks
            detail["org_units"] = previous["detail"]["org_units"] | {"kept": "the org snapshot and the checks "
                                                                             "of the last gate"}
        judged = [e for e in entities if not (org_kept and e == "org_units")]
        run_names = [run_name_for(e, snapshots[e]) for e in judged]
        try:
            for entity in judged:
                res = run_gate(conn, snapshots[entity], max_drop_share=settings.max_drop_share,
                               max_quarantine_share=settings.max_quarantine_share, docs=False,
                               carry_from=carry_from if entity == "workers" else None)
                detail[entity] = {"rows": res.rows, "quarantined": res.quarantined_rows, "reasons": res.reasons,
                                  "data_docs": res.data_docs}
                if res.lines:
                    detail[entity]["lines"] = res.lines
                if res.hold_reason:
                    detail[entity]["hold"] = res.hold_reason
        except BaseException:   # the report HR reads, at once for a rejected snapshot
            build_docs(None, run_names)
            raise
        if docs_after_apply:    # ~0.3 s that an event would wait for before it reaches the LMS
            detail["data_docs_after_apply"] = run_names
        else:
            build_docs(None, run_names)
        builds.finished(conn, "gate", run_key, detail)
    return {"quarantined": detail["workers"]["quarantined"], "hold": detail["workers"].get("hold")}


def _org_gate_current(previous: dict[str, Any] | None, inputs: dict[str, Any]) -> bool:
    """The last gate completed on the same org snapshot with the same checks and settings (only the workers
    snapshot differs): its org verdicts (dq.gate_runs, dq.quarantine of that snapshot) stand."""
    if not (builds.skipping_enabled() and previous and previous["state"] == "built"
            and "org_units" in (previous["detail"] or {}) and "org_units" in inputs["snapshots"]):
        return False

    def but_workers(i: dict[str, Any]) -> dict[str, Any]:
        return i | {"snapshots": {k: v for k, v in (i.get("snapshots") or {}).items() if k != "workers"}}

    return but_workers(previous["inputs"]) == but_workers(builds.jsonable(inputs))


def transform(run_key: str, logical_date: date | datetime, snapshots: dict[str, int], *,
              full_refresh: bool = False, defer_reporting: bool = False) -> dict[str, int]:
    """dbt build: intermediate + marts (+ tests) for this snapshot and logical date, after the change set
    of the build (hrlms.warehouse.changes: who changed since the last build; the plan compares only them).
    `full_refresh` (the DAG param): build even if nothing changed, and make the change set everyone.
    `defer_reporting` (the DAGs): an incremental build leaves the reporting tables (dbt tag reporting) to the
    stage marts, which the DAGs run after the apply."""
    from hrlms.transform import dbt
    from hrlms.warehouse import changes

    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "transform", detail) as conn:
        inputs = dbt.transform_inputs(conn, snapshots, logical_date)
        previous = builds.recorded(conn, "transform")
        if full_refresh:
            detail["built_because"] = "full_refresh requested"
            builds.started(conn, "transform", run_key, inputs)
        elif _unchanged(conn, run_key, "transform", inputs, detail,
                        still_valid=lambda prev: "" if dbt.accounts_only_from_later_plans(conn, prev["finished_at"])
                        else "accounts were written since the last build by something other than its plans"):
            return {k: v for k, v in detail.items() if isinstance(v, int)}
        dbt.check_staged(conn, snapshots["workers"])
        cs = changes.compute(conn, run_key, snapshots, logical_instant(logical_date), full_refresh=full_refresh)
        detail["changes"] = cs.summary()
        if not full_refresh and (why := _nothing_due(previous, inputs, cs)) and \
                dbt.accounts_only_from_later_plans(conn, previous["finished_at"]):
            changes.discard(conn, cs.change_set_id)
            detail["skipped"] = why
            log.info("stage transform: %s", why)
            builds.finished(conn, "transform", run_key, detail)
            return {}
        # staging (views + the run's parsed snapshot) was built and tested by the staging stage
        # an incremental build recomputes the change set's people in the incremental person models
        exclude, org_kept = f"staging {dbt.AUDIT_TESTS}", not cs.full_build and _org_models_current(previous, inputs)
        if org_kept:   # an event or hourly run: the org file of the last build (its models and their own tests kept)
            exclude += f" {dbt.ORG_SNAPSHOT_MODELS} {dbt.ORG_STRUCTURE_TESTS}"
            detail["org_models"] = "kept: the org snapshot and the dbt project of the last build"
        defer_reporting = defer_reporting and not cs.full_build   # a full build makes them too (the first one)
        if defer_reporting:
            exclude += f" {dbt.REPORTING_MODELS}"
            detail["reporting"] = "after the apply (stage marts)"
        res = dbt.build(snapshot_id=snapshots["workers"], org_snapshot_id=snapshots.get("org_units", -1),
                        logical_date=logical_instant(logical_date), exclude=exclude, tracked=True,
                        change_set_id=None if cs.full_build else cs.change_set_id,
                        indirect_selection="cautious" if org_kept else None)
        detail.update(res.counts)
        detail["dbt_slowest"] = res.slowest
        changes.built(conn, cs.change_set_id)
        builds.finished(conn, "transform", run_key, detail)
        if not defer_reporting:    # the reporting models were built with the rest: the stage marts has nothing to do
            reporting = _reporting_inputs(conn, dbt.project_digest())
            builds.started(conn, "marts", run_key, reporting)
            builds.finished(conn, "marts", run_key, {"built_with": "transform"})
    return res.counts


def _reporting_inputs(conn, dbt_digest: str) -> dict[str, Any]:
    """What the reporting models are built from: the last completed build of the other models (its change set,
    snapshots and moment, hrlms.warehouse.changes) and the dbt project."""
    row = conn.execute(
        "select change_set_id, base_change_set_id, full_build, snapshot_id, org_snapshot_id, logical_ts "
        "from audit.change_sets where state = 'built' order by change_set_id desc limit 1").fetchone()
    if row is None:
        return {}
    return {"change_set_id": row[0], "base_change_set_id": row[1], "full_build": row[2], "snapshot_id": row[3],
            "org_snapshot_id": row[4], "logical_ts": row[5], "dbt": dbt_digest}


def marts(run_key: str, logical_date: date | datetime) -> dict[str, Any]:
    """Stage 'marts': the reporting tables (dbt tag reporting: compliance counts, month-end figures, data-quality
    issues, org history, completions, the identity review — nothing the plan reads) and the views over them,
    built after the apply from the last completed build of the other models (a transform with defer_reporting).
    Incremental for that build's change set when the last reporting build was the one before it; otherwise (a
    run whose stage marts did not complete, another dbt project) every reporting model is built whole. Nothing
    to do when they hold that build already (a retry, an hourly run that built nothing), or when this run's
    transform did not complete (a decision on a held plan, a failed stage: the warehouse is not this run's)."""
    from hrlms.transform import dbt

    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "marts", detail) as conn:
        built = conn.execute("select not detail ? 'error' from audit.stage_runs where run_key = %s and stage = "
                             "'transform' order by started_at desc limit 1", (run_key,)).fetchone()
        if not (built and built[0]):
            detail["skipped"] = "this run's transform did not complete: nothing of this run to build on"
            return detail
        inputs = _reporting_inputs(conn, dbt.project_digest())
        if not inputs:
            detail["skipped"] = "nothing built yet"
            return detail
        previous = builds.recorded(conn, "marts")
        if _unchanged(conn, run_key, "marts", inputs, detail):
            return detail
        same_project = builds.built_from(previous, "dbt", inputs["dbt"])
        follows = (same_project and not inputs["full_build"]
                   and builds.built_from(previous, "change_set_id", inputs["base_change_set_id"]))
        detail["build"] = "incremental" if follows else "full"
        select, exclude = f"{dbt.REPORTING_MODELS} {dbt.REPORTING_VIEWS}", dbt.AUDIT_TESTS
        org_kept = same_project and builds.built_from(previous, "org_snapshot_id", inputs["org_snapshot_id"])
        if org_kept:
            exclude += f" {dbt.ORG_SNAPSHOT_MODELS}"
            detail["org_models"] = "kept: the org snapshot and the dbt project of the last reporting build"
        else:   # with the view they read: a staging build since may have dropped it (a view rebuilt under it)
            select += f" {dbt.ORG_CURRENT_VIEW}"
        res = dbt.build(snapshot_id=inputs["snapshot_id"], org_snapshot_id=inputs["org_snapshot_id"] or -1,
                        logical_date=inputs["logical_ts"], select=select, exclude=exclude,
                        tracked=True, change_set_id=inputs["change_set_id"] if follows else None,
                        indirect_selection="cautious" if org_kept else None)
        detail.update(res.counts)
        detail["change_set_id"] = inputs["change_set_id"]
        detail["dbt_slowest"] = res.slowest
        builds.finished(conn, "marts", run_key, detail)
    return detail


def _org_models_current(previous: dict[str, Any] | None, inputs: dict[str, Any]) -> bool:
    """The last build of the stage (`previous`, the ledger's record) completed with the same dbt project on the
    same org snapshot as `inputs` (both with "dbt" and "snapshots"). For the transform: the models tagged
    org_snapshot read the org snapshot and nothing else (not the workers, not the date: their SCD2 snapshot finds
    nothing new in the same rows), so they hold what this build would write; for staging: its views stand. A
    crashed build, a dbt command run by hand (the ledger forgets) or HRLMS_REBUILD=always builds them."""
    org = inputs["snapshots"].get("org_units")
    return bool(org) and previous is not None and builds.built_from(previous, "dbt", inputs["dbt"]) and \
        (previous["inputs"].get("snapshots") or {}).get("org_units") == builds.jsonable(org)


def _nothing_due(previous: dict[str, Any] | None, inputs: dict[str, Any], cs) -> str:
    """Why this build can be skipped although the run's moment moved ("" when it cannot): the last build
    completed from the same inputs but its moment, on the same UTC date (the marts' as-of dates and the
    month are the same), and no one's date reached its boundary in between (an empty change set: no
    start, last day, manager window, due date or completion became due). This is what keeps the hourly
    schedule's runs cheap; the marts stay as of the last build."""
    if (not builds.skipping_enabled() or previous is None or previous["state"] != "built" or cs.full_build
            or cs.people):
        return ""
    before, now = previous["inputs"] or {}, builds.jsonable(inputs)
    if {k: v for k, v in before.items() if k != "logical_ts"} != {k: v for k, v in now.items() if k != "logical_ts"}:
        return ""
    if str(before.get("logical_ts", ""))[:10] != str(inputs["logical_ts"])[:10]:
        return ""
    return (f"nothing due since the build at {before.get('logical_ts')}: the same inputs, and no one's start, "
            f"last day, manager window, due date or completion reached its moment (change set empty)")


def read_lms_schemas(conn) -> str:
    """Read the LMS's /Schemas and /ResourceTypes for the outbound mapping's check (hrlms.sync.outbound).
    Without a configured LMS (no HRLMS_LMS_URL, no hrlms_lms connection) the last read is used (RFC 7643's
    before any); an LMS that is configured but does not answer fails the stage (Airflow retries it)."""
    from hrlms.sync import outbound
    from hrlms.sync.scim import ScimClient, lms_config_from_env

    try:
        config = lms_config_from_env()
    except Exception as exc:  # noqa: BLE001 — no LMS configured here (e.g. a plan reviewed offline)
        log.warning("the LMS's schemas were not read (%s): the mapping is checked against the last read",
                    type(exc).__name__)
        return "not read: no LMS configured"
    with ScimClient(config) as client:
        outbound.refresh_lms_schemas(conn, client)
    return "read"


def _import_lms_lookup() -> None:
    """Without HRLMS_LMS_URL the LMS is Airflow's connection hrlms_lms (read_lms_schemas looks it up): the
    Airflow SDK that does it is imported with the plan stage's other modules, before the stage's clock starts
    — an Airflow task has it loaded already; a fresh interpreter (CLI, the benchmarks' stage children) takes
    over a second for it, which is no work of the stage."""
    import os

    if os.environ.get("HRLMS_LMS_URL"):
        return
    try:
        import airflow.sdk  # noqa: F401
    except ImportError:     # no Airflow here: read_lms_schemas falls back to the last read
        pass


def plan(run_key: str, logical_date: date | datetime, snapshots: dict[str, int]) -> dict[str, Any]:
    from hrlms.sync.outbound import check
    from hrlms.sync.plan import make_plan
    from hrlms.timing import StepTimes

    _import_lms_lookup()
    detail: dict[str, Any] = {}
    with _stage(run_key, logical_date, "plan", detail) as conn:
        steps = StepTimes()
        detail["lms_schemas"] = read_lms_schemas(conn)
        steps.mark("lms_schemas")
        checked = check(conn)
        steps.mark("mapping_check")
        detail["lms_mapping"] = {"file": str(checked.mapping.file), "checksum": checked.mapping.checksum}
        p = make_plan(conn, logical_date=logical_instant(logical_date).date(), snapshot_id=snapshots["workers"],
                      run_key=run_key, logical_ts=logical_instant(logical_date), checked=checked)
        detail.update({"plan_id": p.plan_id, "ops": p.counts, "attributes": p.attribute_counts, "scope": p.scope,
                       "timings": {**steps, **p.timings}})
        if p.member_counts:
            detail["members"] = p.member_counts
        if p.held:
            detail["held"] = p.held_reasons
    return {"plan_id": p.plan_id, "ops": p.total, "held": p.held}


def apply_shards(plan_id: int) -> list[int]:
    """The shard indexes of a plan's apply (one mapped DAG task each; HRLMS_APPLY_SHARDS, default 2)."""
    return list(range(Settings.from_env().apply_shards))


def _merge_apply_stages(conn, run_key: str, logical_date: date | datetime) -> None:
    """Stage 'apply' = the sum of the shards' 'apply[i]' stages (wall time: first start to last end)."""
    rows = conn.execute("select extract(epoch from started_at), seconds, detail from audit.stage_runs "
                        "where run_key = %s and stage like 'apply[%%'", (run_key,)).fetchall()
    if not rows:
        return

    def add(into: dict[str, Any], d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                add(into.setdefault(k, {}), v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "plan_id":
                into[k] = into.get(k, 0) + v
            else:                         # plan_id, dry_run, held, error: the first shard's
                into.setdefault(k, v)

    merged: dict[str, Any] = {"shards": len(rows)}
    for _started, _seconds, d in rows:
        add(merged, d)
    start = min(float(r[0]) for r in rows)
    end = max(float(r[0]) + float(r[1]) for r in rows)
    with conn.transaction():
        conn.execute(
            """insert into audit.stage_runs (run_key, logical_date, stage, started_at, seconds, detail)
               values (%s, %s, 'apply', to_timestamp(%s), %s, %s)
               on conflict (run_key, stage) do update set started_at = excluded.started_at,
                   seconds = excluded.seconds, detail = excluded.detail""",
            (run_key, logical_instant(logical_date).date(), start, round(end - start, 3), Jsonb(merged)))


def apply(run_key: str, logical_date: date | datetime, plan_id: int, *, dry_run: bool = False,
          shard: int | None = None, shards: int = 1) -> dict[str, Any]:
    """Apply plan `plan_id` to the LMS. With `shard` (0 ≤ shard < shards) this is one of `shards`
    parallel appliers (the DAG's mapped tasks): it records stage 'apply[shard]' and refreshes the
    summed 'apply' stage."""
    settings = Settings.from_env()
    detail: dict[str, Any] = {"plan_id": plan_id, "dry_run": dry_run}
    stage = "apply" if shard is None else f"apply[{shard}]"
    try:
        return _apply(run_key, logical_date, plan_id, dry_run, (shard or 0, shards if shard is not None else 1),
                      settings, detail, stage)
    finally:
        if shard is not None:
            with db.connect() as conn:
                _merge_apply_stages(conn, run_key, logical_date)


def _apply(run_key, logical_date, plan_id, dry_run, shard, settings, detail, stage) -> dict[str, Any]:
    from hrlms.sync.apply import ApplyHalted, apply_plan
    from hrlms.sync.breaker import PlanHeld
    from hrlms.sync.scim import ScimClient, lms_config_from_env

    with _stage(run_key, logical_date, stage, detail) as conn:
        status, reason = conn.execute("select status, held_reason from sync.plans where plan_id = %s",
                                      (plan_id,)).fetchone()
        if status == "held":
            detail["held"] = reason
            if dry_run:
                return detail
            raise PlanHeld(plan_id, reason.split("; "))
        if dry_run:
            return detail

        def record(res) -> None:
            detail.update({"applied": dict(res.applied), "writes": res.writes, "escrow": res.escrow,
                           "dead_letter": res.dead_letter, "deferred": res.deferred, "attempted": res.attempted,
                           "failed": res.failed})

        with ScimClient(lms_config_from_env(), pool_size=settings.lms_concurrency) as client:
            try:
                res = apply_plan(conn, plan_id, client, batch_size=settings.lms_batch_size,
                                 concurrency=settings.lms_concurrency, shard=shard)
            except ApplyHalted as halted:      # mass failure: the run stops and alerts (quarantine)
                record(halted.result)
                raise
            finally:
                detail["lms_requests"] = client.stats.snapshot()   # attempts, retries by reason, waits
        record(res)
    return {"plan_id": plan_id, "writes": res.writes, "escrow": res.escrow, "dead_letter": res.dead_letter}


def decide_plan(run_key: str, logical_date: date | datetime, plan_id: int, decision: str, decided_by: str) -> dict[str, Any]:
    """A person's decision on a held plan (DAG conf approve_plan / reject_plan). Approval applies exactly
    that plan's ops (not a recomputed diff) right away; rejection records it and sends nothing. The
    export of the plan follows (export_enrolments with the same run_key: the DAG's export task)."""
    from hrlms.sync.breaker import decide

    detail: dict[str, Any] = {"plan_id": plan_id, "decision": decision, "decided_by": decided_by}
    with _stage(run_key, logical_date, "decision", detail) as conn:
        decide(conn, plan_id, decision, decided_by)
    if decision == "approved":
        return apply(run_key, logical_date, plan_id)
    return detail


class RunFailed(RuntimeError):
    """A stage of this run failed (e.g. the snapshot was rejected): the run must end failed."""


def _prune_event_snapshots(conn, run_key: str) -> int:
    """Delete the raw lines of the event-built snapshots no build refers to any more (hrlms.sources.events.prune):
    after the apply, off the path from an HR event to the LMS, and only while this run holds the warehouse
    (another run's snapshot in the making is not built or staged yet). Returns the snapshots pruned."""
    from hrlms.sources import events
    from hrlms.transform.dbt import staged_snapshot
    from hrlms.warehouse import lease

    if lease.holder(conn) != run_key or not events.has_events(conn):
        return 0
    row = conn.execute("select detail -> 'workers' from audit.stage_runs where run_key = %s and stage = 'ingest'",
                       (run_key,)).fetchone()
    mine = row[0] if row and row[0] else {}
    keep = {*_last_built(conn).values(), staged_snapshot(conn),
            *(mine.get(k) for k in ("snapshot_id", "file_snapshot_id"))} - {None}
    return events.prune(conn, keep)


def gate_docs(conn, run_key: str) -> list[str]:
    """The Data Docs of the run's gate when it left them for after the apply (gate(docs_after_apply=True)): the
    validation results it stored under these run names, rendered now. Returns the run names rendered."""
    from hrlms.quality.gate import build_docs

    row = conn.execute("select detail -> 'data_docs_after_apply' from audit.stage_runs where run_key = %s "
                       "and stage = 'gate' and detail ? 'data_docs_after_apply' order by started_at desc limit 1",
                       (run_key,)).fetchone()
    if not row:
        return []
    build_docs(None, list(row[0]))
    return list(row[0])


def report(run_key: str, logical_date: date | datetime, *, pages: bool = True) -> str:
    """Write the run report (JSON + HTML) next to the Data Docs; returns its path. `pages`: also the day's
    compliance and access-timeliness pages (the scheduled runs); an event run (hrlms_hr_events) writes its run
    report only — the pages read every run's figures (1M workers: ~90 s while the initial load is among the
    access page's last 30 runs), and the next event run waits for this task.

    Renders the gate's Data Docs when the gate left them for after the apply (gate_docs). Runs even when a stage
    failed, and then raises RunFailed after writing, so the run ends failed with the reason and the report's
    location in one message.
    """
    from hrlms.report import write_run_report
    from hrlms.warehouse import lease

    settings = Settings.from_env()
    with db.connect() as conn:
        db.bootstrap(conn)
        pruned = _prune_event_snapshots(conn, run_key)
        lease.release(conn, run_key)       # whatever happened: the next run may build
        if pruned:
            conn.execute("update audit.stage_runs set detail = jsonb_set(detail, '{events,pruned_snapshots}', %s) "
                         "where run_key = %s and stage = 'ingest' and detail ? 'events'", (Jsonb(pruned), run_key))
        row = conn.execute("select detail ->> 'plan_id' from audit.stage_runs where run_key = %s "
                           "and stage in ('plan', 'decision') order by started_at desc limit 1",
                           (run_key,)).fetchone()
        plan_id = int(row[0]) if row and row[0] else None
        path = write_run_report(conn, settings.reports_dir, run_key, logical_instant(logical_date).date(), plan_id)
        gate_docs(conn, run_key)
        if pages:
            from hrlms.access.report import write_access_report
            from hrlms.learning.report import write_compliance_report

            write_compliance_report(conn, settings.reports_dir, logical_instant(logical_date).date())
            write_access_report(conn, settings.reports_dir, logical_instant(logical_date).date(), run_key)
        failed = conn.execute("select stage, detail ->> 'error' from audit.stage_runs "
                              "where run_key = %s and detail ? 'error' order by started_at", (run_key,)).fetchall()
    if failed:
        stage, error = failed[0]
        raise RunFailed(f"stage {stage} failed: {error}\nrun report: {path}")
    return str(path)


def run_all(run_key: str, logical_date: date | datetime, *, dry_run: bool = False) -> dict[str, Any]:
    """The whole pipeline without Airflow (used by tests of the package; the DAG calls the stages)."""
    snaps = ingest(run_key, logical_date)
    completions(run_key, logical_date)
    stage_models(run_key, logical_date, snaps)
    gate(run_key, logical_date, snaps)
    transform(run_key, logical_date, snaps)
    p = plan(run_key, logical_date, snaps)
    try:
        a = apply(run_key, logical_date, p["plan_id"], dry_run=dry_run)
    finally:     # after the apply, whatever it did (as the DAG's export task: trigger rule all_done)
        e = export_enrolments(run_key, logical_date, dry_run=dry_run)
    return {"snapshots": snaps, "plan": p, "apply": a, "export": e, "report": report(run_key, logical_date)}


__all__ = ["ingest", "receive_events", "event_snapshot", "event_build", "completions", "export_enrolments", "decide_plan",
           "stage_models", "gate", "gate_docs", "transform", "marts", "plan", "apply", "apply_shards", "report", "run_all"]
