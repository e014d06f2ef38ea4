"""Where the DAGs' tasks run on a CeleryExecutor, and how the apply survives a lost worker.

Read when the DAG files are parsed (light: no Airflow, dbt or GX import here), so the scheduler and every worker
see the same values — set them in the environment of every Airflow component (docs/scale-out.md):

- ``HRLMS_WAREHOUSE_QUEUE`` (default ``warehouse``): the tasks that work the warehouse — ingest, completions,
  staging (dbt), the gate (GX), the transform (dbt), the plan; the events DAG's land and build.
- ``HRLMS_LMS_QUEUE`` (default ``lms``): the apply shards, the only tasks that talk to the LMS.
- everything else (routing, the shard count, the enrolment export, the report) stays on Airflow's
  ``[operators] default_queue``.

A LocalExecutor ignores queues. On Celery, every queue needs at least one worker (``airflow celery worker
--queues default,warehouse,lms``; docker-compose's ``airflow-worker`` listens on all three by default).

An apply shard is retried (``HRLMS_APPLY_RETRIES``, default 3, every ``HRLMS_APPLY_RETRY_DELAY_SECONDS``, default
30) when it dies with its worker: the retry takes back only the ops its shard had claimed (hrlms.sync.apply), so
nothing is lost or sent twice. A plan held by the breaker or an apply halted on mass failure is never retried:
a person decides (docs/safety.md).
"""
from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from typing import Any

from hrlms.settings import env_float

WAREHOUSE_QUEUE = (os.environ.get("HRLMS_WAREHOUSE_QUEUE") or "warehouse").strip()
LMS_QUEUE = (os.environ.get("HRLMS_LMS_QUEUE") or "lms").strip()
APPLY_RETRIES = max(0, int(env_float("HRLMS_APPLY_RETRIES", 3)))
APPLY_RETRY_DELAY = timedelta(seconds=max(0.0, env_float("HRLMS_APPLY_RETRY_DELAY_SECONDS", 30.0)))


def apply_shard(run_key: str, logical_date: date | datetime, plan_id: int, *, shard: int, shards: int,
                dry_run: bool = False) -> dict[str, Any]:
    """One mapped apply task (hrlms.pipeline.apply). A held plan or an apply halted on mass failure fails the
    task for good (AirflowFailException: no retry would change the decision); anything else — the worker lost,
    the warehouse or the LMS unreachable — may be retried."""
    from airflow.sdk.exceptions import AirflowFailException

    from hrlms import pipeline
    from hrlms.sync.apply import ApplyHalted
    from hrlms.sync.breaker import PlanHeld

    try:
        return pipeline.apply(run_key, logical_date, plan_id, dry_run=dry_run, shard=shard, shards=shards)
    except (PlanHeld, ApplyHalted) as final:
        raise AirflowFailException(str(final)) from final


__all__ = ["APPLY_RETRIES", "APPLY_RETRY_DELAY", "LMS_QUEUE", "WAREHOUSE_QUEUE", "apply_shard"]
