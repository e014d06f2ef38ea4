"""Reconciliation: compare what the LMS really holds with what we applied, report drift, optionally remaster.

`reconcile(conn, client)` pages every LMS user and group (always from the LMS, never a cache) and
compares them, per externalId, with sync.applied_users / applied_groups / applied_memberships. One row
per finding goes to sync.drift, one row per run to sync.reconcile_runs (schema_reconcile.sql):

- ``missing``   (user | group): we applied it, but the LMS holds no object with its lms_id or externalId.
- ``changed``   (user | group): an attribute we manage differs from what we applied — an out-of-band edit.
  Users: every attribute of the outbound mapping the last applied plan was made with (by its name:
  hrlms.sync.outbound; the current file before any plan), is_active, and manager_person_id (the LMS manager's
  externalId, or ``lms:<id>`` when it is no LMS user / has none); groups: display_name. ``lms_id``
  when the object is found by externalId under another id (deleted and recreated out of band).
- ``unknown``   (user | group): an LMS object whose externalId we never applied (or which has none).
  Reported only, NEVER modified (not even by remaster).
- ``duplicate`` (user | group): several LMS objects share one externalId, one row per object. Reported
  only: which one is right needs a person (the applied lms_id, if any, is the one we keep using).
- ``missing`` / ``extra`` (membership; external_id = group_key, field 'member'): a person we applied
  as member who is not in the LMS group / a member of the LMS group we never applied (lms_value: the
  member's externalId, ``lms:<id>`` for a reference to no LMS user — a deleted account —, or
  ``group:<externalId>`` for a nested group). Only groups we applied are compared.

`remaster=True` corrects our record to what the LMS really holds, so the normal diff (make_plan)
re-applies the desired state to the drifted objects, under the same breaker:
missing user → its applied_users row (and its applied memberships) is deleted (the next plan creates
it; apply looks it up by externalId first); changed attribute → the applied column takes the LMS's
value (the diff then plans update_user / reactivate_user / deactivate_user / set_manager); changed
lms_id → the applied lms_id follows the LMS (a mapped attribute: applied_users.attrs); missing group → applied_groups row + its memberships
deleted (create_group + add_members); membership drift → applied_memberships rows deleted/inserted
(add_members / remove_members; a stray member that is not one of our accounts is reported, not
touched). The corrections and the plan are committed in one transaction; the plan uses the latest
plan's logical date/snapshot (else the latest workers snapshot). A held plan (breaker) is not applied
and waits for approval like any plan: nothing reaches the LMS. Otherwise the plan is applied, and
member references to deleted accounts (no LMS user has that id) are removed from our groups.

Limits: the plan is the full normal diff, so it also carries desired-state changes not yet applied;
drift that makes no difference to the desired state (e.g. a manager set out of band on a person who is
inactive in the desired state) is recorded but not re-applied; a reconcile running while an apply is
sending ops may report the in-flight changes as drift.

`run(run_key, logical_date, remaster=...)` is the DAG's stage: warehouse + ScimClient from env /
connections, audit.stage_runs row (run_key ``reconcile:<run>``), JSON + HTML report under
``<HRLMS_REPORTS_DIR>/reconcile/``; raises PlanHeld (after the report) when the remaster plan is held.
"""
from __future__ import annotations

import html
import json
import logging
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hrlms.sync import outbound
from hrlms.sync.scim import ENTERPRISE, ScimClient

log = logging.getLogger(__name__)

#: Applied columns compared with the LMS besides the mapped attributes (field names of `changed` findings).
ACCOUNT_FIELDS = ("is_active", "manager_person_id")
GROUP_FIELDS = ("display_name",)
_FINDING_COLUMNS = ("kind", "object_type", "external_id", "lms_id", "field", "applied_value", "lms_value")


