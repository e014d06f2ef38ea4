"""hrlms_provision — HR snapshot → raw_hris → quality gate → dbt → plan → SCIM LMS, for one logical date.

Also: the learning rules file is validated and loaded with the snapshot (ingest), new xAPI statements
are pulled from the LRS (completions) before dbt builds assignments and compliance marts; audience
groups go to the LMS through the same plan/apply, and a CSV enrolment file is exported after the
apply (what the LMS got; nothing is published while the plan is held).

Thin on purpose: every task calls a stage in hrlms.pipeline (tested there). Nothing heavy is imported
at parse time. XCom carries ids and counts only.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from hrlms.alerts import HrlmsAlertNotifier
from hrlms.dates import current_run, provision_schedule
from hrlms.placement import APPLY_RETRIES, APPLY_RETRY_DELAY, LMS_QUEUE, WAREHOUSE_QUEUE


@dag(
    dag_id="hrlms_provision",
    # Hourly by default: with the dbt var access_lead_hours (3) every hire is active before 00:00 local on
    # day one and every leaver is deactivated within 2 hours after their last local day, in any zone; a run
    # with nothing due costs seconds (docs/pipeline.md, "Timing"). HRLMS_PROVISION_SCHEDULE overrides it
    # ("none": runs only when triggered, e.g. by the HR export job through the REST API).
    schedule=provision_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hrlms", "provisioning"],
    params={
        "dry_run": Param(False, type="boolean", description="Compute the plan, apply nothing."),
        "approve_plan": Param(None, type=["null", "integer"],
                              description="Apply exactly this held plan (its id is in the run report and the alert)."),
        "reject_plan": Param(None, type=["null", "integer"], description="Reject this held plan; nothing is sent."),
        "decided_by": Param("", type="string", description="Who approves/rejects (recorded with the decision)."),
        "full_refresh": Param(False, type="boolean",
                              description="Rebuild every person and compare every LMS account (not only what "
                                          "changed since the last build)."),
    },
    doc_md=__doc__,
)
def hrlms_provision():
    # A real two-way branch (decide XOR ingest + completions), not a short-circuit: @task.short_circuit
    # can only run all its downstream tasks or skip them all, and decide must run exactly when the
    # pipeline does not. AIR004's heuristic only sees that one return is a non-empty list.
    @task.branch  # noqa: AIR004
    def route() -> str | list[str]:
        """A decision on a held plan (approve_plan / reject_plan) skips the whole pipeline: the approved
        plan is applied as it was reviewed, never recomputed."""
        conf = get_current_context()["dag_run"].conf or {}
        if conf.get("approve_plan") or conf.get("reject_plan"):
            return "decide"
        return ["ingest", "completions"]

    @task(multiple_outputs=True)
    def decide() -> dict:
        from hrlms import pipeline

        ctx = get_current_context()
        conf = ctx["dag_run"].conf or {}
        decision = "approved" if conf.get("approve_plan") else "rejected"
        plan_id = int(conf.get("approve_plan") or conf.get("reject_plan"))
        by = str(conf.get("decided_by") or "") or f"dag run {ctx['run_id']}"
        return pipeline.decide_plan(*current_run(), plan_id, decision, by)

    @task(multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def ingest() -> dict:
        from hrlms import pipeline

        return pipeline.ingest(*current_run())

    @task(multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def completions() -> dict:
        """New xAPI statements from the LRS (skipped when no LRS is configured)."""
        from hrlms import pipeline

        return pipeline.completions(*current_run())

    @task(multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def staging(snapshots: dict) -> dict:
        from hrlms import pipeline

        pipeline.stage_models(*current_run(), snapshots)
        return snapshots

    @task(multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def gate(snapshots: dict) -> dict:
        from hrlms import pipeline

        pipeline.gate(*current_run(), snapshots)
        return snapshots

    @task(multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def transform(snapshots: dict, pulled: dict) -> dict:
        from hrlms import pipeline

        conf = get_current_context()["dag_run"].conf or {}
        pipeline.transform(*current_run(), snapshots, full_refresh=bool(conf.get("full_refresh", False)),
                           defer_reporting=True)
        return snapshots

    @task(trigger_rule="all_done", multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def marts() -> dict:
        """The reporting tables (compliance counts, month-end figures, data-quality issues, org history), after
        the apply, whatever it did: the LMS does not wait for what only analysts and HR read (on 2 cores, built
        alongside the apply they slowed it as much as they saved). Nothing when this run built no models."""
        from hrlms import pipeline

        detail = pipeline.marts(*current_run())
        return {"build": detail.get("build") or detail.get("skipped", "")}

    @task(trigger_rule="all_done", multiple_outputs=True)
    def export_enrolments() -> dict:
        """CSV enrolment file for LMSs without an API, after the apply (or the decision on a held plan),
        whatever it did: published only when the run's plan was applied (a held plan's file is kept
        aside for review, a dry run publishes nothing); it lists what the LMS really got."""
        from hrlms import pipeline

        dry_run = bool((get_current_context()["dag_run"].conf or {}).get("dry_run", False))
        return pipeline.export_enrolments(*current_run(), dry_run=dry_run)

    @task(multiple_outputs=True, queue=WAREHOUSE_QUEUE)
    def plan(snapshots: dict) -> dict:
        from hrlms import pipeline

        return pipeline.plan(*current_run(), snapshots)

    @task
    def shards(planned: dict) -> list[int]:
        """One mapped apply task per shard (HRLMS_APPLY_SHARDS)."""
        from hrlms import pipeline

        return pipeline.apply_shards(planned["plan_id"])

    @task(multiple_outputs=True, pool="hrlms_lms", queue=LMS_QUEUE, retries=APPLY_RETRIES,
          retry_delay=APPLY_RETRY_DELAY, map_index_template="shard {{ task.op_kwargs['shard'] }}")
    def apply(planned: dict, shard: int, of: list[int]) -> dict:
        """Mapped: the shards claim op batches with FOR UPDATE SKIP LOCKED, so a Celery/Kubernetes
        executor spreads the apply across workers (queue HRLMS_LMS_QUEUE); the pool hrlms_lms bounds how many
        talk to the LMS. A shard that dies with its worker is retried and takes back only its own claimed ops;
        a held plan or a halted apply is not retried (hrlms.placement)."""
        from hrlms.placement import apply_shard

        # The run's own conf (the trigger form fills it from the param), never a default left over in
        # the DAG object by an earlier in-process run.
        dry_run = bool((get_current_context()["dag_run"].conf or {}).get("dry_run", False))
        return apply_shard(*current_run(), planned["plan_id"], dry_run=dry_run, shard=shard, shards=len(of))

    @task(trigger_rule="all_done", on_failure_callback=[HrlmsAlertNotifier()])
    def report() -> str:
        """Runs even when a stage failed: a rejected snapshot gets a report too. It fails when a stage
        failed (or the plan is held), which sends the one alert of the run (hrlms.alerts)."""
        from hrlms import pipeline

        return pipeline.report(*current_run())

    routed = route()
    ingested, pulled = ingest(), completions()
    routed >> [ingested, pulled]
    built = transform(gate(staging(ingested)), pulled)
    done = report()
    planned = plan(built)
    parts = shards(planned)
    exported = export_enrolments()
    applied = apply.partial(planned=planned, of=parts).expand(shard=parts)
    [applied, routed >> decide()] >> exported >> done
    applied >> marts() >> done


hrlms_provision()
