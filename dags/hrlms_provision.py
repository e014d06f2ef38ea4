"""hrlms_provision — HR snapshot → raw_hris → quality gate → dbt → plan → SCIM LMS, for one logical date.

Also: the learning rules file is validated and loaded with the snapshot (ingest), new xAPI statements
are pulled from the LRS (completions) before dbt builds assignments and compliance marts; audience
groups go to the LMS through the same plan/apply, and a CSV enrolment file is exported.

Thin on purpose: every task calls a stage in hrlms.pipeline (tested there). Nothing heavy is imported
at parse time. XCom carries ids and counts only.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task


def _run() -> tuple[str, pendulum.DateTime]:
    """(run id, the run's logical moment): effective dates are derived from it, never from now()."""
    ctx = get_current_context()
    when = ctx.get("logical_date") or ctx["dag_run"].run_after
    return ctx["run_id"], pendulum.instance(when).in_timezone("UTC")


@dag(
    dag_id="hrlms_provision",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hrlms", "provisioning"],
    params={"dry_run": Param(False, type="boolean", description="Compute the plan, apply nothing.")},
    doc_md=__doc__,
)
def hrlms_provision():
    @task
    def ingest() -> dict:
        from hrlms import pipeline

        return pipeline.ingest(*_run())

    @task
    def completions() -> dict:
        """New xAPI statements from the LRS (skipped when no LRS is configured)."""
        from hrlms import pipeline

        return pipeline.completions(*_run())

    @task
    def staging(snapshots: dict) -> dict:
        from hrlms import pipeline

        pipeline.stage_models(*_run(), snapshots)
        return snapshots

    @task
    def gate(snapshots: dict) -> dict:
        from hrlms import pipeline

        pipeline.gate(*_run(), snapshots)
        return snapshots

    @task
    def transform(snapshots: dict, pulled: dict) -> dict:
        from hrlms import pipeline

        pipeline.transform(*_run(), snapshots)
        return snapshots

    @task
    def export_enrolments(snapshots: dict) -> dict:
        """CSV enrolment file for LMSs without an API."""
        from hrlms import pipeline

        return pipeline.export_enrolments(*_run())

    @task
    def plan(snapshots: dict) -> dict:
        from hrlms import pipeline

        return pipeline.plan(*_run(), snapshots)

    @task
    def apply(planned: dict) -> dict:
        from hrlms import pipeline

        # The run's own conf (the trigger form fills it from the param), never a default left over in
        # the DAG object by an earlier in-process run.
        dry_run = bool((get_current_context()["dag_run"].conf or {}).get("dry_run", False))
        return pipeline.apply(*_run(), planned["plan_id"], dry_run=dry_run)

    @task(trigger_rule="all_done")
    def report() -> str:
        """Runs even when a stage failed: a rejected snapshot gets a report too."""
        from hrlms import pipeline

        return pipeline.report(*_run())

    built = transform(gate(staging(ingest())), completions())
    [apply(plan(built)), export_enrolments(built)] >> report()


hrlms_provision()