@dataclass
class Finding:
    kind: str                        # missing | changed | unknown | duplicate | extra
    object_type: str                 # user | group | membership
    external_id: str | None = None   # person id / group key (membership: the group key)
    lms_id: str | None = None        # the LMS object's id (membership: the group's)
    field: str | None = None
    applied_value: str | None = None
    lms_value: str | None = None
    dangling: bool = False           # membership extra: a reference to no LMS object (not stored)

    def row(self) -> tuple:
        return tuple(getattr(self, c) for c in _FINDING_COLUMNS)


@dataclass
class ReconcileResult:
    reconcile_id: int
    run_key: str
    remaster: bool
    findings: list[Finding] = field(default_factory=list)
    lms_users: int = 0
    lms_groups: int = 0
    corrections: dict[str, int] = field(default_factory=dict)
    plan_id: int | None = None
    plan_counts: dict[str, int] = field(default_factory=dict)
    held: bool = False
    held_reasons: list[str] = field(default_factory=list)
    applied: dict[str, Any] = field(default_factory=dict)
    dangling_removed: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Findings per '<kind>_<object_type>' (e.g. changed_user, extra_membership)."""
        return dict(sorted(Counter(f"{f.kind}_{f.object_type}" for f in self.findings).items()))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reconcile_id": self.reconcile_id, "remaster": self.remaster,
                               "lms_users": self.lms_users, "lms_groups": self.lms_groups, "drift": self.counts}
        if self.remaster:
            out.update(corrections=self.corrections, plan_id=self.plan_id, plan_ops=self.plan_counts,
                       held=self.held, applied=self.applied, dangling_removed=self.dangling_removed)
            if self.held:
                out["held_reasons"] = self.held_reasons
        return out


# --- reading -------------------------------------------------------------------------------------

def _text(v: Any) -> str | None:
    """Comparable text: None/'' -> None, booleans -> 'true'/'false'."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _one_or_sorted(value: Any) -> Any:
    """A list of values we sent (roles) as outbound.value_at reads it back: one value, or the sorted list."""
    if isinstance(value, list):
        return None if not value else value[0] if len(value) == 1 else sorted(value, key=str)
    return value


def _ref(lms_id: str, users_by_id: dict[str, dict]) -> str:
    """An LMS user id as the person it is: its externalId, else lms:<id>."""
    u = users_by_id.get(lms_id)
    return (u or {}).get("externalId") or f"lms:{lms_id}"


def lms_user_values(u: dict[str, Any], users_by_id: dict[str, dict], paths: dict[str, str]) -> dict[str, Any]:
    """An LMS user as what we record: the mapped attributes by name (`paths`: name -> SCIM path), is_active
    and manager_person_id."""
    values = {name: outbound.value_at(u, path) for name, path in paths.items()}
    values["is_active"] = u.get("active", True) is not False     # SCIM: absent = not deactivated
    manager = ((u.get(ENTERPRISE) or {}).get("manager") or {}).get("value")
    values["manager_person_id"] = _ref(manager, users_by_id) if manager else None
    return values


def _created(o: dict[str, Any]) -> tuple[str, str]:
    return ((o.get("meta") or {}).get("created") or "", o.get("id") or "")


