"""The run's logical moment: the one clock every effective-date rule reads (never now())."""
from __future__ import annotations

import os
from datetime import date, datetime, time, timezone


def logical_instant(when: date | datetime) -> datetime:
    """The run's logical moment in UTC (a bare date means 00:00 UTC that day). Per-worker local dates
    (effective dating) are derived from it in SQL with each worker's time zone — never from now()."""
    if isinstance(when, datetime):
        return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return datetime.combine(when, time.min, tzinfo=timezone.utc)


def current_run() -> tuple[str, datetime]:
    """Inside an Airflow task: (run id, the run's logical moment in UTC) — the logical date, or for a run without
    one (an asset-triggered run: HR change events) the moment it was due (`run_after`). Effective dates are
    derived from it, never from now()."""
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    return ctx["run_id"], logical_instant(ctx.get("logical_date") or ctx["dag_run"].run_after)


def provision_schedule() -> str | None:
    """hrlms_provision's schedule: HRLMS_PROVISION_SCHEDULE (a cron expression or an Airflow preset), default
    ``@hourly`` (docs/timeliness.md); ``none`` = no schedule, only triggered runs (the UI, the REST API)."""
    raw = (os.environ.get("HRLMS_PROVISION_SCHEDULE") or "").strip()
    if raw.lower() == "none":
        return None
    return raw or "@hourly"
