"""The access-timeliness page for HR / IT: were hires' LMS accounts active before day one, were leavers'
accounts deactivated in time, how long audience changes took — JSON + HTML.

Reads ``marts.access_latency_by_run`` (the KPIs of each run) and ``marts.access_events`` (one row per
access change) and writes ``<reports_dir>/access/access_<YYYY-MM-DD>.html`` with a ``.json`` holding the
same figures: (a) the headline of one run (the given run, or the latest), (b) the trend of the last runs
up to that run as inline SVG charts, (c) the worst cases, (d) the definitions.

Like the compliance report (hrlms.learning.report): every value from HR or the LMS is HTML-escaped (shown
inert); no connection details or secrets are ever read here. No JavaScript, no external assets, and a
Content-Security-Policy forbids scripts anyway. The same data always gives byte-identical files (no clock,
total orderings everywhere, times shown in UTC or the worker's own zone), and both files are replaced
atomically. Missing or empty marts (a warehouse before the access models existed, a run without access
changes) give an empty-state page, never an exception.

Definitions (the same as the marts, dbt_project/models/marts/access/_access__models.yml):
  target          when the change was due: 00:00 local on the first day of work (a hire), 00:00 local after
                  the last day of work (a leaver), the run's logical moment (an audience change)
  effective       when the LMS write took effect: its own time for a live run; for a run of a past logical
                  moment (a backfill, the demo, the tests) the logical moment plus the time the run took
  latency         effective - target in hours: negative = early, positive = late
  HR late         HR's record carrying the date arrived at or after the target: counted apart, not in the
                  shares and hours (nothing we could have done in time)
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg

from hrlms.reporting import escape as _e
from hrlms.reporting import query_rows
from hrlms.reporting import relation_exists as _exists
from hrlms.reporting import section as _section
from hrlms.reporting import write_atomic as _write_atomic

TREND_RUNS = 30
WORST_ROWS = 20
DEFAULT_REMOVAL_BOUND_HOURS = 2

RUNS_T = "marts.access_latency_by_run"
EVENTS_T = "marts.access_events"

#: the columns of marts.access_latency_by_run the page reads (the view's contract)
RUN_COLUMNS = (
    "run_key", "run_logical_ts",
    "hires", "hires_hr_late", "hires_before_day_one", "hires_on_time_share",
    "hire_hours_p50", "hire_hours_p95", "hire_hours_max",
    "leavers", "leavers_hr_late", "leavers_within_bound", "leavers_on_time_share",
    "leaver_hours_p50", "leaver_hours_p95", "leaver_hours_max",
    "audience_changes", "audience_hours_p50", "audience_hours_max",
)
ACCESS_EVENT_TYPES = ("access_granted", "access_removed")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- data


def _utc(v: datetime) -> datetime:
    return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _plain(v: Any) -> Any:
    """JSON-safe and stable: Decimal/float -> float (rounded), timestamps -> ISO text in UTC, dates -> ISO."""
    if isinstance(v, Decimal | float):
        return round(float(v), 4)
    if isinstance(v, datetime):
        return _utc(v).isoformat(timespec="seconds")
    if isinstance(v, date):
        return v.isoformat()
    return v


def _rows(conn: psycopg.Connection, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return query_rows(conn, sql, params, _plain)


def removal_bound_hours() -> float | int:
    """dbt_project.yml's access_removal_bound_hours (what access_events judges a deactivation by)."""
    try:
        from hrlms.transform.dbt import project_vars

        bound = project_vars().get("access_removal_bound_hours", DEFAULT_REMOVAL_BOUND_HOURS)
        return bound if isinstance(bound, int | float) and not isinstance(bound, bool) else DEFAULT_REMOVAL_BOUND_HOURS
    except Exception:   # a figure on a page: never fail the report over it
        return DEFAULT_REMOVAL_BOUND_HOURS