def _by_external_id(objects: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for o in objects:
        if o.get("externalId"):
            out[o["externalId"]].append(o)
    for objs in out.values():
        objs.sort(key=_created)
    return out


def _match(a_lms_id: str, key: str, by_id: dict[str, dict], by_ext: dict[str, list[dict]]) -> dict | None:
    """The LMS object of an applied row: by lms_id (when it still carries our externalId), else by externalId."""
    o = by_id.get(a_lms_id)
    if o is not None and o.get("externalId") == key:
        return o
    found = by_ext.get(key) or []
    return found[0] if found else None


def compare(users: list[dict], groups: list[dict], applied_users: list[dict], applied_groups: list[dict],
            applied_members: dict[str, set[str]], paths: dict[str, str]) -> list[Finding]:
    """Every finding, in a stable order (pure: no I/O). applied_users rows: person_id, lms_id, attrs (name ->
    value sent), is_active, manager_person_id; `paths`: the mapped attributes (name -> SCIM path)."""
    findings: list[Finding] = []
    users_by_id = {u["id"]: u for u in users}
    groups_by_id = {g["id"]: g for g in groups}
    users_by_ext, groups_by_ext = _by_external_id(users), _by_external_id(groups)

    for object_type, by_ext in (("user", users_by_ext), ("group", groups_by_ext)):
        for ext in sorted(by_ext):
            if len(by_ext[ext]) > 1:
                findings += [Finding("duplicate", object_type, ext, o["id"]) for o in by_ext[ext]]

    for a in sorted(applied_users, key=lambda r: r["person_id"]):
        u = _match(a["lms_id"], a["person_id"], users_by_id, users_by_ext)
        if u is None:
            findings.append(Finding("missing", "user", a["person_id"], a["lms_id"]))
            continue
        if u["id"] != a["lms_id"]:
            findings.append(Finding("changed", "user", a["person_id"], u["id"], "lms_id", a["lms_id"], u["id"]))
        values = lms_user_values(u, users_by_id, paths)
        held = {**{k: _one_or_sorted(v) for k, v in (a.get("attrs") or {}).items()},
                **{c: a.get(c) for c in ACCOUNT_FIELDS}}
        for col in (*paths, *ACCOUNT_FIELDS):
            if _text(held.get(col)) != _text(values[col]):
                findings.append(Finding("changed", "user", a["person_id"], u["id"], col,
                                        _text(held.get(col)), _text(values[col])))
    applied_people = {a["person_id"] for a in applied_users}
    for u in sorted(users, key=lambda u: (u.get("externalId") or "", u["id"])):
        if u.get("externalId") not in applied_people:
            findings.append(Finding("unknown", "user", u.get("externalId"), u["id"], "userName",
                                    lms_value=_text(u.get("userName"))))

    for a in sorted(applied_groups, key=lambda r: r["group_key"]):
        key = a["group_key"]
        g = _match(a["lms_id"], key, groups_by_id, groups_by_ext)
        if g is None:
            findings.append(Finding("missing", "group", key, a["lms_id"]))
            continue
        if g["id"] != a["lms_id"]:
            findings.append(Finding("changed", "group", key, g["id"], "lms_id", a["lms_id"], g["id"]))
        if _text(a.get("display_name")) != _text(g.get("displayName")):
            findings.append(Finding("changed", "group", key, g["id"], "display_name",
                                    _text(a.get("display_name")), _text(g.get("displayName"))))
        in_lms: set[str] = set()
        odd: list[Finding] = []
        for m in g.get("members") or []:
            mid = m.get("value") if isinstance(m, dict) else None
            if not mid:
                continue
            u = users_by_id.get(mid)
            if u is not None and u.get("externalId"):
                in_lms.add(u["externalId"])
            elif u is not None:
                odd.append(Finding("extra", "membership", key, g["id"], "member", None, f"lms:{mid}"))
            elif mid in groups_by_id:
                sub = groups_by_id[mid]
                odd.append(Finding("extra", "membership", key, g["id"], "member", None,
                                   f"group:{sub.get('externalId') or mid}"))
            else:
                odd.append(Finding("extra", "membership", key, g["id"], "member", None, f"lms:{mid}",
                                   dangling=True))
        wanted = applied_members.get(key, set())
        findings += [Finding("missing", "membership", key, g["id"], "member", p, None)
                     for p in sorted(wanted - in_lms)]
        findings += [Finding("extra", "membership", key, g["id"], "member", None, p)
                     for p in sorted(in_lms - wanted)]
        findings += sorted(odd, key=lambda f: f.lms_value or "")
    applied_keys = {a["group_key"] for a in applied_groups}
    for g in sorted(groups, key=lambda g: (g.get("externalId") or "", g["id"])):
        if g.get("externalId") not in applied_keys:
            findings.append(Finding("unknown", "group", g.get("externalId"), g["id"], "displayName",
                                    lms_value=_text(g.get("displayName"))))
    return findings


def mapped_paths(conn: psycopg.Connection) -> dict[str, str]:
    """name -> SCIM path of what we sent: the mapping of the last applied plan (else the current file)."""
    row = conn.execute("select outbound from sync.plans where status in ('applied', 'partial') "
                       "and outbound is not null order by plan_id desc limit 1").fetchone()
    if row:
        return {a["name"]: a["path"] for a in row[0]["attributes"]}
    return {a.name: a.path for a in outbound.load().attributes}


def _applied(conn: psycopg.Connection) -> tuple[list[dict], list[dict], dict[str, set[str]]]:
    cols = ("person_id", "lms_id", "attrs", *ACCOUNT_FIELDS)
    users = [dict(zip(cols, r)) for r in conn.execute(f"select {', '.join(cols)} from sync.applied_users")]
    groups = [dict(zip(("group_key", "lms_id", "display_name"), r))
              for r in conn.execute("select group_key, lms_id, display_name from sync.applied_groups")]
    members: dict[str, set[str]] = defaultdict(set)
    for key, person in conn.execute("select group_key, person_id from sync.applied_memberships"):
        members[key].add(person)
    return users, groups, members


# --- remaster ------------------------------------------------------------------------------------

def _correct(conn: psycopg.Connection, findings: list[Finding]) -> Counter:
    """Set our record of the LMS to what the LMS holds (inside the caller's transaction)."""
    done: Counter = Counter()
    order = {"user": 0, "group": 1, "membership": 2}
    with conn.cursor() as cur:
        for f in sorted(findings, key=lambda f: order[f.object_type]):
            if f.kind not in ("missing", "changed", "extra"):
                continue                                    # unknown / duplicate: report only
            if f.object_type == "user" and f.kind == "missing":
                cur.execute("delete from sync.applied_memberships where person_id = %s", (f.external_id,))
                cur.execute("delete from sync.applied_users where person_id = %s", (f.external_id,))
                done["users_forgotten"] += cur.rowcount
            elif f.object_type == "user" and f.kind == "changed":
                if f.field == "lms_id":
                    col, value = "lms_id", f.lms_value
                elif f.field == "is_active":
                    col, value = "is_active", f.lms_value == "true"
                elif f.field == "manager_person_id":
                    col, value = f.field, f.lms_value
                else:       # a mapped attribute: our record of what was sent takes the LMS's value
                    cur.execute("update sync.applied_users set attrs = case when %(v)s::text is null "
                                "then coalesce(attrs, '{}') - %(n)s "
                                "else jsonb_set(coalesce(attrs, '{}'), array[%(n)s], to_jsonb(%(v)s::text)) end "
                                "where person_id = %(p)s",
                                {"v": f.lms_value, "n": outbound.valid_name(f.field), "p": f.external_id})
                    done["user_fields_reset"] += cur.rowcount
                    continue
                cur.execute(f"update sync.applied_users set {col} = %s where person_id = %s",
                            (value, f.external_id))
                done["user_fields_reset"] += cur.rowcount
            elif f.object_type == "group" and f.kind == "missing":
                cur.execute("delete from sync.applied_memberships where group_key = %s", (f.external_id,))
                cur.execute("delete from sync.applied_groups where group_key = %s", (f.external_id,))
                done["groups_forgotten"] += cur.rowcount
            elif f.object_type == "group" and f.kind == "changed" and f.field in ("lms_id", "display_name"):
                cur.execute(f"update sync.applied_groups set {f.field} = %s where group_key = %s",
                            (f.lms_value, f.external_id))
                done["group_fields_reset"] += cur.rowcount
            elif f.object_type == "membership" and f.kind == "missing":
                cur.execute("delete from sync.applied_memberships where group_key = %s and person_id = %s",
                            (f.external_id, f.applied_value))
                done["memberships_forgotten"] += cur.rowcount
            elif f.object_type == "membership" and f.kind == "extra" and not f.dangling:
                # Only our own accounts: a stray member that is not one of them is reported, never touched.
                cur.execute(
                    """insert into sync.applied_memberships (group_key, person_id)
                       select %(g)s, %(p)s
                       where exists (select 1 from sync.applied_users where person_id = %(p)s)
                         and exists (select 1 from sync.applied_groups where group_key = %(g)s)
                       on conflict do nothing""", {"g": f.external_id, "p": f.lms_value})
                done["memberships_recorded"] += cur.rowcount
    return done


def _plan_inputs(conn: psycopg.Connection) -> tuple[date, int]:
    row = conn.execute("select logical_date, snapshot_id from sync.plans order by plan_id desc limit 1").fetchone()
    if row is None:
        row = conn.execute("select logical_date, snapshot_id from raw_hris.snapshots where entity = 'workers' "
                           "order by snapshot_id desc limit 1").fetchone()
    if row is None:
        raise RuntimeError("remaster needs a desired state: no plan and no workers snapshot yet")
    return row[0], int(row[1])


def _remaster(conn: psycopg.Connection, client: ScimClient, res: ReconcileResult, *, batch_size: int,
              concurrency: int) -> None:
    from hrlms.sync.apply import apply_plan
    from hrlms.sync.plan import make_plan

    outbound.refresh_lms_schemas(conn, client)     # the plan checks the mapping against them
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.plan'))")
        res.corrections = dict(_correct(conn, res.findings))
        if any(res.corrections.values()):
            # our record changed outside a plan: every account is compared until a full plan is applied
            from hrlms.warehouse.changes import EVERYONE, mark_dirty

            mark_dirty(conn, [EVERYONE], "lms")
        logical_date, snapshot_id = _plan_inputs(conn)
        plan = make_plan(conn, logical_date=logical_date, snapshot_id=snapshot_id, scope="full")
        conn.execute("update sync.reconcile_runs set plan_id = %s, held_reason = %s where reconcile_id = %s",
                     (plan.plan_id, "; ".join(plan.held_reasons) or None, res.reconcile_id))
    res.plan_id, res.plan_counts = plan.plan_id, dict(plan.counts)
    res.held, res.held_reasons = plan.held, list(plan.held_reasons)
    if plan.held:
        log.warning("reconcile %s: remaster plan %s is held by the breaker: %s", res.reconcile_id, plan.plan_id,
                    "; ".join(plan.held_reasons))
        return
    applied = apply_plan(conn, plan.plan_id, client, batch_size=batch_size, concurrency=concurrency)
    res.applied = {"ops": dict(applied.applied), "writes": applied.writes, "escrow": applied.escrow,
                   "dead_letter": applied.dead_letter, "deferred": applied.deferred}
    dangling: dict[str, list[str]] = defaultdict(list)
    for f in res.findings:
        if f.dangling and f.lms_id and f.lms_value:
            dangling[f.lms_id].append(f.lms_value.removeprefix("lms:"))
    for group_id, ids in dangling.items():    # references to deleted accounts, in groups we manage
        client.remove_members(group_id, ids)     # guarded replace or filtered removes (scim.py)
        res.dangling_removed += len(ids)


# --- entry points ----------------------------------------------------------------------------------

def reconcile(conn: psycopg.Connection, client: ScimClient, *, remaster: bool = False, run_key: str | None = None,
              batch_size: int = 500, concurrency: int = 4) -> ReconcileResult:
    """Page the LMS, store the drift (sync.drift, sync.reconcile_runs); with remaster, re-apply the desired
    state to what drifted (see the module doc). Raises what apply raises (ApplyHalted); the run row then
    ends 'failed' with the error."""
    run_key = run_key or f"cli-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    with conn.transaction():
        rid = conn.execute("insert into sync.reconcile_runs (run_key, remaster) values (%s, %s) "
                           "returning reconcile_id", (run_key, remaster)).fetchone()[0]
    res = ReconcileResult(rid, run_key, remaster)
    try:
        users, groups = list(client.iter_users()), list(client.iter_groups())
        res.lms_users, res.lms_groups = len(users), len(groups)
        res.findings = compare(users, groups, *_applied(conn), mapped_paths(conn))
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(f"insert into sync.drift (reconcile_id, {', '.join(_FINDING_COLUMNS)}) "
                            f"values (%s, {', '.join(['%s'] * len(_FINDING_COLUMNS))})",
                            [(rid, *f.row()) for f in res.findings])
            cur.execute("update sync.reconcile_runs set status = 'reported', counts = %s where reconcile_id = %s",
                        (Jsonb(res.summary()), rid))
        if remaster and any(f.kind in ("missing", "changed", "extra") for f in res.findings):
            _remaster(conn, client, res, batch_size=batch_size, concurrency=concurrency)
        status = ("held" if res.held else "remastered") if res.plan_id else "reported"
        with conn.transaction():
            conn.execute("update sync.reconcile_runs set status = %s, counts = %s, finished_at = clock_timestamp() "
                         "where reconcile_id = %s", (status, Jsonb(res.summary()), rid))
    except Exception as exc:
        with conn.transaction():
            conn.execute("update sync.reconcile_runs set status = 'failed', error = %s, counts = %s, "
                         "finished_at = clock_timestamp() where reconcile_id = %s",
                         (str(exc)[:4000], Jsonb(res.summary()), rid))
        raise
    log.info("reconcile %s: %s", rid, json.dumps(res.summary(), default=str))
    return res


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:150]


