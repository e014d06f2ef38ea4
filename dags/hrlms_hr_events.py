"""hrlms_hr_events — HR change events → LMS in seconds: the same pipeline as hrlms_provision, for the people the
events change.

An HR system (or a relay) posts an asset event on `hrlms://hr/worker-changes` to Airflow's REST API
(`POST /api/v2/assets/events`, the worker records in `extra`; docs/events.md). Each run, in one task, lands the
events it was triggered by (and any an earlier run left unlanded), builds the snapshot = the last HR file
+ the events HR made after it and stages, gates, builds (incrementally: the events' people and whom they
affect) and plans it; then it applies it under the same breaker as the daily run. Events that arrive while a run is busy are taken by
the next run; the daily hrlms_provision run and these runs take turns on the warehouse (a lease).

Thin on purpose: every task calls a stage in hrlms.pipeline. XCom carries ids and counts only (never the
events' records).
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from hrlms.alerts import HrlmsAlertNotifier
from hrlms.dates import current_run
from hrlms.placement import APPLY_RETRIES, APPLY_RETRY_DELAY, LMS_QUEUE, WAREHOUSE_QUEUE

HR_CHANGES = Asset(uri="hrlms://hr/worker-changes", name="hr_worker_changes")


@dag(
    dag_id="hrlms_hr_events",
    schedule=[HR_CHANGES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    tags=["hrlms", "provisioning", "events"],
    doc_md=__doc__,
)
def hrlms_hr_events():
    @task.short_circuit(inlets=[HR_CHANGES], ignore_downstream_trigger_rules=False, queue=WAREHOUSE_QUEUE)
    def build() -> list[dict]:
        """Lands the run's events and those of the last hour that no run landed (a run that died before landing
        them), once per event id; takes the warehouse lease, builds the snapshot (the last HR file + the events
        after it), stages, gates, transforms and plans it — one task, so an event waits for one task start and
        the run imports dbt and GX once. Short-circuits the apply before the first HR file is built (the report
        still runs). A retry lands nothing twice and skips the stages already built. Returns the apply's
        arguments, one per shard (Airflow maps only over a task's whole return value)."""
        from hrlms import pipeline
        from hrlms.sources.events import from_airflow

        ctx = get_current_context()
        triggering = list((ctx.get("triggering_asset_events") or {}).get(HR_CHANGES, []))
        since = pendulum.instance(ctx["dag_run"].run_after).subtract(hours=1)
        recent = list(ctx["inlet_events"][HR_CHANGES].after(since.isoformat()))
        planned = pipeline.event_build(*current_run(), from_airflow(triggering + recent))
        return [{"planned": planned, "shard": shard, "of": planned["shards"]} for shard in planned.get("shards", [])]

    @task(multiple_outputs=True, pool="hrlms_lms", queue=LMS_QUEUE, retries=APPLY_RETRIES,
          retry_delay=APPLY_RETRY_DELAY, map_index_template="shard {{ task.op_kwargs['shard'] }}")
    def apply(planned: dict, shard: int, of: list[int]) -> dict:
        from hrlms.placement import apply_shard

        return apply_shard(*current_run(), planned["plan_id"], shard=shard, shards=len(of))

    @task(trigger_rule="all_done", multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def marts() -> dict:
        """The reporting tables, after the apply (hrlms_provision's task of the same name)."""
        from hrlms import pipeline

        detail = pipeline.marts(*current_run())
        return {"build": detail.get("build") or detail.get("skipped", "")}

    @task(trigger_rule="all_done", on_failure_callback=[HrlmsAlertNotifier()])
    def report() -> str:
        """Runs whatever happened: gives the warehouse back, writes the run report, fails (and alerts) when
        a stage failed or the plan is held by the breaker. The day's compliance and access pages are the
        scheduled runs' (hrlms_provision): the next event run waits for this task."""
        from hrlms import pipeline

        return pipeline.report(*current_run(), pages=False)

    done = report()
    apply.expand_kwargs(build()) >> marts() >> done


hrlms_hr_events()
