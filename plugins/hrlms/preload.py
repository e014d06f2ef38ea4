"""The task modules imported once in the Airflow processes that fork task processes, not in every task.

Airflow forks each task's process from a long-lived one: the LocalExecutor's workers from the scheduler, a
Celery worker's pool processes from ``airflow celery worker``. A module imported there before the fork is
already imported in the task. dbt (~1.3 s), GX (~2.5 s) and our pipeline (~0.7 s) were imported by every
task that needs them (measured here: about 4.5 s of CPU per event run's build task, on the way from an HR
event to the LMS). Airflow imports ``airflow_local_settings`` (plugins/airflow_local_settings.py) in each of
its processes at start-up; it calls ``preload()``, which imports them in the scheduler and in Celery workers
only (the API server, the DAG processor and the CLI start as fast as before).

``HRLMS_PRELOAD_TASK_MODULES=false`` turns it off (each task then imports what it uses, as before). Nothing
here starts a thread or opens a connection: a fork copies no half-held lock.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: what the warehouse tasks (dbt, GX, the stages) and the apply import
TASK_MODULES = ("dbt.cli.main", "dbt.adapters.postgres", "great_expectations", "great_expectations.expectations",
                "hrlms.pipeline", "hrlms.sources.events", "hrlms.transform.dbt", "hrlms.quality.gate",
                "hrlms.warehouse.changes", "hrlms.sync.plan", "hrlms.sync.apply")


def enabled() -> bool:
    return (os.environ.get("HRLMS_PRELOAD_TASK_MODULES") or "true").strip().lower() not in ("0", "false", "no", "off")


def forks_tasks(argv: Sequence[str]) -> bool:
    """The Airflow command runs tasks in processes it forks: `airflow scheduler` (its LocalExecutor's workers)
    or `airflow celery worker`."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    return args[:1] == ["scheduler"] or args[:2] == ["celery", "worker"]


def preload(argv: Sequence[str] | None = None) -> list[str]:
    """Import TASK_MODULES when this process forks task processes (and preloading is enabled); returns the
    modules imported. A module that cannot be imported is left to the task (which then fails as it would)."""
    if not enabled() or not forks_tasks(sys.argv if argv is None else argv):
        return []
    started, done = time.perf_counter(), []
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")   # as the gate imports it (hrlms.quality.gate)
    for name in TASK_MODULES:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:   # noqa: BLE001 - the task reports it where it belongs, with its own import
            log.warning("hrlms: task module %s not preloaded: %s", name, exc)
    log.info("hrlms: %d task modules preloaded in %.1f s", len(done), time.perf_counter() - started)
    return done


__all__ = ["TASK_MODULES", "enabled", "forks_tasks", "preload"]
