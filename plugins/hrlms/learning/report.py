"""The compliance report for HR / L&D: who has done their required learning — JSON + HTML.

Reads the learning marts (``marts.learning_compliance_status``, ``…_rollup``, ``…_monthly``) plus
``marts.workers`` (names) and ``marts.org_unit_tree`` (top-level units) and writes
``<reports_dir>/compliance/compliance_<YYYY-MM-DD>.html`` with a ``.json`` holding the same figures.

Like the run report (hrlms.report): every value from HR or the LMS is HTML-escaped (shown inert, also
``<script>`` or ``=cmd|`` payloads); no connection details or secrets are ever read here. The charts
are inline SVG (no JavaScript, no external assets) and a Content-Security-Policy forbids scripts
anyway. The same data always gives byte-identical files (no clock, total orderings everywhere), and
both files are replaced atomically. Missing or empty marts (a run before any rules existed) give an
empty-state report, never an exception.

Definitions (the same as the marts and dbt_project/analyses/):
  completion rate       completed / (assignments - exempt), as in learning_compliance_rollup
  expiring within 30 d  status completed and expires_on <= logical date + 30 (the completion stops
                        counting on or before that day)
  top-level org unit    a child of a root of the org tree (level 1), or a root without children
                        (e.g. the holding unit for unknown org codes)
"""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from hrlms.reporting import escape as _e
from hrlms.reporting import query_rows
from hrlms.reporting import relation_exists as _exists
from hrlms.reporting import section as _section
from hrlms.reporting import write_atomic as _write_atomic

EXPIRY_WINDOW_DAYS = 30
OVERDUE_DEPARTMENTS = 20
EXPIRING_ROWS = 50
MANAGERS_EACH_END = 10
TREND_MONTHS = 12

STATUSES = ("completed", "in_progress", "not_started", "overdue", "expired", "exempt")
STATUS_LABELS = {"completed": "Completed", "in_progress": "In progress", "not_started": "Not started",
                 "overdue": "Overdue", "expired": "Expired", "exempt": "Exempt"}
STATUS_COLORS = {"completed": "#2e7d32", "in_progress": "#1976d2", "not_started": "#9e9e9e",
                 "overdue": "#c62828", "expired": "#ef6c00", "exempt": "#7b1fa2"}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- data


def _plain(v: Any) -> Any:
    """JSON-safe and stable: Decimal -> float (rounded), dates -> ISO text."""
    if isinstance(v, Decimal):
        return round(float(v), 4)
    if isinstance(v, date):
        return v.isoformat()
    return v


