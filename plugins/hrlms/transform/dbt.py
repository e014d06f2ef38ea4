"""Run dbt in-process (dbtRunner) for one snapshot and logical date.

One `dbt build` task rather than a cosmos task per model: figures in the README ("dbt: one task or
cosmos"). The warehouse credentials reach dbt as env vars; the password as DBT_ENV_SECRET_PASSWORD so
dbt scrubs it from its logs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hrlms.dates import logical_instant
from hrlms.warehouse.db import warehouse_url

PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"


class DbtError(RuntimeError):
    pass


@dataclass(frozen=True)
class DbtResult:
    success: bool
    counts: dict[str, int]
    failures: list[str]


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
            target_path: str | None = None) -> DbtResult:
    """`logical_date` is the run's logical moment (a bare date = 00:00 UTC): models get its UTC date
    (`logical_date`) and the instant itself (`logical_ts`) to derive each worker's local date."""
    from dbt.cli.main import dbtRunner

    ts = logical_instant(logical_date)
    # As environment variables read by the run_param macro, not --vars: a change of --vars makes dbt
    # re-parse the whole project (measured ~5.5 s against 0.8 s for a partial parse).
    run_params = {"HRLMS_RUN_SNAPSHOT_ID": str(snapshot_id), "HRLMS_RUN_ORG_SNAPSHOT_ID": str(org_snapshot_id),
                  "HRLMS_RUN_LOGICAL_DATE": ts.date().isoformat(), "HRLMS_RUN_LOGICAL_TS": ts.isoformat()}
    target = target_path or str(PROJECT_DIR / "target")
    cli = [*args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
           "--target-path", target, "--log-path", str(Path(target) / "logs"), "--quiet", "--no-use-colors"]
    with _env(dbt_env() | run_params):
        res = dbtRunner().invoke(cli)
    if res.exception is not None:
        raise DbtError(f"dbt {' '.join(args)} could not run: {res.exception}")
    counts: dict[str, int] = {}
    failures = []
    for r in getattr(res.result, "results", None) or []:   # parse/compile return other objects
        status = str(getattr(r, "status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
        if status in ("error", "fail"):
            failures.append(f"{r.node.name}: {r.message}")
    return DbtResult(bool(res.success), counts, failures)


def build(*, snapshot_id: int, org_snapshot_id: int, logical_date: date | datetime, select: str | None = None,
          unit_tests: bool = False) -> DbtResult:
    """dbt build (models, snapshots, data tests) for one run. dbt unit tests check the SQL, not the data,
    so a daily run skips them (~8 s each); CI runs them once (tests/dbt/test_dbt_unit_tests.py)."""
    args = ["build"] + (["--select", select] if select else [])
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    result = run_dbt(args, snapshot_id=snapshot_id, org_snapshot_id=org_snapshot_id, logical_date=logical_date)
    if not result.success:
        raise DbtError("dbt build failed: " + "; ".join(result.failures[:10]))
    return result