def _local(ts: str | None, zone: str | None) -> str | None:
    """An ISO UTC instant shown in the worker's zone ('YYYY-MM-DD HH:MM'); None for an unknown zone."""
    if not ts or not zone:
        return None
    try:
        return datetime.fromisoformat(ts).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    except (ValueError, KeyError, OSError):    # ZoneInfoNotFoundError is a KeyError
        return None


def _share(n: int | None, d: int | None) -> float | None:
    return round(n / d, 4) if n is not None and d else None


def _headline(conn: psycopg.Connection, run_key: str | None, unavailable: list[str]) -> dict[str, Any]:
    if not _exists(conn, RUNS_T):
        unavailable.append(RUNS_T)
        return {}
    cols = ", ".join(RUN_COLUMNS)

    def read() -> dict[str, Any]:
        if run_key is None:
            rows = _rows(conn, f"select {cols} from {RUNS_T} "
                               "where (%(keys)s::text[] is null or run_key = any(%(keys)s)) "
                               "order by run_logical_ts desc nulls last, run_key desc limit 1",
                         {"keys": recent_run_keys(conn, TREND_RUNS, None)})
        else:
            rows = _rows(conn, f"select {cols} from {RUNS_T} where run_key = %(rk)s", {"rk": run_key})
        return rows[0] if rows else {}

    head = _section(conn, RUNS_T, unavailable, read, {})
    if not head:
        return {}
    for k in ("hires", "hires_hr_late", "hires_before_day_one", "leavers", "leavers_hr_late",
              "leavers_within_bound", "audience_changes"):
        head[k] = head[k] or 0
    head["hires_counted"] = head["hires"] - head["hires_hr_late"]
    head["leavers_counted"] = head["leavers"] - head["leavers_hr_late"]
    head["removal_bound_hours"] = removal_bound_hours()
    head["effective_basis"] = []
    if _exists(conn, EVENTS_T):
        head["effective_basis"] = _section(conn, EVENTS_T, unavailable, lambda: [
            r["effective_basis"] for r in _rows(conn, f"""
                select distinct effective_basis from {EVENTS_T}
                where run_key = %(rk)s and effective_basis is not null order by effective_basis""",
                {"rk": head["run_key"]})], [])
    return head


def recent_run_keys(conn: psycopg.Connection, n: int, until_run_key: str | None) -> list[str] | None:
    """The last `n` runs (by logical moment) whose plans wrote something to the LMS, ending at
    `until_run_key` when given. The views are then read for these runs only: the filter reaches down to
    the runs' ops, where aggregating the views for every run would read the whole delivery log (at a
    million workers, every op since the initial load) for each page. None (no filter) without the
    delivery log (a warehouse holding only the marts)."""
    if not _exists(conn, "sync.plans") or not _exists(conn, "sync.ops"):
        return None
    return [r[0] for r in conn.execute(
        """with anchor as (select max(logical_ts) as ts from sync.plans where run_key = %(rk)s),
                runs as (
                    select p.run_key, max(p.logical_ts) as ts from sync.plans p
                    where p.run_key is not null and p.logical_ts is not null
                      and exists (select 1 from sync.ops o where o.plan_id = p.plan_id and o.status = 'applied')
                    group by p.run_key)
           select runs.run_key from runs, anchor
           where %(rk)s::text is null or runs.ts <= anchor.ts
           order by runs.ts desc, runs.run_key desc limit %(n)s""",
        {"rk": until_run_key, "n": max(0, int(n))}).fetchall()]


def headline(conn: psycopg.Connection, run_key: str | None = None) -> dict[str, Any]:
    """The headline figures of one run (``run_key``; None: the latest run with access changes) from
    marts.access_latency_by_run, plus hires_counted / leavers_counted (HR late left out), the removal bound
    and the run's effective_basis. ``{}`` when the view is missing or has no row for the run (a run whose
    plan wrote no accounts or memberships)."""
    return _headline(conn, run_key, [])


