"""The HR compliance report (hrlms.learning.report) and the compliance analyses, on real marts.

One warehouse for the module: two real pipeline runs (ingest → staging → gate → transform) over a tiny
HR file, 15 days apart, so that the marts hold every status — completed, expiring, expired, overdue,
in progress, not started and exempt. dbt and GX dominate the time (~60-90 s for the module).
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.sources.hrfiles import csv_text, worker

D1 = date(2026, 1, 5)
D2 = date(2026, 1, 20)     # COC-100 assigned on D1 was due D1 + 14 = 2026-01-19: overdue now
XSS = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"
EVIL_REQ = "Secure coding & <b>review</b>"
EVIL_REASON = "<img src=x onerror=alert(2)> on file"

ORG = ("Org_Code,Org_Name,Parent_Org_Code,Org_Type,Org_Status\n"
       "ORG0001,Company,,company,ACTIVE\n"
       "ORG0002,Finance,ORG0001,department,ACTIVE\n"
       "ORG0003,Engineering,ORG0001,department,ACTIVE\n"
       "ORG0004,Payroll,ORG0002,team,ACTIVE\n")
TOP_LEVEL = {"ORG0002", "ORG0003"}    # children of the root; ORG0004 is below Finance

RULES = f"""version: 1
settings: {{on_unmatch: stop_assigning}}
requirements:
  - {{id: SEC-101, kind: course, title: Information security awareness, recurrence: {{valid_months: 12, window_days: 30}}}}
  - {{id: COC-100, kind: course, title: Code of conduct}}
  - {{id: ENG-310, kind: course, title: "{EVIL_REQ}"}}
rules:
  - {{id: all-security, requirement: SEC-101, match: {{all: true}}, due: {{days: 30, after: start}}}}
  - {{id: all-conduct, requirement: COC-100, match: {{all: true}}, due: {{days: 14, after: start}}}}
  - {{id: eng-coding, requirement: ENG-310, match: {{job_families: [Engineering]}}, due: {{days: 45, after: assignment}}}}
exemptions:
  - {{person_id: P0000004, requirement: COC-100, reason: "{EVIL_REASON}", until: 2027-06-30}}
"""


def _workers() -> str:
    rows = [
        worker(1, First_Name=XSS, Org_Unit="ORG0001", Job_Family="Management"),
        worker(2, Last_Name=FORMULA, Org_Unit="ORG0002", Manager_ID="P0000001", Job_Family="Finance"),
        worker(3, Org_Unit="ORG0004", Manager_ID="P0000001", Job_Family="Finance"),
        worker(4, Org_Unit="ORG0002", Manager_ID="P0000001", Job_Family="Finance"),
        worker(5, Org_Unit="ORG0003", Manager_ID="P0000001", Job_Family="Engineering"),
        worker(6, Org_Unit="ORG0003", Manager_ID="P0000005", Job_Family="Engineering"),
        worker(7, Org_Unit="ORG0003", Manager_ID="P0000005", Job_Family="Engineering"),
    ]
    return csv_text(rows)


TRANSCRIPTS_D1 = (
    "Record_ID,User_External_ID,User_Email,Course_Code,Status,Completed_On,Score\n"
    "T1,P0000001,,SEC-101,Completed,2025-02-10,\n"       # expires 2026-02-10: within 30 days of D2
    "T2,P0000002,,SEC-101,Passed,2025-06-01T10:00:00Z,91\n"   # valid until 2026-06-01
    "T3,P0000003,,SEC-101,Completed,2024-12-01,\n"       # expired 2025-12-01
    "T4,P0000005,,COC-100,Completed,2026-01-02,\n"       # no expiry
    "T5,,user6@example.com,SEC-101,Completed,2025-02-01,\n"   # expires 2026-02-01: within 30 days
)
TRANSCRIPTS_D2 = (
    "Record_ID,User_External_ID,User_Email,Course_Code,Status,Completed_On,Score\n"
    "T6,P0000007,,ENG-310,In Progress,2026-01-12,\n"
)


def _run(key: str, day: date, gated: dict | None = None) -> dict:
    """One pipeline run up to the marts. An HR snapshot that an earlier run already staged and gated
    (the same file again: ingest finds it by checksum) is not gated twice — that saves ~35 s."""
    from hrlms import pipeline

    snaps = pipeline.ingest(key, day)
    hr = {e: snaps[e] for e in ("workers", "org_units")}
    if hr != gated:
        pipeline.stage_models(key, day, snaps)
        pipeline.gate(key, day, snaps)
    pipeline.transform(key, day, snaps)
    return hr


@pytest.fixture(scope="module")
def marts_db(local_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A database of the module's own (like fresh_db) with the marts of two pipeline runs."""
    from hrlms.warehouse import db

    admin = local_stack.warehouse_url
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = urlunsplit(urlsplit(admin)._replace(path="/" + name))
    tmp = tmp_path_factory.mktemp("compliance")
    landing = tmp / "landing"
    landing.mkdir()
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    for day in (D1, D2):
        (landing / f"workers_{day}.csv").write_text(_workers())
        (landing / f"org_units_{day}.csv").write_text(ORG)
    (landing / f"transcripts_{D1}.csv").write_text(TRANSCRIPTS_D1)
    (landing / f"transcripts_{D2}.csv").write_text(TRANSCRIPTS_D2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("WAREHOUSE_URL", url)
            mp.setenv("AIRFLOW_CONN_HRLMS_WAREHOUSE", url)
            mp.setenv("HRLMS_LANDING_DIR", str(landing))
            mp.setenv("HRLMS_REPORTS_DIR", str(tmp / "reports"))
            mp.setenv("HRLMS_SOURCE", "file")
            mp.setenv("HRLMS_LEARNING_RULES", str(rules))
            mp.delenv("HRLMS_MAPPING", raising=False)
            with db.connect() as conn:
                db.bootstrap(conn)
            gated = _run("cr1", D1)
            assert _run("cr2", D2, gated) == gated
            with db.connect() as conn:
                snaps = dict(conn.execute(
                    "select entity, max(snapshot_id) from raw_hris.snapshots group by entity").fetchall())
            yield {"url": url, "dir": tmp, "snapshots": snaps}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def report(marts_db: dict) -> dict:
    from hrlms.learning.report import write_compliance_report

    with psycopg.connect(marts_db["url"], autocommit=True) as conn:
        path = write_compliance_report(conn, marts_db["dir"] / "reports", D2)
    return {"path": path, "html": path.read_text(encoding="utf-8"),
            "json": json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))}


