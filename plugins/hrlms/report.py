"""The per-run report: what was loaded, quarantined (and why), planned and applied — JSON + HTML.

Values from HR are escaped in the HTML (shown inert); no secrets are ever read here.
"""
from __future__ import annotations

import html
import json
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from hrlms.access.report import headline as access_headline
from hrlms.access.report import headline_rows as access_rows
from hrlms.quality.gate import GX_ROOT
from hrlms.sync.breaker import describe_changes


def collect(conn: psycopg.Connection, run_key: str, logical_date: date, plan_id: int | None) -> dict[str, Any]:
    stages = [
        {"stage": s, "seconds": float(sec), "detail": d}
        for s, sec, d in conn.execute(
            "select stage, seconds, detail from audit.stage_runs where run_key = %s order by started_at",
            (run_key,))
    ]
    snapshot_id = None
    events: dict[str, Any] = {}
    for s in stages:
        if s["stage"] == "ingest":
            snapshot_id = (s["detail"].get("workers") or {}).get("snapshot_id")
            events.update(s["detail"].get("events") or {})
        if s["stage"] == "events":       # an event run's landed events (hrlms.sources.events)
            events["landed"] = s["detail"]
    quarantine = []
    if snapshot_id is not None:
        quarantine = [
            {"line": ln, "rule": r, "record": k, "field": f, "value": v, "reason": why, "held_by": other or ""}
            for ln, r, k, f, v, why, other in conn.execute(
                """select line_no, rule, record_key, field, value, reason, related_key from dq.quarantine
                   where snapshot_id = %s order by line_no, rule""", (snapshot_id,))
        ]
    plan: dict[str, Any] = {}
    if plan_id is not None:
        row = conn.execute("select status, counts, held_reason, review from sync.plans where plan_id = %s",
                           (plan_id,)).fetchone()
        plan = ({"plan_id": plan_id, "status": row[0], "counts": row[1], "held_reason": row[2],
                 "breaker": (row[3] or {}).get("breaker", {})} if row else {"plan_id": plan_id})
        plan["decisions"] = [
            {"decision": d, "by": b, "at": a, "note": n} for d, b, a, n in conn.execute(
                "select decision, decided_by, decided_at, note from sync.plan_decisions where plan_id = %s "
                "order by decided_at", (plan_id,))]
        plan["outcomes"] = dict(conn.execute(
            "select status, count(*) from sync.ops where plan_id = %s group by status", (plan_id,)).fetchall())
        plan["samples"] = [
            {"op_type": t, "person_id": p, "changed": c, "status": st}
            for t, p, c, st in conn.execute(
                """select op_type, coalesce(person_id, group_key), coalesce(members[1:10], changed_fields), status from (
                       select *, row_number() over (partition by op_type order by op_id) rn
                       from sync.ops where plan_id = %s) s where rn <= 5 order by op_type, op_id""", (plan_id,))
        ]
        plan["problems"] = [
            {"op_type": t, "person_id": p, "status": st, "http_status": hs, "error": e}
            for t, p, st, hs, e in conn.execute(
                """select op_type, coalesce(person_id, group_key), status, http_status, last_error from sync.ops
                   where plan_id = %s and status in ('escrow', 'dead_letter') order by op_id limit 200""",
                (plan_id,))
        ]
    issues = []
    if conn.execute("select to_regclass('marts.dq_person_issues')").fetchone()[0] is not None:
        issues = [
            {"person_id": p, "issue": t, "field": f, "value": v, "check": c, "first_seen": fs, "last_seen": ls,
             "other_person": o or ""}
            for p, t, f, v, c, fs, ls, o in conn.execute(
                """select person_id, issue_type, field, value, check_name, first_seen_on, last_seen_on,
                          related_person_ids
                   from marts.dq_person_issues where is_open order by first_seen_on, person_id, issue_type
                   limit 1000""")
        ]
    return {"run_key": run_key, "logical_date": logical_date.isoformat(), "stages": stages, "issues": issues,
            "snapshot_id": snapshot_id, "quarantine": quarantine, "plan": plan, "export": export_outcome(stages),
            "changes": change_outcome(stages), "access": access_headline(conn, run_key), "events": events,
            "data_docs": str(GX_ROOT / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html")}


def export_outcome(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """What happened to the CSV enrolment export (hrlms.learning.export): published file and rows, held
    (plan, held copy) or not published and why."""
    d = next((s["detail"] for s in stages if s["stage"] == "export"), None)
    if d is None:
        return {"published": False, "summary": "not exported: the run ended before the export ran"}
    if d.get("error"):
        return {"published": False, "summary": "not published: the export failed: " + d["error"]}
    if d.get("published"):
        summary = f"published {d['file']} ({d['rows']} rows)"
    elif d.get("held"):
        summary = (f"HELD with plan {d['plan_id']}: not published; the file it would publish ({d['rows']} rows) "
                   f"is kept for review in {d['held']}")
    else:
        summary = "not published: " + str(d.get("why", ""))
    out = {k: d[k] for k in ("published", "file", "rows", "held", "plan_id", "why", "held_copies") if k in d}
    return out | {"summary": summary}


def change_outcome(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The build's change set (hrlms.warehouse.changes) and the plan's scope: who was compared and why."""
    from hrlms.warehouse.changes import REASONS

    t = next((s["detail"] for s in stages if s["stage"] == "transform"), {}) or {}
    p = next((s["detail"] for s in stages if s["stage"] == "plan"), {}) or {}
    cs, scope = t.get("changes") or {}, p.get("scope") or {}
    parts = []
    if cs:
        kind = "full build" if cs.get("full_build") else "incremental build"
        parts.append(f"change set {cs.get('change_set_id')} ({kind}): {cs.get('built_because', '')}"
                     + (" — recorded by the build this run reused" if t.get("skipped") else ""))
    elif t.get("skipped"):
        parts.append("no change set: the warehouse was already built from these inputs")
    if scope:
        parts.append(f"plan compared {'every account' if scope.get('mode') == 'full' else str(scope.get('people')) + ' accounts'}"
                     f" ({scope.get('because', '')})")
    rows = [{"reason": r, "people": n, "meaning": REASONS.get(r, "")}
            for r, n in sorted((cs.get("reasons") or {}).items(), key=lambda kv: -kv[1])]
    return {"summary": "; ".join(parts) or "no build and no plan in this run", "reasons": rows,
            "full_build": cs.get("full_build"), "people": cs.get("people"), "scope": scope}


def _table(rows: list[dict], cols: list[str]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _access_summary(access: dict[str, Any]) -> str:
    """What the access-timeliness figures are about (hrlms.access.report; the full page: access/access_<date>.html)."""
    if not access:
        return ("No access changes measured for this run: its plan wrote no accounts or memberships "
                "(or marts.access_latency_by_run does not exist yet).")
    return ("Hires' accounts against 00:00 local on day one, leavers' deactivations against the end of their last "
            "local day (hours: negative = early, positive = late); HR-late hires and leavers are counted apart. "
            "The trend and the worst cases: the access timeliness page (access/access_<date>.html).")


def _events_html(ev: dict[str, Any]) -> str:
    """HR change events: what this run received, refused, laid over the HR file, left waiting, and where a new
    HR file said otherwise than events it supersedes (the file wins). Empty when no event was involved."""
    if not ev:
        return ""
    landed = ev.get("landed") or {}
    summary = []
    if landed:
        summary.append(f"{landed.get('new', 0)} new event(s) received ({landed.get('duplicates', 0)} already "
                       f"received, {len(landed.get('conflicts') or [])} with a known id and another payload: ignored), "
                       f"{landed.get('records', 0)} usable record(s), {landed.get('rejected_count', 0)} refused.")
    if "people" in ev:
        summary.append(f"{ev.get('people', 0)} people's lines come from {ev.get('events', 0)} event(s) laid over HR "
                       f"file snapshot {ev.get('base_snapshot_id')}; {ev.get('pending_count', 0)} record(s) wait "
                       f"for the person's hire.")
    if ev.get("older_than_file"):
        summary.append(f"{len(ev['older_than_file'])} event(s) of this run were made before the HR file they would be "
                       f"laid over was extracted: the file is their reference (kept, not applied): "
                       f"{', '.join(ev['older_than_file'][:20])}.")
    if ev.get("disagreement_count"):
        summary.append(f"The HR file disagrees with {ev['disagreement_count']} field(s) that earlier events had set: "
                       f"the file wins.")
    rejected = [{"event_id": r.get("event_id"), "record": r.get("record") or "", "problem": r.get("problem")}
                for r in landed.get("rejected") or []]
    pending = [{"person_id": p["person_id"], "events": ", ".join(p.get("event_ids") or []), "why": p.get("why")}
               for p in ev.get("pending") or []]
    disagree = [{"person_id": d["person_id"], "field": d["field"], "event": d.get("event") or "",
                 "file": d.get("file") if d.get("on_file", True) else "(not in the file)",
                 "events": ", ".join(d.get("event_ids") or [])} for d in ev.get("disagreements") or []]
    return (f"<h2>HR change events</h2><p>{html.escape(' '.join(summary))}</p>"
            f"<h3>Refused records</h3>{_table(rejected, ['event_id', 'record', 'problem'])}"
            f"<h3>Waiting for a hire</h3>{_table(pending, ['person_id', 'events', 'why'])}"
            f"<h3>Where the HR file disagrees with events (the file wins)</h3>"
            f"{_table(disagree, ['person_id', 'field', 'event', 'file', 'events'])}")


def render_html(data: dict[str, Any]) -> str:
    plan = data.get("plan") or {}
    counts = (plan.get("counts") or {}).get("ops", {})
    stage_rows = [{"stage": s["stage"], "seconds": f"{s['seconds']:.2f}",
                   "outcome": "FAILED: " + s["detail"]["error"] if s["detail"].get("error") else "ok"}
                  for s in data["stages"]]
    failed = [s for s in data["stages"] if s["detail"].get("error")]
    banner = (f"<p style='color:#b00;font-weight:bold'>This run stopped at stage {html.escape(failed[0]['stage'])}: "
              f"nothing was sent to the LMS after that point.</p>") if failed else ""
    if plan.get("status") == "held":
        pid = plan["plan_id"]
        banner += (f"<p style='color:#b00;font-weight:bold'>Plan {pid} is HELD by the breaker: "
                   f"{html.escape(plan.get('held_reason') or '')}. Nothing was sent to the LMS. Review the plan below, "
                   f"then trigger hrlms_provision with {{&quot;approve_plan&quot;: {pid}}} to apply exactly this plan, "
                   f"or {{&quot;reject_plan&quot;: {pid}}}.</p>")
    breaker = plan.get("breaker") or {}
    breaker_rows = [{"figure": k, "value": v} for k, v in breaker.items() if k not in ("reasons", "changed")]
    changes = describe_changes(breaker)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>hrlms run {html.escape(data['run_key'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body>
<h1>hrlms run — logical date {html.escape(data['logical_date'])}</h1>
<p>Run <code>{html.escape(data['run_key'])}</code>, workers snapshot {data['snapshot_id']}.
Data-quality report (Great Expectations Data Docs): <a href="file://{html.escape(data['data_docs'])}">{html.escape(data['data_docs'])}</a></p>
{banner}<h2>Stages</h2>{_table(stage_rows, ['stage', 'seconds', 'outcome'])}
<h2>What changed (change set)</h2><p>{html.escape(data.get('changes', {}).get('summary', ''))}</p>
{_table(data.get('changes', {}).get('reasons', []), ['reason', 'people', 'meaning'])}
<h2>Access timeliness</h2><p>{html.escape(_access_summary(data.get('access') or {}))}</p>
{_table(access_rows(data.get('access') or {}), ['figure', 'value'])}
<h2>Enrolment export (CSV)</h2><p>{html.escape(data.get('export', {}).get('summary', ''))}</p>
{_events_html(data.get('events') or {})}
<h2>Quarantined rows ({len(data['quarantine'])}) — please fix these records in the HR system</h2>
{_table(data['quarantine'][:500], ['line', 'record', 'rule', 'field', 'value', 'reason', 'held_by'])}
<h2>Open HR data issues ({len(data.get('issues', []))}{'+' if len(data.get('issues', [])) >= 1000 else ''}) — one row per person and defect</h2>
{_table(data.get('issues', [])[:1000], ['person_id', 'issue', 'field', 'value', 'other_person', 'check',
                                        'first_seen', 'last_seen'])}
<h2>Plan {plan.get('plan_id', '')} ({html.escape(str(plan.get('status', '')))})</h2>
{_table([{'op_type': k, 'count': v} for k, v in counts.items()], ['op_type', 'count'])}
<h3>Changed attributes</h3>{_table([{'attribute': k, 'count': v} for k, v in (plan.get('counts') or {}).get('attributes', {}).items()], ['attribute', 'count'])}
<h3>Breaker</h3>{_table(breaker_rows, ['figure', 'value'])}
<h3>Values changed (non-empty to another value)</h3>{_table(changes, ['attribute', 'changed', 'base', 'held', 'samples'])}
<h3>Decisions</h3>{_table(plan.get('decisions', []), ['decision', 'by', 'at', 'note'])}
<h3>Sample operations</h3>{_table(plan.get('samples', []), ['op_type', 'person_id', 'changed', 'status'])}
<h3>Escrow and dead letters</h3>{_table(plan.get('problems', []), ['op_type', 'person_id', 'status', 'http_status', 'error'])}
</body></html>"""


def write_run_report(conn: psycopg.Connection, reports_dir: Path, run_key: str, logical_date: date,
                     plan_id: int | None) -> Path:
    data = collect(conn, run_key, logical_date, plan_id)
    reports_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_key)
    base = reports_dir / f"run_{logical_date.isoformat()}_{safe}"
    base.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))
    base.with_suffix(".html").write_text(render_html(data))
    return base.with_suffix(".html")
