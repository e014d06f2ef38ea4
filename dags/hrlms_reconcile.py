"""hrlms_reconcile — weekly drift check of the LMS against what hrlms applied (and optional remaster).

Pages every LMS user and group and compares them with sync.applied_* : accounts/groups missing from
the LMS, attributes changed out of band, unknown accounts (never modified), duplicates and membership
drift go to sync.drift and a report under ``<HRLMS_REPORTS_DIR>/reconcile/``. With the param
``remaster`` the desired state is re-applied to what drifted, through a normal plan under the same
breaker: a held plan fails the run (alert) and waits for approval in hrlms_provision
(``{"approve_plan": <id>}``). See hrlms.sync.reconcile.

Thin on purpose: the task calls hrlms.sync.reconcile.run; nothing heavy is imported at parse time.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from hrlms.alerts import HrlmsAlertNotifier


@dag(
    dag_id="hrlms_reconcile",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hrlms", "provisioning", "reconcile"],
    params={
        "remaster": Param(False, type="boolean",
                          description="Re-apply the desired state to drifted objects (same breaker as provisioning)."),
    },
    doc_md=__doc__,
)
def hrlms_reconcile():
    @task(multiple_outputs=True, on_failure_callback=[HrlmsAlertNotifier()])
    def reconcile() -> dict:
        from hrlms.sync.reconcile import run

        ctx = get_current_context()
        # The run's own conf (the trigger form fills it from the param): a scheduled run only reports.
        remaster = bool((ctx["dag_run"].conf or {}).get("remaster", False))
        when = ctx.get("logical_date") or ctx["dag_run"].run_after
        return run(ctx["run_id"], pendulum.instance(when).in_timezone("UTC"), remaster=remaster)

    reconcile()


hrlms_reconcile()
