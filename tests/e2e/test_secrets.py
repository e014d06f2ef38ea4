"""Secrets never leave: after real DAG runs (a good day and a rejected file), the LMS token and the
warehouse password appear nowhere in the logs, XCom, run reports, compliance report, CSV exports, GX
Data Docs, dbt's logs and artifacts, or the warehouse's own audit/sync tables."""
from __future__ import annotations

import logging
import os
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hrlms.settings import REPO_ROOT
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker

pytestmark = pytest.mark.e2e
D1, D2 = date(2026, 1, 5), date(2026, 1, 6)


def _files(*roots: Path):
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000)


def test_no_secret_in_logs_xcom_reports_data_docs_or_dbt_artifacts(provision_dag, fresh_db, fresh_lms, landing,
                                                                    caplog, capfd):
    token = fresh_lms[1]
    password = urlsplit(os.environ["WAREHOUSE_URL"]).password
    assert token and password and len(token) > 16 and len(password) > 16
    caplog.set_level(logging.DEBUG)
    (landing / f"workers_{D1.isoformat()}.csv").write_text(csv_text([worker(i) for i in range(1, 21)]))
    (landing / f"org_units_{D1.isoformat()}.csv").write_text(ORG_CSV)
    (landing / f"workers_{D2.isoformat()}.csv").write_text("Employee_ID,First_Name\nP1,Ann\n")   # rejected at ingest
    (landing / f"org_units_{D2.isoformat()}.csv").write_text(ORG_CSV)
    runs = [provision_dag.test(logical_date=datetime.combine(d, datetime.min.time(), tzinfo=timezone.utc))
            for d in (D1, D2)]
    assert [r.state for r in runs] == ["success", "failed"]

    places: dict[str, str] = {"captured logs": caplog.text, "stdout/stderr": "".join(capfd.readouterr())}
    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    with sqlite3.connect(airflow_home / "airflow.db") as c:
        xcoms = c.execute("select value from xcom where run_id in (?, ?)", tuple(r.run_id for r in runs)).fetchall()
    assert xcoms, "the runs left no XCom to check"
    places["xcom"] = "\n".join(str(v) for (v,) in xcoms)
    with db.connect() as conn:
        places["audit.stage_runs"] = "\n".join(str(r) for r in conn.execute("select * from audit.stage_runs"))
        places["sync.ops"] = "\n".join(str(r) for r in conn.execute("select * from sync.ops"))
        places["dq tables"] = "\n".join(str(r) for r in conn.execute(
            "select * from dq.gate_runs g full join dq.quarantine q using (snapshot_id)"))
    reports = landing.parent / "reports"
    gx = REPO_ROOT / "expectations"
    dbt_target = Path(os.environ.get("HRLMS_DBT_TARGET_PATH") or REPO_ROOT / "dbt_project" / "target")
    scanned = 0
    for path in _files(reports, gx, dbt_target, airflow_home / "logs", REPO_ROOT / "dbt_project" / "logs"):
        places[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
        scanned += 1
    assert scanned >= 5 and any("run_" in p for p in places) and any("data_docs" in p for p in places)
    leaks = [(where, which) for where, text in places.items()
             for which, secret in (("LMS token", token), ("warehouse password", password)) if secret in text]
    assert leaks == []