def _svg(html_text: str, svg_id: str) -> str:
    m = re.search(rf'<svg id="{svg_id}".*?</svg>', html_text, re.S)
    assert m, f"no <svg id={svg_id}>"
    return m.group(0)


def _figure(html_text: str, key: str) -> str:
    m = re.search(rf"<div class='figure' id='fig-{key}'><div class='value'>([^<]*)</div>", html_text)
    assert m, f"no headline figure {key}"
    return m.group(1)


def test_report_written_next_to_run_reports(report: dict, marts_db: dict) -> None:
    path = report["path"]
    assert path == marts_db["dir"] / "reports" / "compliance" / f"compliance_{D2}.html"
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert report["html"].startswith("<!doctype html>")
    assert not list(path.parent.glob(".*tmp")), "temporary files left behind"
    # nothing about the connection ends up in the report
    parts = urlsplit(marts_db["url"])
    for text in (report["html"], json.dumps(report["json"])):
        assert "postgresql://" not in text and parts.path.lstrip("/") not in text
        if parts.password:
            assert parts.password not in text


def test_one_bar_per_top_level_unit(report: dict) -> None:
    svg = _svg(report["html"], "chart-org")
    units = set(re.findall(r'<rect class="bar" data-unit="([^"]*)"', svg))
    assert units == TOP_LEVEL
    assert svg.count('<rect class="bar"') == len(TOP_LEVEL)
    assert {u["org_unit_code"] for u in report["json"]["org_units"]} == TOP_LEVEL
    # status chart: a stacked bar per requirement
    req_svg = _svg(report["html"], "chart-requirements")
    assert "<script" not in req_svg
    assert len(re.findall(r"n=\d+</text>", req_svg)) == len(report["json"]["requirements"]) == 3


def test_headline_matches_the_marts(report: dict, marts_db: dict) -> None:
    with psycopg.connect(marts_db["url"]) as conn:
        total, completed, overdue, exempt, expiring = conn.execute(
            """select count(*), count(*) filter (where status = 'completed'),
                      count(*) filter (where status = 'overdue'), count(*) filter (where status = 'exempt'),
                      count(*) filter (where status = 'completed' and expires_on <= %s::date + 30)
               from marts.learning_compliance_status""", (D2,)).fetchone()
        by_status = dict(conn.execute(
            "select status, count(*) from marts.learning_compliance_status group by status").fetchall())
    # the tiny HR file exercises every status the report shows
    assert {"completed", "overdue", "exempt", "expired", "in_progress", "not_started"} <= set(by_status)
    assert (total, exempt, expiring) == (17, 1, 2)
    h = report["json"]["headline"]
    assert (h["assignments"], h["completed"], h["overdue"], h["exempt"], h["expiring_30d"]) == (
        total, completed, overdue, exempt, expiring)
    rate = completed / (total - exempt)
    assert h["completion_rate"] == round(rate, 4)
    html_text = report["html"]
    assert _figure(html_text, "assignments") == str(total)
    assert _figure(html_text, "overdue") == str(overdue)
    assert _figure(html_text, "exempt") == str(exempt)
    assert _figure(html_text, "expiring") == str(expiring)
    assert _figure(html_text, "completion-rate") == f"{rate * 100:.1f}%"
    # tables agree with the headline
    assert sum(r["overdue"] for r in report["json"]["overdue_by_department"]["rows"]) == overdue
    assert report["json"]["expiring"]["total"] == expiring
    assert [r["person_id"] for r in report["json"]["expiring"]["rows"]] == ["P0000006", "P0000001"]