def collect(conn: psycopg.Connection, run_key: str | None, runs: int = TREND_RUNS) -> dict[str, Any]:
    """All figures of the page (also the JSON file's content) for ``run_key`` (None: the latest run).

    The trend is the last ``runs`` rows of marts.access_latency_by_run ordered by (run_logical_ts, run_key),
    ending at the headline's run (a page about a past run does not change when later runs come); the worst
    cases are taken from those runs."""
    unavailable: list[str] = []
    head = _headline(conn, run_key, unavailable)
    has_runs = RUNS_T not in unavailable
    has_events = _exists(conn, EVENTS_T)
    if not has_events:
        unavailable.append(EVENTS_T)

    def trend() -> list[dict[str, Any]]:
        # ending at the headline's run (none: the latest runs); compared with the view's own timestamp
        keys = recent_run_keys(conn, runs, head.get("run_key"))
        rows = _rows(conn, f"""
            with anchor as (
                select run_logical_ts as ts, run_key as rk from {RUNS_T} where run_key = %(rk)s
            )
            select {", ".join("r." + c for c in RUN_COLUMNS)}
            from {RUNS_T} as r
            left join anchor on true
            where (%(keys)s::text[] is null or r.run_key = any(%(keys)s))
                and (anchor.ts is null or r.run_logical_ts < anchor.ts
                     or (r.run_logical_ts = anchor.ts and r.run_key <= anchor.rk))
            order by r.run_logical_ts desc nulls last, r.run_key desc
            limit %(n)s""", {"rk": head.get("run_key"), "keys": keys, "n": max(0, int(runs))})
        return list(reversed(rows))

    runs_rows = _section(conn, RUNS_T, unavailable, trend, []) if has_runs else []

    def worst() -> dict[str, Any]:
        rows = _rows(conn, f"""
            select event_id, event_type, person_id, time_zone, target_at, target_basis, effective_at,
                latency_hours, on_time, hr_known_at, cause, effective_basis, run_key,
                count(*) over () as events,
                count(*) filter (where on_time is false) over () as late
            from {EVENTS_T}
            where event_type in ('access_granted', 'access_removed') and cause <> 'initial_load'
                and latency_hours is not null and run_key = any(%(keys)s)
            order by latency_hours desc, event_id
            limit %(n)s""", {"keys": [r["run_key"] for r in runs_rows], "n": WORST_ROWS})
        events = rows[0]["events"] if rows else 0
        late = rows[0]["late"] if rows else 0
        for r in rows:
            del r["events"], r["late"]
            r["target_local"] = _local(r["target_at"], r["time_zone"])
            r["effective_local"] = _local(r["effective_at"], r["time_zone"])
        return {"events": events, "late": late, "rows": rows}

    empty_worst: dict[str, Any] = {"events": 0, "late": 0, "rows": []}
    worst_cases = (_section(conn, EVENTS_T, unavailable, worst, empty_worst)
                   if has_events and runs_rows else empty_worst)

    return {
        "report": "access",
        "run_key": head.get("run_key", run_key),
        "requested_run_key": run_key,
        "run_logical_ts": head.get("run_logical_ts"),
        "removal_bound_hours": removal_bound_hours(),
        "trend_runs": max(0, int(runs)),
        "headline": head,
        "trend": runs_rows,
        "worst_cases": worst_cases,
        "unavailable": sorted(set(unavailable)),
    }


# --------------------------------------------------------------------------------------------- HTML

NONE = "—"


def _pct(v: float | None) -> str:
    return NONE if v is None else f"{v * 100:.1f}%"


def _num(v: float | int) -> str:
    return f"{v:g}"


def hours(v: float | None) -> str:
    """Signed hours: '−2.1 h' (early), '+0.9 h' (late), '0.0 h'; '—' for none."""
    if v is None:
        return NONE
    r = round(float(v), 1)
    sign = "−" if r < 0 else "+" if r > 0 else ""
    return f"{sign}{abs(r):.1f} h"


def _of(n: int | None, m: int | None) -> str:
    return f"{n or 0} of {m or 0}"