def write_report(conn: psycopg.Connection, reports_dir: Path, reconcile_id: int) -> tuple[Path, Path]:
    """JSON + HTML drift report of a reconcile run, read back from the warehouse; returns (json, html)."""
    run = conn.execute(
        """select reconcile_id, run_key, remaster, status, counts, plan_id, held_reason, error,
                  started_at, finished_at from sync.reconcile_runs where reconcile_id = %s""",
        (reconcile_id,)).fetchone()
    keys = ("reconcile_id", "run_key", "remaster", "status", "counts", "plan_id", "held_reason", "error",
            "started_at", "finished_at")
    data: dict[str, Any] = dict(zip(keys, run))
    data["findings"] = [dict(zip(_FINDING_COLUMNS, r)) for r in conn.execute(
        f"select {', '.join(_FINDING_COLUMNS)} from sync.drift where reconcile_id = %s order by drift_id",
        (reconcile_id,))]
    out = Path(reports_dir) / "reconcile"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"reconcile_{_safe(data['run_key'])}"
    json_path, html_path = out / f"{stem}.json", out / f"{stem}.html"
    json_path.write_text(json.dumps(data, indent=2, default=str))
    html_path.write_text(render_html(data))
    return json_path, html_path


def render_html(data: dict[str, Any]) -> str:
    e = lambda v: html.escape("" if v is None else str(v))
    counts = data.get("counts") or {}
    drift = counts.get("drift") or {}
    summary = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in drift.items()) or \
        "<tr><td colspan='2'>no drift</td></tr>"
    rows = "".join("<tr>" + "".join(f"<td>{e(f.get(c))}</td>" for c in _FINDING_COLUMNS) + "</tr>"
                   for f in data["findings"])
    head = "".join(f"<th>{e(c)}</th>" for c in _FINDING_COLUMNS)
    banner = ""
    if data.get("held_reason"):
        banner = (f"<p style='color:#b00;font-weight:bold'>The remaster plan {e(data.get('plan_id'))} is held by "
                  f"the breaker: {e(data['held_reason'])}. Nothing was sent to the LMS; approve or reject it "
                  f"like any held plan.</p>")
    elif data.get("error"):
        banner = f"<p style='color:#b00;font-weight:bold'>Reconcile failed: {e(data['error'])}</p>"
    remaster = ""
    if data.get("remaster"):
        remaster = (f"<h2>Remaster</h2><pre>{e(json.dumps({k: counts.get(k) for k in ('corrections', 'plan_id', 'plan_ops', 'held', 'applied', 'dangling_removed')}, indent=2, default=str))}</pre>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>hrlms reconcile {e(data['run_key'])}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:2px 6px}} table{{border-collapse:collapse}}</style>
</head><body>
<h1>hrlms reconcile {e(data['reconcile_id'])} — {e(data['status'])}</h1>
<p>Run <code>{e(data['run_key'])}</code>, started {e(data['started_at'])}, finished {e(data['finished_at'])};
LMS users {e(counts.get('lms_users'))}, groups {e(counts.get('lms_groups'))}; remaster: {e(data['remaster'])}.</p>
{banner}
<h2>Drift</h2><table><tr><th>kind_object</th><th>count</th></tr>{summary}</table>
{remaster}
<h2>Findings</h2><table><tr>{head}</tr>{rows}</table>
</body></html>
"""


def _record_stage(conn: psycopg.Connection, run_key: str, day: date, started: float, detail: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(
            """insert into audit.stage_runs (run_key, logical_date, stage, started_at, seconds, detail)
               values (%s, %s, 'reconcile', to_timestamp(%s), %s, %s)
               on conflict (run_key, stage) do update set started_at = excluded.started_at,
                   seconds = excluded.seconds, detail = excluded.detail""",
            (run_key, day, started, round(time.time() - started, 3), Jsonb(detail)))


def run(run_key: str, logical_date: date | datetime | None = None, *, remaster: bool = False) -> dict[str, Any]:
    """The DAG's stage: reconcile against the configured warehouse and LMS, record it in audit.stage_runs
    (run_key 'reconcile:<run_key>', stage 'reconcile'), write the report; PlanHeld when the remaster
    plan is held (after the report is written)."""
    from hrlms.dates import logical_instant
    from hrlms.settings import Settings
    from hrlms.sync.breaker import PlanHeld
    from hrlms.sync.scim import lms_config_from_env
    from hrlms.warehouse import db

    settings = Settings.from_env()
    day = logical_instant(logical_date).date() if logical_date else datetime.now(UTC).date()
    started = time.time()
    detail: dict[str, Any] = {"remaster": remaster}
    res: ReconcileResult | None = None
    with db.connect() as conn:
        db.bootstrap(conn)
        try:
            with ScimClient(lms_config_from_env(), pool_size=settings.lms_concurrency) as client:
                try:
                    res = reconcile(conn, client, remaster=remaster, run_key=run_key,
                                    batch_size=settings.lms_batch_size, concurrency=settings.lms_concurrency)
                    detail.update(res.summary())
                finally:
                    detail["lms_requests"] = client.stats.snapshot()
        except Exception as exc:
            detail["error"] = str(exc)[:4000]
            raise
        finally:
            rid = res.reconcile_id if res else conn.execute(
                "select max(reconcile_id) from sync.reconcile_runs where run_key = %s", (run_key,)).fetchone()[0]
            if rid is not None:
                detail["report"] = str(write_report(conn, settings.reports_dir, rid)[1])
            _record_stage(conn, f"reconcile:{run_key}", day, started, detail)
    if res.held:
        raise PlanHeld(res.plan_id, res.held_reasons)
    return {"reconcile_id": res.reconcile_id, "drift": res.counts, "plan_id": res.plan_id,
            "report": detail.get("report")}


__all__ = ["Finding", "ReconcileResult", "compare", "reconcile", "render_html", "run", "write_report"]