def _rows(conn: psycopg.Connection, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return query_rows(conn, sql, params, _plain)


def _rate(completed: int, assigned: int, exempt: int) -> float | None:
    denom = assigned - exempt
    return round(completed / denom, 4) if denom > 0 else None


def collect(conn: psycopg.Connection, logical_date: date) -> dict[str, Any]:
    """All figures of the report (also the JSON file's content)."""
    p = {"d": logical_date, "window": EXPIRY_WINDOW_DAYS}
    unavailable: list[str] = []
    status_t = "marts.learning_compliance_status"
    has_status = _exists(conn, status_t)
    has_rollup = _exists(conn, "marts.learning_compliance_rollup")
    has_workers = _exists(conn, "marts.workers")
    has_tree = _exists(conn, "marts.org_unit_tree")
    has_monthly = _exists(conn, "marts.learning_compliance_monthly")
    for rel, ok in ((status_t, has_status), ("marts.learning_compliance_rollup", has_rollup),
                    ("marts.learning_compliance_monthly", has_monthly), ("marts.org_unit_tree", has_tree),
                    ("marts.workers", has_workers)):
        if not ok:
            unavailable.append(rel)

    status_filters = ",\n".join(f"count(*) filter (where status = '{s}') as {s}" for s in STATUSES)

    def headline() -> dict[str, Any]:
        row = _rows(conn, f"""
            select count(*) as assignments, count(distinct person_id) as people,
                {status_filters},
                count(*) filter (where status = 'completed' and expires_on <= %(d)s::date + %(window)s)
                    as expiring_30d,
                min(as_of_date) as as_of_date
            from {status_t}""", p)[0]
        row["completion_rate"] = _rate(row["completed"], row["assignments"], row["exempt"])
        return row

    empty_headline = {"assignments": 0, "people": 0, **{s: 0 for s in STATUSES}, "expiring_30d": 0,
                      "as_of_date": None, "completion_rate": None}
    head = _section(conn, "headline", unavailable, headline, empty_headline) if has_status else empty_headline

    def requirements() -> list[dict[str, Any]]:
        rows = _rows(conn, f"""
            select requirement_id, min(requirement_title) as requirement_title, count(*) as assignments,
                {status_filters}
            from {status_t}
            group by requirement_id
            order by requirement_id""")
        for r in rows:
            r["completion_rate"] = _rate(r["completed"], r["assignments"], r["exempt"])
        return rows

    def overdue_by_department() -> dict[str, Any]:
        rows = _rows(conn, f"""
            select org_unit_code, org_unit_name,
                count(*) filter (where status = 'overdue') as overdue,
                count(distinct person_id) filter (where status = 'overdue') as people_overdue,
                count(*) as assignments,
                min(due_on) filter (where status = 'overdue') as oldest_due_on,
                count(*) over () as units_with_overdue
            from {status_t}
            group by org_unit_code, org_unit_name
            having count(*) filter (where status = 'overdue') > 0
            order by overdue desc, org_unit_code nulls last, org_unit_name nulls last
            limit %(n)s""", {"n": OVERDUE_DEPARTMENTS})
        total = rows[0]["units_with_overdue"] if rows else 0
        for r in rows:
            del r["units_with_overdue"]
            r["overdue_share"] = round(r["overdue"] / r["assignments"], 4) if r["assignments"] else None
        return {"units_with_overdue": total, "rows": rows}

    def expiring() -> dict[str, Any]:
        names = ("coalesce(nullif(w.preferred_name, ''), w.first_name) as first_name, w.last_name"
                 if has_workers else "null::text as first_name, null::text as last_name")
        join = "left join marts.workers w on w.person_id = s.person_id" if has_workers else ""
        rows = _rows(conn, f"""
            select s.person_id, {names}, s.org_unit_name, s.requirement_id, s.requirement_title,
                s.completed_on, s.expires_on, s.expires_on - %(d)s::date as days_left,
                count(*) over () as total
            from {status_t} s
            {join}
            where s.status = 'completed' and s.expires_on <= %(d)s::date + %(window)s
            order by s.expires_on, s.person_id, s.requirement_id
            limit %(n)s""", p | {"n": EXPIRING_ROWS})
        total = rows[0]["total"] if rows else 0
        for r in rows:
            del r["total"]
            r["name"] = " ".join(x for x in (r.pop("first_name"), r.pop("last_name")) if x) or r["person_id"]
        return {"total": total, "rows": rows}

    def managers() -> dict[str, Any]:
        rows = _rows(conn, """
            select dimension_value as manager_person_id, dimension_label as manager_name,
                assigned as assignments, completed, overdue, exempt, completion_rate
            from marts.learning_compliance_rollup
            where dimension = 'manager' and requirement_id = '*' and completion_rate is not null
            order by completion_rate desc, assigned desc, dimension_value""")
        for r in rows:
            r["manager_name"] = r["manager_name"] or r["manager_person_id"]
        top = rows[:MANAGERS_EACH_END]
        rest = rows[len(top):]
        bottom = list(reversed(rest[-MANAGERS_EACH_END:])) if rest else []
        return {"managers": len(rows), "top": top, "bottom": bottom}

    def org_units() -> list[dict[str, Any]]:
        rows = _rows(conn, """
            with tree as (
                select org_unit_code, org_unit_name, parent_org_unit_code, level from marts.org_unit_tree
            ),
            top_level as (
                select * from tree where level = 1
                union all
                select * from tree
                where level = 0
                    and not exists (select 1 from tree c where c.parent_org_unit_code = tree.org_unit_code)
            )
            select top_level.org_unit_code,
                coalesce(r.dimension_label, top_level.org_unit_name) as org_unit_name,
                r.assigned as assignments, r.completed, r.overdue, r.exempt, r.completion_rate
            from top_level
            inner join marts.learning_compliance_rollup r
                on r.dimension = 'org_subtree' and r.requirement_id = '*'
                and r.dimension_value = top_level.org_unit_code
            order by org_unit_name, top_level.org_unit_code""")
        return rows

    def trend() -> list[dict[str, Any]]:
        rows = _rows(conn, f"""
            select month_end_on, count(*) as assignments, {status_filters}
            from marts.learning_compliance_monthly
            where month_end_on <= (date_trunc('month', %(d)s::date) + interval '1 month - 1 day')::date
            group by month_end_on
            order by month_end_on desc
            limit %(n)s""", p | {"n": TREND_MONTHS})
        for r in rows:
            r["completion_rate"] = _rate(r["completed"], r["assignments"], r["exempt"])
        return list(reversed(rows))

    def run(name: str, ok: bool, fn: Callable[[], T], empty: T) -> T:
        return _section(conn, name, unavailable, fn, empty) if ok else empty

    reqs = run("status per requirement", has_status, requirements, [])
    overdue = run("overdue by department", has_status, overdue_by_department, {"units_with_overdue": 0, "rows": []})
    exp = run("expiring", has_status, expiring, {"total": 0, "rows": []})
    mgr = run("managers", has_rollup, managers, {"managers": 0, "top": [], "bottom": []})
    units = run("org units", has_rollup and has_tree, org_units, [])
    months = run("trend", has_monthly, trend, [])

    as_of = head.get("as_of_date")
    return {
        "report": "compliance",
        "logical_date": logical_date.isoformat(),
        "as_of_date": as_of,
        "expiry_window_days": EXPIRY_WINDOW_DAYS,
        "expiring_until": (logical_date + timedelta(days=EXPIRY_WINDOW_DAYS)).isoformat(),
        "headline": {k: head[k] for k in ("assignments", "people", "completion_rate", *STATUSES, "expiring_30d")},
        "org_units": units,
        "requirements": reqs,
        "overdue_by_department": overdue,
        "expiring": exp,
        "managers": mgr,
        "trend": months,
        "unavailable": sorted(set(unavailable)),
    }


# --------------------------------------------------------------------------------------------- HTML


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _short(text: str, n: int) -> str:
    """Shorten before escaping (never cut an entity in half)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _table(rows: list[dict], cols: list[tuple[str, str]], empty: str, fmt: dict[str, Callable] | None = None) -> str:
    if not rows:
        return f"<p class='empty'><em>{_e(empty)}</em></p>"
    fmt = fmt or {}
    head = "".join(f"<th>{_e(label)}</th>" for _, label in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(fmt[c](r.get(c)) if c in fmt else r.get(c))}</td>" for c, _ in cols) + "</tr>"
        for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _rate_color(rate: float | None) -> str:
    if rate is None:
        return "#9e9e9e"
    return "#2e7d32" if rate >= 0.9 else "#f9a825" if rate >= 0.7 else "#c62828"


def svg_org_units(units: list[dict[str, Any]]) -> str:
    """Horizontal bars: completion rate per top-level org unit (one ``rect.bar`` per unit)."""
    if not units:
        return "<p class='empty'><em>No top-level org unit has assignments yet.</em></p>"
    label_w, bar_w, row_h, pad = 230, 360, 26, 24
    width, height = label_w + bar_w + 70, pad + row_h * len(units) + 8
    out = [f'<svg id="chart-org" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-org-title" font-size="12">',
           '<title id="chart-org-title">Completion rate by top-level org unit</title>']
    out.append(f'<rect class="track" x="{label_w}" y="{pad - 4}" width="{bar_w}" height="{height - pad - 4}" '
               f'fill="#f6f6f6"/>')
    for tick in (0, 25, 50, 75, 100):
        x = label_w + bar_w * tick / 100
        out.append(f'<line x1="{x:.1f}" y1="{pad - 4}" x2="{x:.1f}" y2="{height - 8}" stroke="#ccc"/>'
                   f'<text x="{x:.1f}" y="{pad - 8}" text-anchor="middle" fill="#666">{tick}%</text>')
    for i, u in enumerate(units):
        y = pad + i * row_h
        rate = u.get("completion_rate")
        w = 0.0 if rate is None else bar_w * max(0.0, min(1.0, rate))
        name = str(u.get("org_unit_name") or u.get("org_unit_code") or "")
        tip = (f"{name} ({u.get('org_unit_code')}): {_pct(rate)} — {u.get('completed')} of "
               f"{u.get('assignments')} assignments completed, {u.get('exempt')} exempt, {u.get('overdue')} overdue")
        out.append(
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{_e(_short(name, 32))}</text>'
            f'<rect class="bar" data-unit="{_e(u.get("org_unit_code"))}" x="{label_w}" y="{y + 4}" '
            f'width="{w:.1f}" height="{row_h - 8}" fill="{_rate_color(rate)}"><title>{_e(tip)}</title></rect>'
            f'<text x="{label_w + bar_w + 6}" y="{y + row_h / 2 + 4:.1f}">{_e(_pct(rate))}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_requirements(reqs: list[dict[str, Any]]) -> str:
    """100%-stacked horizontal bars: status counts per requirement (one ``rect.seg`` per status present)."""
    if not reqs:
        return ""   # the table below says so
    label_w, bar_w, row_h, legend_h = 230, 360, 26, 26
    width, height = label_w + bar_w + 70, legend_h + row_h * len(reqs) + 8
    out = [f'<svg id="chart-requirements" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-req-title" font-size="12">',
           '<title id="chart-req-title">Status of assignments per requirement</title>']
    x = 0
    for s in STATUSES:
        out.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{STATUS_COLORS[s]}"/>'
                   f'<text x="{x + 16}" y="14">{_e(STATUS_LABELS[s])}</text>')
        x += 16 + 8 * len(STATUS_LABELS[s]) + 14
    for i, r in enumerate(reqs):
        y = legend_h + i * row_h
        total = r.get("assignments") or 0
        title = str(r.get("requirement_title") or r.get("requirement_id") or "")
        out.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">'
                   f'{_e(_short(title, 32))}</text>')
        cum = 0
        for s in STATUSES:
            n = r.get(s) or 0
            if not n or not total:
                continue
            x0, x1 = bar_w * cum / total, bar_w * (cum + n) / total
            cum += n
            out.append(f'<rect class="seg" data-status="{s}" x="{label_w + x0:.1f}" y="{y + 4}" '
                       f'width="{x1 - x0:.1f}" height="{row_h - 8}" fill="{STATUS_COLORS[s]}">'
                       f'<title>{_e(title)}: {_e(STATUS_LABELS[s])} {n} of {total}</title></rect>')
        out.append(f'<text x="{label_w + bar_w + 6}" y="{y + row_h / 2 + 4:.1f}">n={total}</text>')
    out.append("</svg>")
    return "".join(out)


def _figure(key: str, label: str, value: str, note: str = "") -> str:
    return (f"<div class='figure' id='fig-{_e(key)}'><div class='value'>{_e(value)}</div>"
            f"<div class='label'>{_e(label)}</div><div class='note'>{_e(note)}</div></div>")


def render_html(data: dict[str, Any]) -> str:
    h = data["headline"]
    d = data["logical_date"]
    notices = []
    if data["unavailable"]:
        notices.append("Not available in this warehouse yet (no run with the learning models, or a run before "
                       "any assignment rules existed): " + ", ".join(data["unavailable"]) + ".")
    if not h["assignments"]:
        notices.append("No compliance data: there are no open learning assignments for this date.")
    if data["as_of_date"] and data["as_of_date"] != d:
        notices.append(f"The learning marts hold the state of {data['as_of_date']} (the latest transform), "
                       f"not of {d}.")
    banner = "".join(f"<p class='notice'>{_e(n)}</p>" for n in notices)
    figures = "".join([
        _figure("assignments", "Open assignments", f"{h['assignments']}", f"{h['people']} people"),
        _figure("completion-rate", "Completion rate", _pct(h["completion_rate"]),
                f"{h['completed']} completed of {h['assignments'] - h['exempt']} not exempt"),
        _figure("overdue", "Overdue", f"{h['overdue']}", "past the due date, not completed"),
        _figure("expiring", f"Expiring within {data['expiry_window_days']} days", f"{h['expiring_30d']}",
                f"completions that stop counting by {data['expiring_until']}"),
        _figure("exempt", "Exempt", f"{h['exempt']}", "an exemption in force"),
    ])
    rate_fmt = {"completion_rate": _pct, "overdue_share": _pct}
    od = data["overdue_by_department"]
    ex = data["expiring"]
    mg = data["managers"]
    status_cols = [(s, STATUS_LABELS[s]) for s in STATUSES]
    mgr_cols = [("manager_name", "Manager"), ("manager_person_id", "Person id"), ("assignments", "Assignments"),
                ("completed", "Completed"), ("overdue", "Overdue"), ("exempt", "Exempt"),
                ("completion_rate", "Completion rate")]
    if mg["bottom"]:
        managers = (f"<h3>Highest completion ({len(mg['top'])} of {mg['managers']})</h3>"
                    + _table(mg["top"], mgr_cols, "none", rate_fmt)
                    + f"<h3>Lowest completion ({len(mg['bottom'])} of {mg['managers']})</h3>"
                    + _table(mg["bottom"], mgr_cols, "none", rate_fmt))
    else:
        managers = _table(mg["top"], mgr_cols, "No manager has assignments in their team yet.", rate_fmt)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>hrlms compliance {_e(d)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.figures{{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}}.figure{{border:1px solid #ccc;padding:.6em 1em;min-width:11em}}
.figure .value{{font-size:2em;font-weight:bold}}.figure .note{{color:#666;font-size:.85em}}
.notice{{color:#b00;font-weight:bold}}.empty{{color:#666}}</style>
</head><body>
<h1>hrlms compliance — logical date {_e(d)}</h1>
<p>Required learning of everyone with an open assignment on {_e(d)} (each worker's local date), from the
learning marts{f" as of {_e(data['as_of_date'])}" if data['as_of_date'] else ""}. Completion rate = completed / (assignments − exempt).</p>
{banner}<div class="figures">{figures}</div>
<h2>Completion rate by top-level org unit</h2>
<p>Each unit with everything below it.</p>
{svg_org_units(data['org_units'])}
<h2>Status per requirement</h2>
{svg_requirements(data['requirements'])}
{_table(data['requirements'], [('requirement_id', 'Requirement'), ('requirement_title', 'Title'), ('assignments', 'Assignments'), *status_cols, ('completion_rate', 'Completion rate')], 'No assignments yet.', rate_fmt)}
<h2>Overdue by department ({len(od['rows'])} of {od['units_with_overdue']} units with overdue assignments, most first)</h2>
{_table(od['rows'], [('org_unit_code', 'Org unit'), ('org_unit_name', 'Name'), ('overdue', 'Overdue'), ('people_overdue', 'People overdue'), ('assignments', 'Assignments'), ('overdue_share', 'Overdue share'), ('oldest_due_on', 'Oldest due date')], 'Nothing is overdue.', rate_fmt)}
<h2>Expiring in the next {data['expiry_window_days']} days ({len(ex['rows'])} of {ex['total']}, soonest first)</h2>
{_table(ex['rows'], [('name', 'Name'), ('person_id', 'Person id'), ('org_unit_name', 'Org unit'), ('requirement_title', 'Requirement'), ('completed_on', 'Completed on'), ('expires_on', 'Expires on'), ('days_left', 'Days left')], 'No completion expires in this window.')}
<h2>Completion rate by manager (direct reports)</h2>
{managers}
<h2>Month-end trend</h2>
{_table(data['trend'], [('month_end_on', 'Month end'), ('assignments', 'Assignments'), *status_cols, ('completion_rate', 'Completion rate')], 'No month-end snapshots yet.', rate_fmt)}
</body></html>
"""


# --------------------------------------------------------------------------------------------- files


def write_compliance_report(conn: psycopg.Connection, reports_dir: Path, logical_date: date) -> Path:
    """Write ``compliance/compliance_<date>.json`` and ``.html`` under ``reports_dir``; returns the HTML path."""
    if conn.autocommit:
        # One consistent read of all marts, also while a dbt run replaces them.
        with conn.transaction():
            conn.execute("set transaction isolation level repeatable read, read only")
            data = collect(conn, logical_date)
    else:
        data = collect(conn, logical_date)
    out_dir = Path(reports_dir) / "compliance"
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"compliance_{logical_date.isoformat()}"
    _write_atomic(base.with_suffix(".json"), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    _write_atomic(base.with_suffix(".html"), render_html(data))
    return base.with_suffix(".html")


__all__ = ["collect", "render_html", "write_compliance_report"]
