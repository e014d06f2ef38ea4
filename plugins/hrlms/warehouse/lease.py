"""One pipeline at a time on the warehouse.

The daily/hourly run (hrlms_provision) and the HR event runs (hrlms_hr_events) rebuild the same staging
table, models and plans, in several Airflow tasks each: two runs interleaving their stages would gate one
snapshot and build another. The run that holds the lease (`audit.pipeline_lease`, one row) builds; a run
of the other DAG waits for it. A run takes the lease before it chooses its snapshot (events) or stages it
(files), keeps it through the apply, and gives it back in its report task, which runs whatever happened.
Re-entrant per run key, so a retried task of the holder goes on. A holder whose heartbeat (every stage
under the lease beats) is older than HRLMS_LEASE_STALE_MINUTES (default 60) is taken over: its run died
without a report (a killed DAG run).
"""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("hrlms.lease")


class LeaseTimeout(RuntimeError):
    """Another run kept the warehouse for longer than this run would wait (the task fails and is retried)."""


def _minutes(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of minutes, not {os.environ.get(name)!r}") from exc


def try_acquire(conn, run_key: str) -> str | None:
    """Take the lease for `run_key` (or keep it). Returns None when taken, else the holder's run key."""
    stale = _minutes("HRLMS_LEASE_STALE_MINUTES", 60)
    with conn.transaction():
        row = conn.execute(
            """update audit.pipeline_lease
               set run_key = %(rk)s, heartbeat_at = clock_timestamp(),
                   taken_at = case when run_key is distinct from %(rk)s then clock_timestamp() else taken_at end
               where id = 1 and (run_key is null or run_key = %(rk)s
                                 or heartbeat_at < clock_timestamp() - make_interval(mins => %(stale)s::int))
               returning 1""", {"rk": run_key, "stale": int(stale)}).fetchone()
        if row:
            return None
        return conn.execute("select run_key from audit.pipeline_lease where id = 1").fetchone()[0]


def acquire(conn, run_key: str) -> float:
    """Wait (up to HRLMS_LEASE_WAIT_MINUTES, default 60) until this run holds the lease; returns the seconds
    waited."""
    wait = _minutes("HRLMS_LEASE_WAIT_MINUTES", 60) * 60
    started = time.monotonic()
    holder = try_acquire(conn, run_key)
    if holder is not None:
        log.info("the warehouse is busy with run %s: waiting for it (up to %.0f s)", holder, wait)
    while holder is not None:
        if time.monotonic() - started > wait:
            raise LeaseTimeout(f"run {holder} has held the warehouse for more than {wait:.0f} s "
                               f"(HRLMS_LEASE_WAIT_MINUTES); this run did not start building")
        time.sleep(0.5)
        holder = try_acquire(conn, run_key)
    return round(time.monotonic() - started, 3)


def release(conn, run_key: str) -> bool:
    """Give the lease back (no-op unless `run_key` holds it)."""
    with conn.transaction():
        return conn.execute("update audit.pipeline_lease set run_key = null, heartbeat_at = null, taken_at = null "
                            "where id = 1 and run_key = %s returning 1", (run_key,)).fetchone() is not None


def holder(conn) -> str | None:
    return conn.execute("select run_key from audit.pipeline_lease where id = 1").fetchone()[0]


__all__ = ["LeaseTimeout", "acquire", "holder", "release", "try_acquire"]