def _short(text: str, n: int) -> str:
    """Shorten before escaping (never cut an entity in half)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _table(rows: list[dict], cols: list[tuple[str, str]], empty: str, fmt: dict[str, Callable] | None = None,
           table_id: str = "") -> str:
    if not rows:
        return f"<p class='empty'><em>{_e(empty)}</em></p>"
    fmt = fmt or {}
    head = "".join(f"<th>{_e(label)}</th>" for _, label in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(fmt[c](r.get(c)) if c in fmt else r.get(c))}</td>" for c, _ in cols) + "</tr>"
        for r in rows)
    ident = f" id='{_e(table_id)}'" if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def _run_label(r: dict[str, Any]) -> str:
    ts = r.get("run_logical_ts")
    return f"{r.get('run_key')} ({ts[:16].replace('T', ' ')} UTC)" if ts else str(r.get("run_key"))


def _x_labels(trend: list[dict[str, Any]]) -> set[int]:
    """Which runs get a date under the x axis: first, last and about every sixth."""
    n = len(trend)
    every = max(1, (n + 5) // 6)
    marks = {i for i in range(n) if i % every == 0 and (n - 1 - i >= (every + 1) // 2 or i == 0)}
    return marks | ({n - 1} if n else set())


SVG_LEFT, SVG_TOP, SVG_PLOT_H, SVG_BOTTOM = 56, 16, 160, 64


def _svg_open(svg_id: str, title: str, n: int) -> tuple[list[str], float, int]:
    step = max(14.0, min(80.0, 600.0 / max(n, 1)))
    width = int(SVG_LEFT + step * max(n, 1) + 24)
    height = SVG_TOP + SVG_PLOT_H + SVG_BOTTOM
    out = [f'<svg id="{svg_id}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{svg_id}-title" font-size="11">',
           f'<title id="{svg_id}-title">{_e(title)}</title>',
           f'<rect class="track" x="{SVG_LEFT}" y="{SVG_TOP}" width="{step * max(n, 1):.1f}" '
           f'height="{SVG_PLOT_H}" fill="#f6f6f6"/>']
    return out, step, width


def _svg_x_axis(out: list[str], trend: list[dict[str, Any]], step: float) -> None:
    base = SVG_TOP + SVG_PLOT_H
    for i in sorted(_x_labels(trend)):
        x = SVG_LEFT + step * (i + 0.5)
        label = (trend[i].get("run_logical_ts") or str(trend[i].get("run_key") or ""))[:10]
        out.append(f'<text x="{x:.1f}" y="{base + 14}" text-anchor="end" fill="#666" '
                   f'transform="rotate(-45 {x:.1f} {base + 14})">{_e(_short(label, 16))}</text>')


def svg_share(trend: list[dict[str, Any]]) -> str:
    """Bars: share of hires (HR late left out) whose account was active before day one, per run
    (one ``rect.bar`` per run with a share; '—' for a run without hires)."""
    if not trend:
        return "<p class='empty'><em>No runs with access changes yet.</em></p>"
    out, step, width = _svg_open("chart-hires-share", "Share of hires with access before day one, per run", len(trend))
    for tick in (0, 25, 50, 75, 100):
        y = SVG_TOP + SVG_PLOT_H * (1 - tick / 100)
        out.append(f'<line x1="{SVG_LEFT}" y1="{y:.1f}" x2="{width - 24}" y2="{y:.1f}" stroke="#ccc"/>'
                   f'<text x="{SVG_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#666">{tick}%</text>')
    for i, r in enumerate(trend):
        share = r.get("hires_on_time_share")
        x = SVG_LEFT + step * i
        counted = (r.get("hires") or 0) - (r.get("hires_hr_late") or 0)
        tip = (f"{_run_label(r)}: {_pct(share)} — {_of(r.get('hires_before_day_one'), counted)} hires before day one"
               f", {r.get('hires_hr_late') or 0} HR late")
        if share is None:
            out.append(f'<text class="none" data-run="{_e(r.get("run_key"))}" x="{x + step / 2:.1f}" '
                       f'y="{SVG_TOP + SVG_PLOT_H - 4}" text-anchor="middle" fill="#999">{NONE}'
                       f'<title>{_e(tip)}</title></text>')
            continue
        h = SVG_PLOT_H * max(0.0, min(1.0, share))
        color = "#2e7d32" if share >= 0.99 else "#f9a825" if share >= 0.9 else "#c62828"
        out.append(f'<rect class="bar" data-run="{_e(r.get("run_key"))}" x="{x + step * 0.15:.1f}" '
                   f'y="{SVG_TOP + SVG_PLOT_H - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" fill="{color}">'
                   f'<title>{_e(tip)}</title></rect>')
    _svg_x_axis(out, trend, step)
    out.append("</svg>")
    return "".join(out)


def _nice_ticks(lo: float, hi: float, most: int = 6) -> tuple[list[float], int]:
    """Round tick values (a step of 1, 2 or 5 × 10^k) covering [lo, hi], and the decimals to show them with."""
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / (most - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw - 1e-12)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    decimals = max(0, min(3, -math.floor(math.log10(step) + 1e-9)))
    return [round(k * step, 6) for k in range(first, last + 1)], decimals


def svg_hours(svg_id: str, title: str, trend: list[dict[str, Any]], key: str,
              bound: float | None = None, bound_label: str = "") -> str:
    """A line of ``key`` (hours, negative = early) per run with a zero line (and the bound, dashed);
    one ``circle.pt`` per run with a value, a gap for a run without."""
    points = [(i, r.get(key)) for i, r in enumerate(trend)]
    values = [v for _, v in points if v is not None]
    if not values:
        return f"<p class='empty'><em>{_e(title)}: no figures yet.</em></p>"
    ticks, decimals = _nice_ticks(min([0.0, *values, *([bound] if bound is not None else [])]),
                                  max([0.0, *values, *([bound] if bound is not None else [])]))
    lo, hi = ticks[0], ticks[-1]
    out, step, width = _svg_open(svg_id, title, len(trend))

    def y_of(v: float) -> float:
        return SVG_TOP + SVG_PLOT_H * (hi - v) / (hi - lo)

    for v in ticks:
        label = "0 h" if abs(v) < 1e-9 else f"{'−' if v < 0 else '+'}{abs(v):.{decimals}f} h"
        out.append(f'<line x1="{SVG_LEFT}" y1="{y_of(v):.1f}" x2="{width - 24}" y2="{y_of(v):.1f}" stroke="#e0e0e0"/>'
                   f'<text x="{SVG_LEFT - 6}" y="{y_of(v) + 4:.1f}" text-anchor="end" fill="#666">{label}</text>')
    out.append(f'<line class="zero" x1="{SVG_LEFT}" y1="{y_of(0):.1f}" x2="{width - 24}" y2="{y_of(0):.1f}" '
               f'stroke="#333"/>')
    if bound is not None:
        out.append(f'<line class="bound" x1="{SVG_LEFT}" y1="{y_of(bound):.1f}" x2="{width - 24}" '
                   f'y2="{y_of(bound):.1f}" stroke="#c62828" stroke-dasharray="4 3"/>'
                   f'<text x="{width - 26}" y="{y_of(bound) - 3:.1f}" text-anchor="end" fill="#c62828">'
                   f'{_e(bound_label)}</text>')
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, v in points:
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{SVG_LEFT + step * (i + 0.5):.1f},{y_of(v):.1f}")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            out.append(f'<polyline class="line" points="{" ".join(seg)}" fill="none" stroke="#1976d2" '
                       f'stroke-width="2"/>')
    for i, v in points:
        if v is None:
            continue
        r = trend[i]
        out.append(f'<circle class="pt" data-run="{_e(r.get("run_key"))}" cx="{SVG_LEFT + step * (i + 0.5):.1f}" '
                   f'cy="{y_of(v):.1f}" r="3" fill="#1976d2"><title>{_e(_run_label(r))}: {_e(hours(v))}</title></circle>')
    _svg_x_axis(out, trend, step)
    out.append("</svg>")
    return "".join(out)


def _counted_note(share: float | None, total: int, what: str, hr_late: int) -> str:
    of = f"{_pct(share)}; " if share is not None else ""
    return f"{of}{total} {what} in all, {hr_late} HR late left out"


def _figure(key: str, label: str, value: str, note: str = "") -> str:
    return (f"<div class='figure' id='fig-{_e(key)}'><div class='value'>{_e(value)}</div>"
            f"<div class='label'>{_e(label)}</div><div class='note'>{_e(note)}</div></div>")


def headline_rows(h: dict[str, Any]) -> list[dict[str, str]]:
    """The headline as (figure, value) rows (the run report's small table); [] without figures."""
    if not h:
        return []
    bound = _num(h.get("removal_bound_hours", DEFAULT_REMOVAL_BOUND_HOURS))
    return [
        {"figure": "hires with access before day one",
         "value": f"{_of(h['hires_before_day_one'], h['hires_counted'])} ({_pct(h['hires_on_time_share'])})"},
        {"figure": "hires HR late (counted apart)", "value": str(h["hires_hr_late"])},
        {"figure": "hire hours early (−) / late (+): p50 / p95 / max",
         "value": " / ".join(hours(h[k]) for k in ("hire_hours_p50", "hire_hours_p95", "hire_hours_max"))},
        {"figure": f"leavers deactivated within {bound} h of their last day",
         "value": f"{_of(h['leavers_within_bound'], h['leavers_counted'])} ({_pct(h['leavers_on_time_share'])})"},
        {"figure": "leavers HR late (counted apart)", "value": str(h["leavers_hr_late"])},
        {"figure": "leaver hours of access after the last day: p50 / p95 / max",
         "value": " / ".join(hours(h[k]) for k in ("leaver_hours_p50", "leaver_hours_p95", "leaver_hours_max"))},
        {"figure": "audience changes: hours p50 / max",
         "value": f"{h['audience_changes']}: {hours(h['audience_hours_p50'])} / {hours(h['audience_hours_max'])}"},
    ]


def describe(h: dict[str, Any]) -> str:
    """One line of plain text with the headline (the demo prints it)."""
    if not h:
        return "no access changes measured yet"
    bound = _num(h.get("removal_bound_hours", DEFAULT_REMOVAL_BOUND_HOURS))
    hr_late = f"; {h['hires_hr_late']} HR late" if h["hires_hr_late"] else ""
    return (f"{_of(h['hires_before_day_one'], h['hires_counted'])} hires active before day one "
            f"(p95 {hours(h['hire_hours_p95'])}{hr_late}), "
            f"{_of(h['leavers_within_bound'], h['leavers_counted'])} leavers deactivated within {bound} h "
            f"(max {hours(h['leaver_hours_max'])}), {h['audience_changes']} audience changes "
            f"(max {hours(h['audience_hours_max'])})")


DEFINITIONS = (
    ("Target", "When the change was due: 00:00 local time (the worker's time zone) on the first day of work "
               "for a hire; 00:00 local after the last day of work for a leaver; the run's logical moment for "
               "an audience change."),
    ("Effective", "When the LMS write took effect: the write's own time for a live run. For a run of a past "
                  "logical moment (a backfill, the demo, the tests) effective = the logical moment + the time "
                  "the run took to reach the write."),
    ("Hours", "Effective − target: negative = early (a hire's account this many hours before day one), "
              "positive = late (a leaver's hours of access after the last day)."),
    ("On time", "A hire: active by the target. A leaver: deactivated within the removal bound ({bound} h) after "
                "the end of the last day. Shares = on time / (all − HR late); a run without hires or leavers "
                "has no share (—)."),
    ("HR late", "HR's record carrying the date arrived at or after the target: counted apart, left out of the "
                "shares and hours."),
    ("Initial load", "People who started or left before the first HR file the warehouse read: left out."),
    ("Cause", "Why a change was late: hr_late, quarantined_row (HR's row was held by a data-quality rule), "
              "held_plan (the breaker held the plan), escrow (the LMS refused the write for a while), pipeline "
              "(no recorded reason: the schedule or the run's duration)."),
)


def render_html(data: dict[str, Any]) -> str:
    h = data.get("headline") or {}
    bound = _num(data.get("removal_bound_hours", DEFAULT_REMOVAL_BOUND_HOURS))
    run_label = data.get("run_key") or NONE
    notices = []
    if data.get("unavailable"):
        notices.append("Not available in this warehouse yet (no build with the access models): "
                       + ", ".join(data["unavailable"]) + ".")
    if not h:
        if data.get("requested_run_key") is not None:
            notices.append(f"No access changes measured for run {data['requested_run_key']}: its plan wrote no "
                           "accounts or memberships (or the access views have not been built since).")
        else:
            notices.append("No access changes measured yet: no run has written accounts or memberships.")
    if "logical_moment_plus_elapsed" in (h.get("effective_basis") or []):
        notices.append("This run is of a past logical moment (a backfill, the demo or a test): effective = its "
                       "logical moment + the time the run took, not the wall clock.")
    banner = "".join(f"<p class='notice'>{_e(n)}</p>" for n in notices)
    if h:
        figures = "".join([
            _figure("hires-on-time", "Hires with access before day one",
                    _of(h["hires_before_day_one"], h["hires_counted"]),
                    _counted_note(h["hires_on_time_share"], h["hires"], "hires", h["hires_hr_late"])),
            _figure("hires-hr-late", "Hires HR late (counted apart)", str(h["hires_hr_late"]),
                    "HR's record arrived at or after day one began"),
            _figure("hire-p95", "Hires: p95 hours early (−) / late (+)", hours(h["hire_hours_p95"]),
                    f"p50 {hours(h['hire_hours_p50'])}, max {hours(h['hire_hours_max'])}"),
            _figure("leavers-within-bound", f"Leavers deactivated within {bound} h",
                    _of(h["leavers_within_bound"], h["leavers_counted"]),
                    _counted_note(h["leavers_on_time_share"], h["leavers"], "leavers", h["leavers_hr_late"])),
            _figure("leaver-p95", "Leavers: p95 hours of access after the last day", hours(h["leaver_hours_p95"]),
                    f"p50 {hours(h['leaver_hours_p50'])}, max {hours(h['leaver_hours_max'])}"),
            _figure("audience", "Audience changes", str(h["audience_changes"]),
                    f"hours p50 {hours(h['audience_hours_p50'])}, max {hours(h['audience_hours_max'])}"),
        ])
        head_html = (f"<h2>Run {_e(_run_label(h))}</h2><div class='figures'>{figures}</div>"
                     + _table(headline_rows(h), [("figure", "Figure"), ("value", "Value")], "", table_id="headline"))
    else:
        head_html = "<h2>Run</h2><p class='empty'><em>No headline figures.</em></p>"
    trend = data.get("trend") or []
    wc = data.get("worst_cases") or {"events": 0, "late": 0, "rows": []}
    hour_fmt = {k: hours for k in ("hire_hours_p50", "hire_hours_p95", "hire_hours_max", "leaver_hours_p50",
                                   "leaver_hours_p95", "leaver_hours_max", "audience_hours_p50",
                                   "audience_hours_max", "latency_hours")}
    fmt = hour_fmt | {"hires_on_time_share": _pct, "leavers_on_time_share": _pct}
    trend_cols = [("run_key", "Run"), ("run_logical_ts", "Logical moment (UTC)"), ("hires", "Hires"),
                  ("hires_hr_late", "HR late"), ("hires_before_day_one", "Before day one"),
                  ("hires_on_time_share", "On-time share"), ("hire_hours_p50", "p50"), ("hire_hours_p95", "p95"),
                  ("hire_hours_max", "max"), ("leavers", "Leavers"), ("leavers_hr_late", "HR late"),
                  ("leavers_within_bound", f"Within {bound} h"), ("leavers_on_time_share", "On-time share"),
                  ("leaver_hours_p95", "p95"), ("leaver_hours_max", "max"), ("audience_changes", "Audience changes"),
                  ("audience_hours_max", "max")]
    worst_cols = [("person_id", "Person id"), ("event_type", "Change"), ("time_zone", "Time zone"),
                  ("target_local", "Target (local)"), ("target_at", "Target (UTC)"),
                  ("effective_at", "Effective (UTC)"), ("latency_hours", "Hours"), ("cause", "Cause"),
                  ("run_key", "Run")]
    definitions = "".join(f"<dt>{_e(t)}</dt><dd>{_e(d.replace('{bound}', bound))}</dd>" for t, d in DEFINITIONS)
    title_date = data.get("logical_date") or (data.get("run_logical_ts") or "")[:10]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>hrlms access timeliness {_e(title_date)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.figures{{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}}.figure{{border:1px solid #ccc;padding:.6em 1em;min-width:11em}}
.figure .value{{font-size:2em;font-weight:bold}}.figure .note{{color:#666;font-size:.85em}}
.notice{{color:#b00;font-weight:bold}}.empty{{color:#666}}dt{{font-weight:bold;margin-top:.4em}}</style>
</head><body>
<h1>hrlms access timeliness — run {_e(run_label)}</h1>
<p>Were new hires' LMS accounts active before their first day began, and were leavers' accounts deactivated
within {_e(bound)} h after their last day ended (in each worker's own time zone)? From marts.access_latency_by_run and
marts.access_events. Hours: negative = early, positive = late; HR-late hires and leavers are counted apart.</p>
{banner}{head_html}
<h2>Trend: the last {len(trend)} runs with access changes (of up to {_e(data.get('trend_runs', TREND_RUNS))})</h2>
<h3>Share of hires with access before day one</h3>
{svg_share(trend)}
<h3>Hires: p95 hours early (−) / late (+)</h3>
{svg_hours("chart-hire-p95", "Hires: p95 hours from 00:00 local on day one to the account", trend, "hire_hours_p95")}
<h3>Leavers: p95 hours of access after the last day</h3>
{svg_hours("chart-leaver-p95", "Leavers: p95 hours of access after the last day ended", trend, "leaver_hours_p95",
           float(data.get("removal_bound_hours", DEFAULT_REMOVAL_BOUND_HOURS)), f"bound {bound} h")}
{_table(trend, trend_cols, "No runs with access changes yet.", fmt, table_id="trend")}
<h2>Worst cases ({len(wc['rows'])} worst of {wc['events']} hires and leavers in these runs, {wc['late']} not on time)</h2>
<p>Initial load left out; HR-late cases included, with their cause.</p>
{_table(wc['rows'], worst_cols, "No hires or leavers in these runs.", fmt, table_id="worst")}
<h2>Definitions</h2>
<dl>{definitions}</dl>
</body></html>
"""


# --------------------------------------------------------------------------------------------- files


def write_access_report(conn: psycopg.Connection, reports_dir: Path, logical_date: date,
                        run_key: str | None) -> Path:
    """Write ``access/access_<date>.json`` and ``.html`` under ``reports_dir``; returns the HTML path."""
    if conn.autocommit:
        # One consistent read of both views, also while a dbt run replaces them.
        with conn.transaction():
            conn.execute("set transaction isolation level repeatable read, read only")
            data = collect(conn, run_key)
    else:
        data = collect(conn, run_key)
    data["logical_date"] = logical_date.isoformat()
    out_dir = Path(reports_dir) / "access"
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"access_{logical_date.isoformat()}"
    _write_atomic(base.with_suffix(".json"), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    _write_atomic(base.with_suffix(".html"), render_html(data))
    return base.with_suffix(".html")


__all__ = ["collect", "describe", "headline", "headline_rows", "hours", "render_html", "write_access_report"]