def test_hr_values_are_escaped(report: dict) -> None:
    html_text = report["html"]
    assert "<script" not in html_text.lower()
    assert "<b>review</b>" not in html_text and "<img" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text       # the name is shown, inert
    assert "&lt;b&gt;review&lt;/b&gt;" in html_text
    assert "Content-Security-Policy" in html_text
    # the manager with the hostile name is in the manager table and the expiring table
    names = {r["manager_name"] for r in report["json"]["managers"]["top"] + report["json"]["managers"]["bottom"]}
    assert any(XSS in n for n in names)
    assert any(r["name"].startswith(XSS) for r in report["json"]["expiring"]["rows"])
    # the JSON keeps the values as they are (it is data, not markup)
    assert XSS in report["path"].with_suffix(".json").read_text()


def test_rewrite_is_byte_identical(report: dict, marts_db: dict) -> None:
    from hrlms.learning.report import write_compliance_report

    html_before = report["path"].read_bytes()
    json_before = report["path"].with_suffix(".json").read_bytes()
    with psycopg.connect(marts_db["url"], autocommit=True) as conn:
        path = write_compliance_report(conn, marts_db["dir"] / "reports", D2)
    assert path == report["path"]
    assert path.read_bytes() == html_before
    assert path.with_suffix(".json").read_bytes() == json_before


def test_empty_warehouse_gives_an_empty_state_report(fresh_db: str, landing: Path, tmp_path: Path) -> None:
    from hrlms.learning.report import write_compliance_report
    from hrlms.warehouse import db

    with db.connect() as conn:
        db.bootstrap(conn)
        path = write_compliance_report(conn, tmp_path / "reports", D1)
        # an autocommit connection is left usable and outside a transaction
        assert conn.execute("select 1").fetchone() == (1,)
    text = path.read_text(encoding="utf-8")
    assert "No compliance data" in text and "Not available in this warehouse yet" in text
    assert _figure(text, "assignments") == "0"
    assert _figure(text, "completion-rate") == "n/a"
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["headline"]["assignments"] == 0
    assert "marts.learning_compliance_status" in data["unavailable"]

    # the marts exist but hold nothing (a run before any rules existed)
    with db.connect() as conn:
        conn.execute("create schema marts")
        conn.execute("""create table marts.learning_compliance_status (assignment_id text, person_id text,
            requirement_id text, requirement_title text, status text, due_on date, expires_on date,
            org_unit_code text, org_unit_name text, as_of_date date)""")
        path = write_compliance_report(conn, tmp_path / "reports", D1)
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["headline"]["assignments"] == 0
    assert "marts.learning_compliance_status" not in data["unavailable"]
    assert "No compliance data" in path.read_text()


def test_analyses_compile_and_run(marts_db: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hrlms.transform.dbt import PROJECT_DIR, run_dbt

    monkeypatch.setenv("WAREHOUSE_URL", marts_db["url"])
    snaps = marts_db["snapshots"]
    res = run_dbt(["compile", "--select", "path:analyses"], snapshot_id=snaps["workers"],
                  org_snapshot_id=snaps["org_units"], logical_date=D2, target_path=str(tmp_path / "target"))
    assert res.success, res.failures
    sources = sorted(p.name for p in (PROJECT_DIR / "analyses").glob("*.sql"))
    compiled = {p.name: p for p in (tmp_path / "target").rglob("compiled/*/analyses/*.sql")}
    assert set(sources) <= set(compiled), set(sources) - set(compiled)
    results = {}
    with psycopg.connect(marts_db["url"]) as conn:
        for name in sources:
            sql = compiled[name].read_text()
            assert "{{" not in sql and "ref(" not in sql
            cur = conn.execute(sql)
            results[name] = [dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()]
            conn.rollback()
    for name in ("overdue_by_department.sql", "expiring_in_30_days.sql", "completion_rate_by_manager.sql",
                 "compliance_trend_by_month.sql"):
        head = (PROJECT_DIR / "analyses" / name).read_text().splitlines()[:3]
        assert head[0].startswith("-- Question:") and head[1].startswith("-- For:"), name
    # the analyses and the report tell the same story
    with psycopg.connect(marts_db["url"], autocommit=True) as conn:
        from hrlms.learning.report import collect

        data = collect(conn, D2)
    assert sum(r["overdue"] for r in results["overdue_by_department.sql"]) == data["headline"]["overdue"]
    assert [r["person_id"] for r in results["expiring_in_30_days.sql"]] == [
        r["person_id"] for r in data["expiring"]["rows"]]
    assert {r["manager_person_id"] for r in results["completion_rate_by_manager.sql"]} == {"P0000001", "P0000005"}
    totals = [r for r in results["compliance_trend_by_month.sql"] if r["requirement_id"] == "*"]
    assert [(r["month_end_on"], r["assigned"]) for r in totals] == [(date(2026, 1, 31), data["headline"]["assignments"])]
