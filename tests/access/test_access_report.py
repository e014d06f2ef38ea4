"""The access-timeliness page (hrlms.access.report), its headline in the run report, and the access analyses.

No pipeline run: marts.access_events is a plain table with the view's contract columns holding hand-made
events of three runs, and marts.access_latency_by_run is built from it with the model's own SQL
(dbt_project/models/marts/access/access_latency_by_run.sql, refs pointed at the table), so the figures
asserted below are computed by hand from the events.

  r1  2026-01-05  initial load only (3 hires left out) + 1 audience change: no hires, no leavers
  r2  2026-01-06  hires at -10, -5, -2 h (on time), +3 h (pipeline), +30 h (HR late);
                  leavers at +0.5 h (within the 2 h bound), +5 h (escrow), +48 h (HR late)
  r3  2026-01-07  22 hires on time at -0.5 … -11 h, one at +7 h (person id <script>…), an initial-load
                  hire at +500 h, an audience change at +100 h; no leavers
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from hrlms.transform.dbt import PROJECT_DIR
from hrlms.warehouse import db

XSS = "<script>alert(1)</script>"
BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
R1, R2, R3 = "r1", "r2", "manual__2026-01-07T00:00:00+00:00"
RUN_TS = {R1: datetime(2026, 1, 5, tzinfo=timezone.utc), R2: datetime(2026, 1, 6, tzinfo=timezone.utc),
          R3: datetime(2026, 1, 7, tzinfo=timezone.utc)}
D3 = date(2026, 1, 7)

EVENTS_DDL = """
create schema if not exists marts;
create table marts.access_events (
    event_id text, event_type text, person_id text, account_person_id text, time_zone text,
    target_at timestamptz, target_basis text, effective_at timestamptz, latency_hours numeric, on_time boolean,
    hr_known_at timestamptz, cause text, effective_basis text, plan_id bigint, op_id bigint, run_key text,
    run_logical_ts timestamptz)"""


def _event(op_id: int, run: str, event_type: str, person: str, hours: float, cause: str, on_time: bool | None,
           zone: str | None = BERLIN, basis: str | None = None, hr_late: bool = False) -> dict:
    day = RUN_TS[run].date() + timedelta(days=1)
    target = (datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(zone)) if zone else RUN_TS[run])
    basis = basis or {"access_granted": "first_day_start", "access_removed": "last_day_end"}.get(
        event_type, "run_that_saw_it")
    return {"event_id": f"op:{op_id}", "event_type": event_type, "person_id": person, "account_person_id": person,
            "time_zone": zone, "target_at": target, "target_basis": basis,
            "effective_at": target + timedelta(hours=hours), "latency_hours": hours, "on_time": on_time,
            "hr_known_at": target + timedelta(hours=1) if hr_late else RUN_TS[run] - timedelta(days=3),
            "cause": cause, "effective_basis": "logical_moment_plus_elapsed", "plan_id": op_id // 1000,
            "op_id": op_id, "run_key": run, "run_logical_ts": RUN_TS[run]}


def _events() -> list[dict]:
    ev = [_event(1000 + i, R1, "access_granted", f"P10{i}", 900.0 + i, "initial_load", False) for i in range(3)]
    ev.append(_event(1100, R1, "audience_joined", "P100", 0.25, "pipeline", None, zone=None))
    ev += [
        _event(2001, R2, "access_granted", "P201", -10, "on_time", True),
        _event(2002, R2, "access_granted", "P202", -5, "on_time", True),
        _event(2003, R2, "access_granted", "P203", -2, "on_time", True),
        _event(2004, R2, "access_granted", "P204", 3, "pipeline", False),
        _event(2005, R2, "access_granted", "P205", 30, "hr_late", False, hr_late=True),
        _event(2011, R2, "access_removed", "P211", 0.5, "on_time", True),
        _event(2012, R2, "access_removed", "P212", 5, "escrow", False),
        _event(2013, R2, "access_removed", "P213", 48, "hr_late", False, hr_late=True),
        _event(2021, R2, "audience_joined", "P201", 0.5, "pipeline", None, zone=None),
        _event(2022, R2, "audience_left", "P211", 1.5, "pipeline", None, zone=None),
    ]
    ev += [_event(3000 + i, R3, "access_granted", f"P3{i:02d}", -(i + 1) * 0.5, "on_time", True, zone=NEW_YORK)
           for i in range(22)]
    ev += [
        _event(3100, R3, "access_granted", XSS, 7, "pipeline", False),
        _event(3101, R3, "access_granted", "P399", 500, "initial_load", False),
        _event(3102, R3, "audience_joined", "P300", 100, "pipeline", None, zone=None),
    ]
    return ev


def _model_sql(path: Path) -> str:
    """A dbt model or analysis as plain SQL: config() dropped, ref('x') -> marts.x."""
    text = re.sub(r"\{\{\s*config\(.*?\)\s*\}\}", "", path.read_text(), flags=re.S)
    text = re.sub(r"\{\{\s*ref\('(\w+)'\)\s*\}\}", r"marts.\1", text)
    assert "{{" not in text and "{%" not in text, f"{path.name}: jinja the test does not render"
    return text


def _load(conn: psycopg.Connection, events: list[dict]) -> None:
    conn.execute(EVENTS_DDL)
    cols = list(events[0])
    with conn.cursor() as cur:
        cur.executemany(f"insert into marts.access_events ({', '.join(cols)}) values "
                        f"({', '.join('%(' + c + ')s' for c in cols)})", events)
    model = PROJECT_DIR / "models" / "marts" / "access" / "access_latency_by_run.sql"
    conn.execute(f"create table marts.access_latency_by_run as {_model_sql(model)}")


@pytest.fixture
def access_db(fresh_db: str) -> Iterator[psycopg.Connection]:
    with db.connect(fresh_db) as conn:
        _load(conn, _events())
        yield conn


def _figure(html_text: str, key: str) -> str:
    m = re.search(rf"<div class='figure' id='fig-{key}'><div class='value'>([^<]*)</div>", html_text)
    assert m, f"no headline figure {key}"
    return m.group(1)


def _write(conn: psycopg.Connection, reports: Path, run_key: str | None = None) -> tuple[Path, str, dict]:
    from hrlms.access.report import write_access_report

    path = write_access_report(conn, reports, D3, run_key)
    return path, path.read_text(encoding="utf-8"), json.loads(path.with_suffix(".json").read_text())


def test_latest_run_headline_trend_and_worst_cases(access_db: psycopg.Connection, tmp_path: Path) -> None:
    path, page, data = _write(access_db, tmp_path / "reports")
    assert path == tmp_path / "reports" / "access" / f"access_{D3}.html"
    assert path.with_suffix(".json").is_file() and page.startswith("<!doctype html>")
    assert not list(path.parent.glob(".*tmp")), "temporary files left behind"
    assert data["unavailable"] == [] and data["run_key"] == R3 and data["logical_date"] == D3.isoformat()

    h = data["headline"]
    # 22 of the 23 counted hires before day one; the initial-load hire (+500 h) is not counted
    assert (h["hires"], h["hires_hr_late"], h["hires_counted"], h["hires_before_day_one"]) == (23, 0, 23, 22)
    assert h["hires_on_time_share"] == round(22 / 23, 4) == 0.9565
    # percentile_cont over -11 … -0.5 and +7: p95 at position 20.9 = -1.0 + 0.9 * 0.5
    assert (h["hire_hours_p50"], h["hire_hours_p95"], h["hire_hours_max"]) == (-5.5, -0.55, 7.0)
    assert (h["leavers"], h["leavers_on_time_share"], h["leaver_hours_p95"]) == (0, None, None)
    assert (h["audience_changes"], h["audience_hours_max"]) == (1, 100.0)
    assert h["removal_bound_hours"] == 2
    assert h["effective_basis"] == ["logical_moment_plus_elapsed"]
    assert _figure(page, "hires-on-time") == "22 of 23"
    assert _figure(page, "hire-p95") == "−0.6 h"
    assert _figure(page, "leavers-within-bound") == "0 of 0"
    assert _figure(page, "leaver-p95") == "—"
    assert "effective = its logical moment + the time the run took" in page

    # the trend: all three runs, oldest first; r1 had no hires (share null: '—', no bar)
    assert [r["run_key"] for r in data["trend"]] == [R1, R2, R3]
    assert [r["hires_on_time_share"] for r in data["trend"]] == [None, 0.75, 0.9565]
    bars = re.findall(r'<rect class="bar" data-run="([^"]*)"', page)
    assert bars == [R2, R3]
    assert re.search(r'<text class="none" data-run="r1"[^>]*>—', page)
    trend_table = re.search(r"<table id='trend'>.*?</table>", page, re.S).group(0)
    first_run = re.search(r"<tr><td>r1</td>.*?</tr>", trend_table).group(0)
    assert "<td>—</td>" in first_run
    assert len(re.findall(r'<circle class="pt"', page)) == 2 + 1   # hire p95: r2, r3; leaver p95: r2 only
    assert 'class="bound"' in page

    # worst cases: access changes only, initial load left out, largest latency first, event id breaking ties
    wc = data["worst_cases"]
    counted = [e for e in _events() if e["event_type"] in ("access_granted", "access_removed")
               and e["cause"] != "initial_load"]
    expected = sorted(counted, key=lambda e: (-e["latency_hours"], e["event_id"]))[:20]
    assert [r["event_id"] for r in wc["rows"]] == [e["event_id"] for e in expected]
    assert [r["event_id"] for r in wc["rows"][:6]] == ["op:2013", "op:2005", "op:3100", "op:2012", "op:2004",
                                                       "op:2011"]
    assert [r["event_id"] for r in wc["rows"] if r["latency_hours"] == -2.0] == ["op:2003", "op:3003"]
    assert (wc["events"], wc["late"], len(wc["rows"])) == (len(counted), 5, 20) == (31, 5, 20)
    assert {r["cause"] for r in wc["rows"][:2]} == {"hr_late"}
    xss_row = wc["rows"][2]
    assert xss_row["person_id"] == XSS and xss_row["time_zone"] == BERLIN
    assert xss_row["target_at"] == "2026-01-07T23:00:00+00:00" and xss_row["target_local"] == "2026-01-08 00:00"
    assert xss_row["effective_at"] == "2026-01-08T06:00:00+00:00"
    assert page.count("<tr><td>") >= 20


def test_a_past_run_hr_late_counted_apart(access_db: psycopg.Connection, tmp_path: Path) -> None:
    from hrlms.access.report import collect, headline

    data = collect(access_db, R2)
    h = data["headline"]
    assert h == headline(access_db, R2)
    # 5 hires: 3 before day one, 1 late by us, 1 HR late (counted apart: not in the share nor the hours)
    assert (h["hires"], h["hires_hr_late"], h["hires_counted"], h["hires_before_day_one"]) == (5, 1, 4, 3)
    assert h["hires_on_time_share"] == 0.75
    # percentile_cont over -10, -5, -2, +3: p50 = -3.5, p95 at 2.85 = -2 + 0.85 * 5
    assert (h["hire_hours_p50"], h["hire_hours_p95"], h["hire_hours_max"]) == (-3.5, 2.25, 3.0)
    assert (h["leavers"], h["leavers_hr_late"], h["leavers_counted"], h["leavers_within_bound"]) == (3, 1, 2, 1)
    assert h["leavers_on_time_share"] == 0.5
    assert (h["leaver_hours_p50"], h["leaver_hours_p95"], h["leaver_hours_max"]) == (2.75, 4.78, 5.0)
    assert (h["audience_changes"], h["audience_hours_p50"], h["audience_hours_max"]) == (2, 1.0, 1.5)
    # the trend ends at the run of the page; the worst cases come from those runs only
    assert [r["run_key"] for r in data["trend"]] == [R1, R2]
    assert [r["event_id"] for r in data["worst_cases"]["rows"]] == [
        "op:2013", "op:2005", "op:2012", "op:2004", "op:2011", "op:2003", "op:2002", "op:2001"]
    # the latest runs only
    assert [r["run_key"] for r in collect(access_db, None, runs=2)["trend"]] == [R2, R3]

    path, page, _ = _write(access_db, tmp_path / "reports", R2)
    assert _figure(page, "hires-on-time") == "3 of 4"
    assert _figure(page, "hires-hr-late") == "1"
    assert _figure(page, "hire-p95") == "+2.2 h"   # 2.25, rounded half to even
    assert _figure(page, "leavers-within-bound") == "1 of 2"
    assert _figure(page, "leaver-p95") == "+4.8 h"


def test_hr_values_are_escaped(access_db: psycopg.Connection, tmp_path: Path) -> None:
    path, page, data = _write(access_db, tmp_path / "reports")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page      # shown, inert
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the JSON keeps the value as it is (data, not markup)
    assert any(r["person_id"] == XSS for r in data["worst_cases"]["rows"])
    assert XSS in path.with_suffix(".json").read_text()


def test_rewrite_is_byte_identical(access_db: psycopg.Connection, tmp_path: Path) -> None:
    path, _, _ = _write(access_db, tmp_path / "reports")
    html_before, json_before = path.read_bytes(), path.with_suffix(".json").read_bytes()
    # another session time zone must not change a byte
    access_db.execute("set timezone = 'Asia/Kolkata'")
    again, _, _ = _write(access_db, tmp_path / "reports")
    assert again == path
    assert path.read_bytes() == html_before
    assert path.with_suffix(".json").read_bytes() == json_before


def test_empty_warehouse_gives_an_empty_state_page(fresh_db: str, tmp_path: Path) -> None:
    from hrlms.access.report import collect, headline

    with db.connect(fresh_db) as conn:
        path, page, data = _write(conn, tmp_path / "reports")
        assert conn.execute("select 1").fetchone() == (1,)     # left usable, outside a transaction
        assert headline(conn) == {} and headline(conn, "r1") == {}
    assert data["unavailable"] == ["marts.access_events", "marts.access_latency_by_run"]
    assert data["headline"] == {} and data["trend"] == [] and data["worst_cases"]["rows"] == []
    assert "Not available in this warehouse yet" in page and "No access changes measured yet" in page
    assert "No runs with access changes yet." in page and "<svg" not in page

    # the views exist but hold nothing (no run has written accounts yet)
    with db.connect(fresh_db) as conn:
        _load(conn, [_event(1, R1, "access_granted", "P1", 1, "initial_load", False)])
        assert conn.execute("select count(*) from marts.access_latency_by_run").fetchone() == (0,)
        path, page, data = _write(conn, tmp_path / "reports")
        assert collect(conn, "no-such-run")["headline"] == {}
        _, missing_run_page, _ = _write(conn, tmp_path / "other", "no-such-run")
    assert data["unavailable"] == [] and data["headline"] == {}
    assert "No access changes measured yet" in page and "Not available" not in page
    assert "No access changes measured for run no-such-run" in missing_run_page


def test_run_report_has_the_access_headline(fresh_db: str, tmp_path: Path) -> None:
    from hrlms.report import collect, render_html

    with db.connect(fresh_db) as conn:
        db.bootstrap(conn)
        data = collect(conn, R2, date(2026, 1, 6), None)
        assert data["access"] == {}
        assert "No access changes measured for this run" in render_html(data)
        _load(conn, _events())
        data = collect(conn, R2, date(2026, 1, 6), None)
        none = collect(conn, "not-a-run", date(2026, 1, 6), None)
    assert none["access"] == {}
    a = data["access"]
    assert (a["run_key"], a["hires_before_day_one"], a["hires_counted"], a["hires_hr_late"]) == (R2, 3, 4, 1)
    assert (a["hires_on_time_share"], a["hire_hours_p95"], a["leaver_hours_max"]) == (0.75, 2.25, 5.0)
    json.dumps(data, default=str)
    page = render_html(data)
    section = page[page.index("<h2>Access timeliness</h2>"):page.index("<h2>Enrolment export")]
    assert "<td>3 of 4 (75.0%)</td>" in section and "<td>1 of 2 (50.0%)</td>" in section
    assert "<td>−3.5 h / +2.2 h / +3.0 h</td>" in section


def test_analyses_on_the_events(access_db: psycopg.Connection) -> None:
    def run(name: str) -> list[dict]:
        cur = access_db.execute(_model_sql(PROJECT_DIR / "analyses" / name))
        return [dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()]

    for name in ("access_latency_trend.sql", "access_worst_cases.sql", "hires_without_access_on_day_one.sql"):
        head = (PROJECT_DIR / "analyses" / name).read_text().splitlines()[:3]
        assert head[0].startswith("-- Question:") and any(x.startswith("-- For:") for x in head[1:]), name

    trend = run("access_latency_trend.sql")
    assert [r["run_key"] for r in trend] == [R1, R2, R3]
    assert [(r["hires"], r["hires_hr_late"], r["hires_late_ours"]) for r in trend] == [(0, 0, 0), (5, 1, 1), (23, 0, 1)]

    worst = run("access_worst_cases.sql")
    firsts = {r["event_type"]: r for r in worst if r["rank_in_type"] == 1}
    assert firsts["access_granted"]["person_id"] == "P205" and firsts["access_granted"]["cause"] == "hr_late"
    assert firsts["access_removed"]["person_id"] == "P213"
    assert float(firsts["access_removed"]["hr_known_hours_after_target"]) == 1.0
    assert sum(r["event_type"] == "access_granted" for r in worst) == 20
    assert sum(r["event_type"] == "access_removed" for r in worst) == 3
    assert "P399" not in {r["person_id"] for r in worst}     # initial load

    zones = run("hires_without_access_on_day_one.sql")
    assert [z["time_zone"] for z in zones] == ["*", BERLIN, NEW_YORK]
    total = zones[0]
    assert (total["hires"], total["without_access_on_day_one"], total["without_access_hr_late"],
            total["without_access_ours"], total["ours_pipeline"]) == (28, 3, 1, 2, 2)
    assert float(total["on_time_share"]) == round(25 / 27, 4)
    assert float(zones[1]["hours_late_ours_max"]) == 7.0 and zones[2]["without_access_on_day_one"] == 0
