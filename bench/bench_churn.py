"""Benchmark d: a day with 0.5% churn after an initial day is in the LMS — HR file → LMS time of day 2,
LMS writes vs the changed records, and a rerun of day 2 (no change: 0 writes, ≤ 25% of day 2's time).

Data: `hrlms.synth` with its default churn (Churn.total = 0.005: hires, terminations, transfers,
rehires, renames, 0.2% of org units moved) and **no messiness** (Messiness.clean()): with the default
seeded defects, a different set of rows is quarantined each day, and people leaving or entering
quarantine would add writes that are not churn. One repeat = a fresh database and a fresh scim2-server;
day 1 (2026-01-05) provisioned through the whole pipeline (setup, its time is recorded but is not the
figure); then day 2 (2026-01-06), then day 2 again under another run key (the same file: ingest
recognises the bytes, the build ledger skips staging, gate and transform, plan and apply run and find
nothing to do). Each stage a fresh interpreter, apply as
HRLMS_APPLY_SHARDS (2) parallel processes — the stage driver is bench_provisioning.day().

**Warehouse-only mode** (`--warehouse-only`, and automatically for every size above `--lms-max-size`,
default 100,000 — so the target's 1M runs in this mode): scim2-server (one Python process, in memory,
~200 users/s) cannot take day 1's 1M users in reasonable time, so day 1 is not sent to an LMS; day 2 is,
to an LMS holding just what it touches. Results go to a separate file, `<out>/churn_warehouse.json` (its
own section in docs/benchmarks.md; `--churn 0.05` → churn_warehouse_c5pct.json), and never replace the
full figures in churn.json. Per repeat (fresh database):

- day 1: ingest → staging → gate → transform → plan (the same stage children as the normal mode,
  bench_provisioning.child), then *instead of apply* the applied state is **seeded by SQL**
  (:func:`seed_applied`) as if every op of the plan had been applied: sync.applied_users from the
  create/update/reactivate payloads (as apply's upsert), deactivations and managers (set_manager),
  sync.applied_groups (create/update_group), sync.applied_memberships (add/remove_members), the ops
  'applied' with an LMS id, the plan 'applied' — set-based, one statement per table and op kind, no
  Python loop over rows. LMS ids are fake and unique (md5 of 'user:'/'group:' + key, as a uuid). Then
  ANALYZE of those tables (a day passes between two runs: autovacuum would have done it).
- day 2: the same five stages (timed). Then, **outside the timer**: a plan held by the breaker is
  approved (breaker.decide, as the DAG's approve_plan); a fresh scim2-server (LocalScimServer) is
  started and seeded through /Bulk (:func:`seed_lms`) with exactly the LMS objects the plan touches as
  the warehouse believes them after day 1 — the sync.applied_users rows of the people of its user and
  set_manager ops, of the managers those set, of the members of its membership ops, and of the
  managers those accounts hold; the sync.applied_groups of its group and membership ops, with their
  applied members among those accounts (all their members with `--seed-members-max`) — and the
  lms_id of those rows in sync.applied_users / applied_groups is rewritten to the server's ids (one
  UPDATE from a temp table each), then ANALYZE. Then the **real apply stage, timed**:
  HRLMS_APPLY_SHARDS (`--shards`, 2) apply children against that server (bench_provisioning.run_apply).
  Figures: "HR file → every change applied" = the five stage walls + the apply wall (measured); the
  writes the apply sent; the change set (transform detail `changes`: people, reasons, seconds) and the
  plan's scope (plan detail `scope`); the planned ops' people compared with the generator's truth.
- rerun of day 2 (another run key): the same stages, its apply against the same server; the build
  ledger (hrlms.warehouse.builds) should skip staging/gate/transform, the plan should hold 0 ops and
  the apply send 0 writes. rerun ÷ day 2 compares "HR file → every change applied".
- an hour later (HOUR_LATER, the next run of the hourly schedule, the same files): what most of a day's
  runs cost — the transform skips its build when nobody's date is due in that hour.

`--churn` sets day 2's churn (hrlms.synth Churn.total, default 0.005; its split between hires,
terminations, transfers, rehires and renames unchanged); data, work folders and result files of another
churn carry a suffix (`_c5pct`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from bench import common
from bench.bench_provisioning import (
    WAREHOUSE_STAGES,
    day,
    lms_user_count,
    plan_facts,
    run_apply,
    warehouse_stages,
)
from bench.common import START

NAME = "churn"
TITLE = "d. A day with 0.5% churn (HR file → LMS), and its rerun"
TARGET = ("day 2 with 0.5% churn: HR file → every change applied in the LMS ≤ 120 s at 1M workers, measured; "
          "LMS writes = changed records; a rerun without change: 0 writes in ≤ 25% of day 2's time")
DAY2 = START + timedelta(days=1)
USER_OPS = ("create_user", "update_user", "deactivate_user", "reactivate_user", "set_manager")
DEFAULT_CHURN = 0.005        # hrlms.synth.changes.Churn.total: the target's day

WH_NAME = "churn_warehouse"
WH_TITLE = ("d. A day with 0.5% churn, warehouse-only day 1 (applied state seeded by SQL), day 2 applied for "
            "real to a scim2-server seeded with the accounts it touches (HR file → every change applied, "
            "measured), and its rerun")
WH_MODE = "warehouse only + measured apply"
LMS_MAX_SIZE = 100_000       # above this, sizes run warehouse-only (scim2-server cannot hold them)
SEED_MEMBERS_MAX = 0         # groups seeded with all their members up to this many memberships in all (see seed_lms)


def churn_tag(churn: float) -> str:
    """'' for the default churn, else '_c5pct' (result file names, data folders, work folders)."""
    return "" if churn == DEFAULT_CHURN else f"_c{churn * 100:g}pct".replace(".", "p")


def titled(title: str, churn: float) -> str:
    return title if churn == DEFAULT_CHURN else title.replace("0.5% churn", f"{churn:.1%}".replace(".0%", "%")
                                                              + " churn")


def churn_days(workers: int, seed: int, churn: float = DEFAULT_CHURN) -> Path:
    """Two clean synthetic days (day 2 = `churn`, Churn.total, its default split between hires,
    terminations, transfers, rehires, renames), generated once per (workers, seed, churn) and reused."""
    folder = common.DATA_DIR / f"w{workers}_s{seed}_clean_2d{churn_tag(churn)}"
    marker = folder / ".complete.json"
    with common.file_lock(common.DATA_DIR / f".{folder.name}.lock"):
        if marker.is_file():
            return folder
        from hrlms.synth.changes import Churn
        from hrlms.synth.generator import generate
        from hrlms.synth.messiness import Messiness

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        t = time.perf_counter()
        days = generate(tmp, workers=workers, days=2, start=START, seed=seed, messiness=Messiness.clean(),
                        churn=Churn(total=churn))
        (tmp / ".complete.json").write_text(json.dumps({
            "workers": workers, "seed": seed, "churn": churn, "rows": [d.rows for d in days],
            "changes": [d.changes for d in days], "generated_in_s": round(time.perf_counter() - t, 1)}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def truth_changes(folder: Path, on: date) -> dict:
    """The generator's record of what changed on `on`: per kind, and the people concerned."""
    with open(folder / f"truth_{on.isoformat()}.jsonl", encoding="utf-8") as fh:
        meta = json.loads(fh.readline())
    changes = meta.get("changes") or []
    people: dict[str, set[str]] = {}
    for c in changes:
        if c.get("person_id"):
            people.setdefault(c["kind"], set()).add(c["person_id"])
    return {"by_kind": dict(Counter(c["kind"] for c in changes)), "people": people,
            "persons": set().union(*people.values()) if people else set()}


def compare(db_url: str, plan_id: int, truth: dict) -> dict:
    """Who got a user op vs who the generator changed, per change kind."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select person_id, op_type, changed_fields from sync.ops where plan_id = %s "
                            "and op_type = any(%s)", (plan_id, list(USER_OPS))).fetchall()
    written = {p for p, _t, _f in rows}
    fields = Counter(f for _p, t, fs in rows if t == "update_user" for f in (fs or []))
    per_kind = {k: {"people": len(v), "with_user_op": len(v & written)} for k, v in truth["people"].items()}
    return {"user_op_people": len(written), "truth_people": len(truth["persons"]),
            "both": len(written & truth["persons"]), "ops_not_in_truth": sorted(written - truth["persons"])[:20],
            "n_ops_not_in_truth": len(written - truth["persons"]),
            "n_truth_without_op": len(truth["persons"] - written), "per_kind": per_kind,
            "update_fields": dict(fields)}


def one_repeat(size: int, folder: Path, rep: int, shards: int, ctag: str = "") -> dict:
    from hrlms.devenv.scim import LocalScimServer

    tag = f"{size}{ctag}-r{rep + 1}"
    work = common.WORK_DIR / NAME / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict = {}
    with common.fresh_database(f"churn_{size}") as url, LocalScimServer(work) as lms:
        kw = {"db_url": url, "folder": folder, "lms": (lms.base_url, lms.token), "work": work, "shards": shards}
        for label, on, key in (("day1", START, "bench-churn-d1"), ("day2", DAY2, "bench-churn-d2"),
                               ("rerun", DAY2, "bench-churn-d2-rerun")):
            res = day(on=on, run_key=key, log=f"churn_{tag}_{label}", **kw)
            res["facts"] = plan_facts(url, res["plan"]["plan_id"], key)
            out[label] = res
            common.say(f"    {label}: file→LMS {res['file_to_lms']:.1f}s ("
                       + ", ".join(f"{s} {v:.1f}" for s, v in res["wall"].items())
                       + f"); ops {res['facts']['ops']}; writes {res['facts']['writes']}")
        out["lms_users"] = lms_user_count(lms.base_url, lms.token)
        out["compare"] = compare(url, out["day2"]["plan"]["plan_id"], truth_changes(folder, DAY2))
    return out


# -- warehouse-only mode -------------------------------------------------------------------------------

# The plan's ops that apply would claim: a fresh plan's are 'pending' ('held' when the breaker held it: seeded
# as if a person had approved it).
_PLAN_OPS = "o.plan_id = %(p)s and o.status in ('pending', 'held')"


def seed_sql() -> list[tuple[str, str]]:
    """(what, statement) for seed_applied: the writes apply's _record makes for applied ops, set-based over a
    whole plan (%(p)s), in apply's order: phase 1 (users, groups), phase 2 (managers, memberships), then the
    ops and the plan. LMS ids: existing ones are kept (as apply: an update targets the account's id)."""
    from hrlms.sync.scim import ACCOUNT_COLUMNS

    attrs = (*ACCOUNT_COLUMNS, "attrs")
    return [
        ("users (create/update/reactivate)", f"""
            insert into sync.applied_users (person_id, lms_id, {', '.join(attrs)}, is_active, last_op_id, applied_at)
            select o.person_id, md5('user:' || o.person_id)::uuid::text, {', '.join('p.' + c for c in attrs)},
                   p.is_active, o.op_id, clock_timestamp()
            from sync.ops o cross join lateral jsonb_populate_record(null::sync.applied_users, o.payload) p
            where {_PLAN_OPS} and o.op_type in ('create_user', 'update_user', 'reactivate_user')
            on conflict (person_id) do update set {', '.join(f'{c} = excluded.{c}' for c in attrs)},
                is_active = excluded.is_active, last_op_id = excluded.last_op_id, applied_at = excluded.applied_at"""),
        ("users (deactivate)", f"""
            update sync.applied_users a set is_active = false, last_op_id = o.op_id, applied_at = clock_timestamp()
            from sync.ops o
            where {_PLAN_OPS} and o.op_type = 'deactivate_user' and a.person_id = o.person_id"""),
        ("groups (create/update)", f"""
            insert into sync.applied_groups (group_key, lms_id, display_name, last_op_id, applied_at)
            select o.group_key, md5('group:' || o.group_key)::uuid::text,
                   coalesce(o.payload ->> 'display_name', o.group_key), o.op_id, clock_timestamp()
            from sync.ops o
            where {_PLAN_OPS} and o.op_type in ('create_group', 'update_group')
            on conflict (group_key) do update set display_name = excluded.display_name,
                last_op_id = excluded.last_op_id, applied_at = excluded.applied_at"""),
        ("managers (set_manager)", f"""
            update sync.applied_users a set manager_person_id = o.payload ->> 'manager_person_id',
                last_op_id = o.op_id, applied_at = clock_timestamp()
            from sync.ops o
            where {_PLAN_OPS} and o.op_type = 'set_manager' and a.person_id = o.person_id"""),
        # apply records the members it could send: those with an LMS account (the rest go to escrow)
        ("memberships (add_members)", f"""
            insert into sync.applied_memberships (group_key, person_id, last_op_id, applied_at)
            select o.group_key, m.person_id, o.op_id, clock_timestamp()
            from sync.ops o cross join unnest(o.members) m(person_id)
            where {_PLAN_OPS} and o.op_type = 'add_members'
              and exists (select 1 from sync.applied_users u where u.person_id = m.person_id)
            on conflict (group_key, person_id) do update set last_op_id = excluded.last_op_id,
                applied_at = excluded.applied_at"""),
        ("memberships (remove_members)", f"""
            delete from sync.applied_memberships a
            using (select o.group_key, unnest(o.members) as person_id from sync.ops o
                   where {_PLAN_OPS} and o.op_type = 'remove_members') r
            where a.group_key = r.group_key and a.person_id = r.person_id"""),
        ("ops → applied", f"""
            update sync.ops t set status = 'applied', attempts = t.attempts + 1, claimed_by = 'seeded-by-sql',
                applied_at = clock_timestamp(), lms_id = coalesce(u.lms_id, g.lms_id)
            from sync.ops o
            left join sync.applied_users u on u.person_id = o.person_id
            left join sync.applied_groups g on o.person_id is null and g.group_key = o.group_key
            where {_PLAN_OPS} and t.op_id = o.op_id"""),
        ("plan → applied", """
            update sync.plans set status = 'applied', finished_at = clock_timestamp() where plan_id = %(p)s"""),
    ]


def seed_applied(db_url: str, plan_id: int) -> dict:
    """Record plan `plan_id` as applied without an LMS (see the module doc): one transaction, set-based.
    Returns rows per statement, what could not be resolved (should be 0) and the seconds taken."""
    import psycopg

    t = time.perf_counter()
    out: dict = {"rows": {}}
    with psycopg.connect(db_url) as conn:
        with conn.transaction():
            out["held_reason"] = conn.execute("select held_reason from sync.plans where plan_id = %s",
                                              (plan_id,)).fetchone()[0]
            for what, sql in seed_sql():
                out["rows"][what] = conn.execute(sql, {"p": plan_id}).rowcount
            # what apply would have put in escrow instead (members / managers without an account): expected 0
            out["unresolved_members"], out["unresolved_managers"] = conn.execute(
                """select
                     (select count(*) from sync.ops o cross join unnest(o.members) m(person_id)
                      where o.plan_id = %(p)s and o.op_type = 'add_members'
                        and not exists (select 1 from sync.applied_users u where u.person_id = m.person_id)),
                     (select count(*) from sync.ops o where o.plan_id = %(p)s and o.op_type = 'set_manager'
                        and o.payload ->> 'manager_person_id' is not null
                        and not exists (select 1 from sync.applied_users u
                                        where u.person_id = o.payload ->> 'manager_person_id'))""",
                {"p": plan_id}).fetchone()
        conn.execute("analyze sync.applied_users, sync.applied_groups, sync.applied_memberships, sync.ops, sync.plans")
        conn.commit()
        out["applied_users"], out["active_users"], out["groups"], out["memberships"] = conn.execute(
            """select (select count(*) from sync.applied_users),
                      (select count(*) from sync.applied_users where is_active),
                      (select count(*) from sync.applied_groups), (select count(*) from sync.applied_memberships)"""
        ).fetchone()
    out["seconds"] = round(time.perf_counter() - t, 2)
    return out


def _dry_run_child(spec: dict) -> int:
    """The apply task with dry_run=True (one process, no LMS): start-up, the plan's status check."""
    common.isolate_artifacts(Path(spec["work"]), gx=False)
    from hrlms import pipeline

    t = time.perf_counter()
    out = pipeline.apply(spec["run_key"], date.fromisoformat(spec["day"]), spec["plan_id"], dry_run=True)
    return common.child_done(spec, {"stage": "apply", "seconds": time.perf_counter() - t, "out": out})


def stage_skips(db_url: str, run_key: str) -> dict[str, str | None]:
    """Per warehouse stage of the run: the build ledger's "skipped" text (None: the stage did its work)."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select stage, detail ->> 'skipped' from audit.stage_runs where run_key = %s "
                            "and stage = any(%s)", (run_key, list(WAREHOUSE_STAGES))).fetchall()
    return {s: v for s, v in rows}


def warehouse_day(*, db_url: str, folder: Path, on: date, run_key: str, work: Path, log: str,
                  dry_run: bool = True) -> dict:
    """One day's warehouse stages, each a fresh child (bench_provisioning.child, as day() runs them),
    then (dry_run) the apply task in dry-run mode. No LMS: none is configured (the plan checks the LMS
    mapping against the schemas last read, RFC 7643's before any; an apply would fail loudly)."""
    env = {"WAREHOUSE_URL": db_url, "HRLMS_LANDING_DIR": str(folder), "HRLMS_SOURCE": "file",
           "HRLMS_REPORTS_DIR": str(work / "reports"), "HRLMS_LMS_URL": "", "HRLMS_LMS_TOKEN": "",
           "AIRFLOW_CONN_HRLMS_LMS": "",
           "HRLMS_APPLY_SHARDS": "1", "HRLMS_LRS_URL": ""}
    # the transform leaves the reporting tables to the stage marts, as in the DAGs (run with the apply)
    base = {"work": str(work), "day": on.isoformat(), "run_key": run_key, "shards": 1, "defer_reporting": True}
    res, snaps = warehouse_stages(base, env, log)
    res["file_to_plan"] = sum(res["wall"].values())
    if dry_run:
        t = time.perf_counter()
        out = common.run_child("bench.bench_churn", {**base, "stage": "apply_dry_run",
                                                     "plan_id": res["plan"]["plan_id"]},
                               env=env, log_name=f"{log}_apply_dry_run")
        res["dry_run_apply"] = {"wall": time.perf_counter() - t, "call": out["seconds"], "out": out["out"]}
    res["skipped"] = stage_skips(db_url, run_key)
    res["details"] = stage_details(db_url, run_key)
    res["snapshots"] = snaps
    res["base"], res["env"] = base, env
    return res


def stage_details(db_url: str, run_key: str) -> dict:
    """The transform stage's change set (detail.changes) and the plan stage's scope, ops and breaker hold."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = dict(conn.execute("select stage, detail from audit.stage_runs where run_key = %s "
                                 "and stage in ('transform', 'plan')", (run_key,)).fetchall())
    t, p = rows.get("transform") or {}, rows.get("plan") or {}
    return {"changes": None if t.get("skipped") else t.get("changes"), "transform_skipped": t.get("skipped"), "scope": p.get("scope"),
            "plan_ops": p.get("ops"), "plan_members": p.get("members"), "held": p.get("held"),
            "dbt_slowest": t.get("dbt_slowest")}


def approve_held(db_url: str, plan_id: int) -> str | None:
    """A plan held by the breaker is approved as a person would (DAG conf approve_plan: exactly this plan's
    ops become pending); outside every timer. Returns the hold's reason (None: not held)."""
    import psycopg

    from hrlms.sync.breaker import decide

    with psycopg.connect(db_url) as conn:
        status, reason = conn.execute("select status, held_reason from sync.plans where plan_id = %s",
                                      (plan_id,)).fetchone()
        if status != "held":
            return None
        decide(conn, plan_id, "approved", "bench_churn (measured apply: approved as a person would)")
        conn.commit()
    return reason


# -- the LMS for the measured apply --------------------------------------------------------------------------

# The accounts the plan's ops touch: the people of its user and set_manager ops, the managers its set_manager
# ops set, and the members of its membership ops (apply resolves their LMS ids from sync.applied_users; one
# without an account would be escrowed, not sent).
_SEED_PEOPLE = """
insert into seed_people
select person_id from sync.ops where plan_id = %(p)s and person_id is not null
union
select payload ->> 'manager_person_id' from sync.ops
where plan_id = %(p)s and op_type = 'set_manager' and payload ->> 'manager_person_id' is not null
union
select unnest(members) from sync.ops where plan_id = %(p)s and members is not null
on conflict do nothing
"""
_USER_COLUMNS = ("person_id", "user_name", "attrs", "is_active", "manager_person_id")


def _bulk_chunks(items: list[tuple[dict, int]], max_ops: int, max_bytes: int, max_members: int):
    """(operation, member references) → /Bulk request bodies within maxOperations, 90% of maxPayloadSize
    and `max_members` member references (scim2-server slows down on long member lists: as apply's chunks)."""
    chunk, size, members = [], 200, 0
    for op, m in items:
        n = len(json.dumps(op)) + 2
        if chunk and (len(chunk) >= max_ops or size + n > max_bytes * 0.9 or members + m > max_members):
            yield chunk
            chunk, size, members = [], 200, 0
        chunk.append(op)
        size, members = size + n, members + m
    if chunk:
        yield chunk


def _send(client, ops: list[dict], limits: tuple[int, int], member_refs: list[int] | None = None,
          max_members: int = 2000) -> dict[str, str]:
    """POST the operations through /Bulk (`member_refs`: member references per operation); bulkId of each
    POST → the id of the resource it created. Any failure stops the benchmark."""
    ids: dict[str, str] = {}
    items = list(zip(ops, member_refs or [0] * len(ops)))
    for chunk in _bulk_chunks(items, min(limits[0], 1000), limits[1], max_members):
        for op, (status, res_id, detail) in zip(chunk, client.bulk(chunk)):
            if not 200 <= status < 300:
                raise common.BenchError(f"seeding the LMS: {op['method']} {op['path']} → {status}: {detail}")
            if op["method"] == "POST":
                ids[op["bulkId"]] = res_id
    return ids


def seed_lms(db_url: str, plan_id: int | None, lms, members_max: int, people: list[str] | None = None) -> dict:
    """Before the timed apply: put into a fresh scim2-server, through /Bulk, exactly the LMS objects plan
    `plan_id` touches, as the warehouse believes they are (sync.applied_*), then rewrite their lms_id in
    sync.applied_users / sync.applied_groups to the server's ids (set-based, from a temp table) and ANALYZE.
    With `people` instead of a plan (bench_events at 1M: the plans are made later, by the event runs): those
    accounts, their direct reports, and the groups they are members of.

    - users: the accounts of _SEED_PEOPLE, plus the managers they have as applied (so that the manager
      attribute each holds in the LMS is the one the warehouse believes), created managers first, each
      with its manager (enterprise manager.value = the manager's new id) when that manager is seeded too;
      inactive accounts are created with active = false;
    - groups: those of the plan's update_group and membership ops that we hold (sync.applied_groups), with
      their applied members — all of them (and their accounts) when those memberships number at most
      `members_max`, else only the members among the accounts above (the group objects then hold fewer
      members than in the LMS the warehouse believes in: said in the result).
    Returns what was seeded and the seconds taken (not part of any figure)."""
    import psycopg

    from hrlms.sync.outbound import user_resource
    from hrlms.sync.scim import LmsConfig, ScimClient, add_members_body, group_resource

    t = time.perf_counter()
    out: dict = {}
    with psycopg.connect(db_url) as conn:
        conn.execute("create temp table seed_people (person_id text primary key)")
        if people is None:
            conn.execute(_SEED_PEOPLE, {"p": plan_id})
            conn.execute("""create temp table seed_groups as
                            select g.group_key, g.display_name from sync.applied_groups g
                            where g.group_key in (select group_key from sync.ops where plan_id = %s
                                                  and group_key is not null)""", (plan_id,))
        else:
            conn.execute("insert into seed_people select unnest(%s::text[]) on conflict do nothing", (people,))
            conn.execute("""create temp table seed_groups as
                            select g.group_key, g.display_name from sync.applied_groups g
                            where g.group_key in (select m.group_key from sync.applied_memberships m
                                                  join seed_people using (person_id))""")
            conn.execute("""insert into seed_people select a.person_id from sync.applied_users a
                            where a.manager_person_id = any(%s) on conflict do nothing""", (people,))
        out["plan_people"] = conn.execute("select count(*) from seed_people").fetchone()[0]
        memberships = conn.execute("select count(*) from sync.applied_memberships m "
                                   "join seed_groups g using (group_key)").fetchone()[0]
        out["group_memberships_applied"] = memberships
        out["members"] = "all" if memberships <= members_max else "only the seeded accounts"
        if out["members"] == "all":
            conn.execute("insert into seed_people select distinct m.person_id from sync.applied_memberships m "
                         "join seed_groups g using (group_key) on conflict do nothing")
        conn.execute("""insert into seed_people select distinct a.manager_person_id from sync.applied_users a
                        join seed_people s using (person_id) where a.manager_person_id is not null
                        on conflict do nothing""")
        users = [dict(zip(_USER_COLUMNS, r)) for r in conn.execute(
            f"select {', '.join('a.' + c for c in _USER_COLUMNS)} from sync.applied_users a "
            "join seed_people using (person_id) order by a.person_id").fetchall()]
        groups = conn.execute("select group_key, display_name from seed_groups order by group_key").fetchall()
        # the mapping the accounts' values were sent with
        outbound = conn.execute("select outbound from sync.plans where outbound is not null "
                                "order by plan_id desc limit 1").fetchone()[0]
        seeded = {u["person_id"] for u in users}
        members: dict[str, list[str]] = {}
        for g, p in conn.execute("select m.group_key, m.person_id from sync.applied_memberships m "
                                 "join seed_groups using (group_key) order by 1, 2").fetchall():
            if p in seeded:
                members.setdefault(g, []).append(p)
        conn.rollback()    # the temp tables

    # managers first: depth among the seeded accounts (0 = manager not seeded, none, or a cycle)
    by_id = {u["person_id"]: u for u in users}
    depth: dict[str, int] = {}
    for u in users:
        chain, p = [], u["person_id"]
        while p not in depth and p in by_id and p not in chain:
            chain.append(p)
            p = by_id[p]["manager_person_id"]
        d = depth.get(p, -1) if p not in chain else -1
        for q in reversed(chain):
            d += 1
            depth[q] = d
    levels: dict[int, list[dict]] = {}
    for u in users:
        levels.setdefault(depth[u["person_id"]], []).append(u)

    client = ScimClient(LmsConfig(lms.base_url, lms.token, timeout=(5.0, 600.0), max_attempts=1))
    try:
        limits = client.bulk_limits() or (1000, 1_048_576)
        user_ids: dict[str, str] = {}
        with_manager = 0
        for level in sorted(levels):
            ops = []
            for u in levels[level]:
                mgr = user_ids.get(u["manager_person_id"]) if u["manager_person_id"] else None
                with_manager += bool(mgr)
                ops.append({"method": "POST", "path": "/Users", "bulkId": u["person_id"],
                            "data": user_resource(u, outbound, mgr)})
            user_ids.update(_send(client, ops, limits))
        group_ids: dict[str, str] = {}
        chunk = 2000     # member references per operation (as HRLMS_BULK_MAX_MEMBERS per apply request)
        first = {g: m[:chunk] for g, m in members.items()}
        ops = [{"method": "POST", "path": "/Groups", "bulkId": g,
                "data": {**group_resource(g, name), **({"members": [{"value": user_ids[p]} for p in first[g]]}
                                                        if first.get(g) else {})}} for g, name in groups]
        group_ids = _send(client, ops, limits, [len(first.get(g) or []) for g, _name in groups])
        rest = [{"method": "PATCH", "path": f"/Groups/{group_ids[g]}",
                 "data": add_members_body([user_ids[p] for p in m[i:i + chunk]])}
                for g, m in members.items() for i in range(chunk, len(m), chunk)]
        _send(client, rest, limits, [chunk] * len(rest))
        lms_users = lms_user_count(lms.base_url, lms.token)
    finally:
        client.close()
    if lms_users != len(users):
        raise common.BenchError(f"seeding the LMS: {lms_users} users in the server, {len(users)} seeded")
    out.update({"users": len(users), "active_users": sum(1 for u in users if u["is_active"]),
                "users_with_manager": with_manager, "manager_levels": len(levels), "groups": len(groups),
                "group_members": sum(len(m) for m in members.values()),
                "largest_group_seeded": max((len(m) for m in members.values()), default=0)})

    # the warehouse's record of those objects now names the server's ids
    with psycopg.connect(db_url) as conn:
        with conn.transaction():
            conn.execute("create temp table seed_ids (kind text, key text, lms_id text) on commit drop")
            with conn.cursor().copy("copy seed_ids (kind, key, lms_id) from stdin") as cp:
                for k, v in user_ids.items():
                    cp.write_row(("user", k, v))
                for k, v in group_ids.items():
                    cp.write_row(("group", k, v))
            out["rewritten_users"] = conn.execute(
                "update sync.applied_users a set lms_id = s.lms_id from seed_ids s "
                "where s.kind = 'user' and a.person_id = s.key").rowcount
            out["rewritten_groups"] = conn.execute(
                "update sync.applied_groups a set lms_id = s.lms_id from seed_ids s "
                "where s.kind = 'group' and a.group_key = s.key").rowcount
        conn.execute("analyze sync.applied_users, sync.applied_groups")
        conn.commit()
    if (out["rewritten_users"], out["rewritten_groups"]) != (len(user_ids), len(group_ids)):
        raise common.BenchError(f"seeding the LMS: ids rewritten {out['rewritten_users']}/{len(user_ids)} users, "
                                f"{out['rewritten_groups']}/{len(group_ids)} groups")
    out["seconds"] = round(time.perf_counter() - t, 2)
    return out


def marts_child(base: dict, env: dict, log: str) -> dict:
    """The stage marts (the reporting tables) as a child, after the apply as in the DAGs; its wall and what it did
    (not in "file → applied": the LMS does not wait for it)."""
    t = time.perf_counter()
    out = common.run_child("bench.bench_provisioning", {**base, "stage": "marts"}, env=env, log_name=f"{log}_marts")
    detail = out["out"] or {}
    return {"wall": round(time.perf_counter() - t, 2), "build": detail.get("build"), "skipped": detail.get("skipped"),
            "dbt_slowest": detail.get("dbt_slowest")}


def measured_apply(res: dict, db_url: str, lms, shards: int, log: str, timeout: float | None) -> dict:
    """The real apply stage (bench_provisioning.run_apply: `shards` children) of the day in `res`, against
    `lms`, timed; then what it did (plan_facts). Its wall is added to res["wall"]["apply"]."""
    env = {**res["env"], "HRLMS_LMS_URL": lms.base_url, "HRLMS_LMS_TOKEN": lms.token,
           "HRLMS_APPLY_SHARDS": str(shards)}
    base = {**res["base"], "shards": shards}
    plan_id = res["plan"]["plan_id"]
    app = run_apply(base, env, plan_id, shards, log, timeout)
    res["marts"] = marts_child(base, env, log)     # the DAGs' marts task, after the apply
    res["wall"]["apply"] = app["wall"]
    res["apply"] = app
    res["file_to_applied"] = sum(res["wall"].values())
    res["facts"] = plan_facts(db_url, plan_id, base["run_key"])
    return res


def apply_rate(out_dir: Path, shards: int) -> dict | None:
    """The normal mode's measured apply throughput at 10k, for the estimate: provisioning.json's
    'apply: all ops/s, whole apply (ours)' at `shards` shard(s) (else any shard count), with churn.json's
    day-2 writes ÷ apply wall as context (few ops: mostly the apply tasks' fixed start-up cost)."""
    def load(name: str) -> dict | None:
        try:
            return json.loads((out_dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    prov, churn = load("provisioning"), load(NAME)
    out: dict | None = None
    if prov:
        rows = [r for r in prov.get("rows", []) if r.get("size") == 10_000
                and r.get("metric") == "apply: all ops/s, whole apply (ours)" and r.get("median")]
        rows.sort(key=lambda r: r.get("label") != f"{shards} shard(s)")
        if rows:
            r = rows[0]
            out = {"ops_per_s": float(r["median"]),
                   "basis": (f"provisioning.json, 10,000 workers, {r.get('label')}: 'apply: all ops/s, whole apply "
                             f"(ours)' median {r['median']:g} ops/s (runs {r.get('runs')}; measured "
                             f"{prov.get('meta', {}).get('started_at', '?')}, commit "
                             f"{(prov.get('meta', {}).get('git') or {}).get('commit', '?')})")}
    if out and churn:
        by = {r.get("metric"): r for r in churn.get("rows", []) if r.get("size") == 10_000}
        w, a = by.get("day 2: LMS writes (ops sent)"), by.get("day2: apply (wall)")
        if w and a and a.get("median"):
            # the part of that apply the throughput does not explain: task start-up, phase-2 waits, big groups
            out["fixed_s"] = round(max(0.0, a["median"] - w["median"] / out["ops_per_s"]), 1)
            out["fixed_basis"] = (f"churn.json (normal mode, {churn.get('meta', {}).get('started_at', '?')}), "
                                  f"10,000 workers: day 2's apply wall {a['median']} s for {w['median']} writes, "
                                  f"minus {w['median']} ÷ {out['ops_per_s']:g} ops/s")
            out["churn_day2_ops_per_s"] = round(w["median"] / a["median"], 2)
    return out


def warehouse_repeat(size: int, folder: Path, rep: int, args) -> dict:
    from hrlms.devenv.scim import LocalScimServer

    tag = f"{size}-wh{churn_tag(args.churn)}-r{rep + 1}"
    work = common.WORK_DIR / NAME / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(common.fresh_database(f"churnwh_{size}"))
        lms = None
        kw = {"db_url": url, "folder": folder, "work": work}
        for label, on, key in (("day1", START, "bench-churn-d1"), ("day2", DAY2, "bench-churn-d2"),
                               ("rerun", DAY2, "bench-churn-d2-rerun"), ("hour", HOUR_LATER, "bench-churn-d2-h1")):
            log = f"churnwh_{tag}_{label}"
            res = warehouse_day(on=on, run_key=key, log=log, dry_run=label == "day1", **kw)
            plan_id = res["plan"]["plan_id"]
            if label == "day1":
                res["facts"] = plan_facts(url, plan_id, key)
                res["seed"] = seed_applied(url, plan_id)     # stands for day 1's apply (nothing is sent)
            else:
                if label == "day2":
                    res["compare"] = compare(url, plan_id, truth_changes(folder, DAY2))
                    res["planned_ops"] = plan_facts(url, plan_id, key)["ops"]
                res["approved"] = approve_held(url, plan_id)     # the breaker's hold: a person's decision
                if label == "day2":   # a fresh LMS holding the objects the day touches (untimed)
                    lms = stack.enter_context(LocalScimServer(work))
                    res["lms_seed"] = seed_lms(url, plan_id, lms, args.seed_members_max)
                    s = res["lms_seed"]
                    common.say(f"    day2: LMS seeded in {s['seconds']:.1f}s: {s['users']:,} users, "
                               f"{s['groups']:,} groups with {s['group_members']:,} members ({s['members']})")
                measured_apply(res, url, lms, args.shards, log, args.apply_timeout)
            out[label] = res
            skipped = [s for s, v in res["skipped"].items() if v]
            det = res["details"]
            cs, scope = det.get("changes") or {}, det.get("scope") or {}
            held = f" HELD (approved): {res['approved']}" if res.get("approved") else ""
            applied = (f"; file→applied {res['file_to_applied']:.1f}s, writes {res['facts']['writes']}, "
                       f"status {res['facts']['status']}" if "file_to_applied" in res else "")
            if res.get("marts"):
                applied += f"; marts after the apply {res['marts']['wall']:.1f}s ({res['marts']['build'] or 'skipped'})"
            common.say(f"    {label}: " + ", ".join(f"{s} {v:.1f}" for s, v in res["wall"].items())
                       + f"; file→plan ready {res['file_to_plan']:.1f}s{applied}; planned ops {res['plan'].get('ops')}{held}; change set "
                       f"{cs.get('people')} people ({'full: ' + str(cs.get('built_because')) if cs.get('full_build') else 'incremental'}, "
                       f"{cs.get('seconds')}s); plan scope {scope.get('mode')} {scope.get('people')} "
                       f"({scope.get('because')}); skipped: {', '.join(skipped) or 'none'}")
        out["lms_users_after"] = lms_user_count(lms.base_url, lms.token) if lms else None
    return out


#: the next scheduled run after day 2's (the hourly schedule): the same files, nothing due for anyone whose
#: start or last day is not reached in that hour — what most of a day's 24 runs cost
HOUR_LATER = datetime.combine(DAY2, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=1)


def warehouse_size(rec: common.Recorder, args, size: int) -> None:
    folder = churn_days(size, args.seed, args.churn)
    common.say(f"[churn] {size:,} workers, {args.churn:.1%} churn, warehouse only + measured apply, "
               f"{args.repeats} repeat(s)")
    results = []
    for rep in range(args.repeats):
        before = common.loadavg()
        results.append(warehouse_repeat(size, folder, rep, args))
        rec.run_load(f"{size} r{rep + 1}", before, common.loadavg())

    def col(fn, results=results):
        return [fn(r) for r in results]

    mode = {"mode": WH_MODE}
    d2, cmp_ = results[0]["day2"], results[0]["day2"]["compare"]
    # the figure first; a lower bound when an apply was stopped by --apply-timeout or halted (ApplyHalted)
    stopped = {lb: [r[lb]["apply"]["failed"] or ("timed out" if r[lb]["apply"]["timed_out"] else None)
                    for r in results if r[lb]["apply"]["failed"] or r[lb]["apply"]["timed_out"]]
               for lb in ("day2", "rerun")}
    rec.add_row(common.row(size, "day 2: HR file → every change applied (measured: plan stages + real apply "
                           "against a scim2-server seeded with the accounts the day touches)",
                           col(lambda r: r["day2"]["file_to_applied"]), digits=1, **mode,
                           **({"lower_bound": True} if stopped["day2"] else {})))
    for lb, why in stopped.items():
        if why:
            rec.note(f"{size:,}: the {lb} apply did not finish (a lower bound): {why}")
    for label in ("day1", "day2", "rerun"):
        for stage in (*WAREHOUSE_STAGES, "apply"):
            if label == "day1" and stage == "apply":
                continue
            what = " (real, against the seeded scim2-server)" if stage == "apply" else ""
            rec.add_row(common.row(size, f"{label}: {stage} (wall){what}",
                                   col(lambda r, lb=label, s=stage: r[lb]["wall"][s]), digits=2, **mode))
            if stage == "transform" and label == "day2":
                rec.add_row(common.row(size, f"{label}: of the transform, the change set (detail.changes.seconds)",
                                       col(lambda r, lb=label: ((r[lb]["details"].get("changes") or {})
                                                                .get("seconds") or 0.0)), digits=2, **mode))
            if stage == "apply" and label != "day1":
                rec.add_row({**common.row(size, f"{label}: stage marts (wall; after the apply, as the DAGs run it; "
                                                "not in the figure: the LMS does not wait for it)",
                                          col(lambda r, lb=label: r[lb]["marts"]["wall"]), digits=2, **mode),
                             "build": results[0][label]["marts"].get("build"),
                             "skipped": results[0][label]["marts"].get("skipped"),
                             "dbt_slowest": results[0][label]["marts"].get("dbt_slowest")})
        setup = " (setup, not the figure)" if label == "day1" else ""
        rec.add_row(common.row(size, f"{label}: HR file → plan ready{setup}",
                               col(lambda r, lb=label: r[lb]["file_to_plan"]), digits=1, **mode))
        if label == "day1":
            rec.add_row(common.row(size, "day1: plan seeded as applied by SQL (stands for apply; not in any figure)",
                                   col(lambda r: r["day1"]["seed"]["seconds"]), digits=1, **mode))
    rec.add_row(common.row(size, "rerun: HR file → every change applied (measured, same scim2-server)",
                           col(lambda r: r["rerun"]["file_to_applied"]), digits=1, **mode))
    share = col(lambda r: r["rerun"]["file_to_applied"] / r["day2"]["file_to_applied"])
    rec.add_row(common.row(size, "rerun ÷ day 2 time (HR file → every change applied)", share, unit="×", digits=2,
                           **mode))
    rec.add_row(common.row(size, "an hour later (the next hourly run, same files): HR file → every change applied",
                           col(lambda r: r["hour"]["file_to_applied"]), digits=1, **mode,
                           stages=", ".join(f"{s} {v:.1f}" for s, v in results[0]["hour"]["wall"].items()),
                           transform=results[0]["hour"]["details"].get("transform_skipped") or "built",
                           writes=results[0]["hour"]["facts"]["writes"] or 0))
    cs = d2["details"].get("changes") or {}
    rec.add_row({"size": size, "metric": "day 2: change set people (transform detail.changes)",
                 "median": cs.get("people"), "runs": col(lambda r: (r["day2"]["details"].get("changes") or {})
                                                         .get("people")), "unit": "people", **mode,
                 "reasons": ", ".join(f"{k} {v:,}" for k, v in sorted((cs.get("reasons") or {}).items())),
                 "build": ("full: " + str(cs.get("built_because"))) if cs.get("full_build") else "incremental"})
    scope = d2["details"].get("scope") or {}
    rec.add_row({"size": size, "metric": "day 2: plan scope people (plan detail.scope)", "median": scope.get("people"),
                 "runs": col(lambda r: (r["day2"]["details"].get("scope") or {}).get("people")), "unit": "people",
                 **mode, "scope": scope.get("mode"), "because": scope.get("because")})
    writes = col(lambda r: r["day2"]["facts"]["writes"] or 0)
    f2 = d2["facts"]
    rec.add_row({"size": size, "metric": "day 2: LMS writes (ops the apply sent)", "median": int(common.median(writes)),
                 "runs": writes, "unit": "writes", **mode,
                 "ops": ", ".join(f"{k} {v:,}" for k, v in sorted(f2["ops"].items())),
                 "members": ", ".join(f"{k} {v:,}" for k, v in sorted(f2["members"].items())),
                 "status": ", ".join(f"{k} {v:,}" for k, v in sorted(f2["status"].items())),
                 "held": f"held by the breaker, approved: {d2['approved']}" if d2.get("approved") else "no"})
    rec.add_row(common.row(size, "day 2: apply — LMS writes per second (writes ÷ apply wall)",
                           col(lambda r: (r["day2"]["facts"]["writes"] or 0) / r["day2"]["wall"]["apply"]),
                           unit="writes/s", digits=1, **mode))
    seed = d2["lms_seed"]
    rec.add_row({"size": size, "metric": "day 2: LMS seeded before the timed apply (users; not in any figure)",
                 "median": seed["users"], "runs": col(lambda r: r["day2"]["lms_seed"]["users"]), "unit": "users",
                 **mode, "seconds": seed["seconds"], "groups": seed["groups"],
                 "group members": f"{seed['group_members']:,} ({seed['members']}; the warehouse holds "
                                  f"{seed['group_memberships_applied']:,} in those groups)",
                 "plan people": seed["plan_people"]})
    rec.add_row({"size": size, "metric": "day 2: people changed (generator truth)", "median": cmp_["truth_people"],
                 "runs": [], "unit": "people", **mode})
    rec.add_row({"size": size, "metric": "day 2: people with a user op", "median": cmp_["user_op_people"],
                 "runs": [], "unit": "people", **mode, "both": cmp_["both"],
                 "user op, no truth change": cmp_["n_ops_not_in_truth"],
                 "truth change, no user op": cmp_["n_truth_without_op"]})
    rerun_writes = col(lambda r: r["rerun"]["facts"]["writes"] or 0)
    rerun_ops = col(lambda r: sum(r["rerun"]["facts"]["ops"].values()))
    rec.add_row({"size": size, "metric": "rerun: LMS writes", "median": max(rerun_writes), "runs": rerun_writes,
                 "unit": "writes", **mode, "planned ops": max(rerun_ops)})
    skipped = col(lambda r: sum(1 for s in ("staging", "gate", "transform") if r["rerun"]["skipped"].get(s)))
    rec.add_row({"size": size, "metric": "rerun: warehouse stages skipped by the build ledger (of staging, gate, "
                 "transform)", "median": common.median(skipped), "runs": skipped, "unit": "stages", **mode,
                 "stages": ", ".join(s for s, v in results[0]["rerun"]["skipped"].items() if v) or "none"})
    rate = apply_rate(Path(args.out), args.shards)
    if rate:     # the earlier estimate, for comparison with the measurement (cheap: read from a file)
        est = [sum(r["day2"]["planned_ops"].values()) / rate["ops_per_s"] + rate.get("fixed_s", 0.0)
               for r in results]
        rec.add_row(common.row(size, "day 2: LMS apply — the former ESTIMATE, for comparison (planned ops ÷ "
                               "measured ops/s at 10k + fixed part)", est, digits=1, **mode, basis=rate["basis"]))
    rec.set_profile({"size": size, "mode": WH_MODE, "churn": args.churn,
                     "truth_changes_day2": cmp_["per_kind"], "update_fields": cmp_["update_fields"],
                     "ops_not_in_truth_sample": cmp_["ops_not_in_truth"], "day2_plan": d2["plan"],
                     "day2_details": d2["details"], "rerun_details": results[0]["rerun"]["details"],
                     "day2_apply_facts": d2["facts"], "rerun_apply_facts": results[0]["rerun"]["facts"],
                     "lms_seed": seed, "day1_seed": results[0]["day1"]["seed"],
                     "day2_change_set_statements": sorted(d2.get("changes_profile") or [],
                                                          key=lambda x: -x["seconds"])[:12],
                     "lms_users_after": results[0]["lms_users_after"],
                     "rerun_skipped": results[0]["rerun"]["skipped"], "apply_rate": rate})
    rec.check(f"rerun of day 2 at {size:,} workers (measured apply): LMS writes", "0", max(rerun_writes), "writes",
              max(rerun_writes) == 0, size=size)
    rec.check(f"rerun ÷ day 2 time at {size:,} workers (HR file → every change applied)", "≤ 0.25×",
              round(common.median(share), 2), "×", common.median(share) <= 0.25, size=size)
    not_applied = {k: v for k, v in f2["status"].items() if k != "applied"}
    if not_applied:
        rec.note(f"{size:,}: not every op of day 2's plan was applied: {not_applied} (see profile.day2_apply_facts)")
    if size == 1_000_000:
        v = common.median(col(lambda r: r["day2"]["file_to_applied"]))
        rec.check(f"day 2 HR file → every change applied at 1M workers, {args.churn:.1%} churn (measured: plan "
                  "stages + real apply against a seeded scim2-server)", "≤ 120 s", round(v, 1), "s", v <= 120,
                  size=size, binding=args.churn == DEFAULT_CHURN, lower_bound=bool(stopped["day2"]))
    if d2.get("approved"):
        rec.note(f"{size:,}: day 2's plan was held by the breaker ({d2['approved']}): in production nothing is "
                 "applied until a person approves it. Here it was approved by the benchmark (breaker.decide, as the "
                 "DAG's approve_plan does: exactly that plan's ops), outside the timer, before the timed apply.")
    if scope.get("mode") != "restricted":
        rec.note(f"{size:,}: day 2's plan was not restricted: scope {scope.get('mode')} because "
                 f"'{scope.get('because')}' (change set: built_because '{cs.get('built_because')}').")
    rec.save()


def warehouse_notes(rec: common.Recorder, shards: int, churn: float, members_max: int) -> None:
    rec.note("WAREHOUSE ONLY for day 1, MEASURED apply for day 2 and its rerun. Each repeat: a fresh database; "
             "day 1 through ingest → staging → gate → transform → plan (each stage a fresh interpreter, as the "
             "normal mode), then, instead of apply, day 1's plan is recorded as applied by SQL (sync.applied_users, "
             "applied_groups, applied_memberships from the plan's ops, set-based; fake unique LMS ids; ops and plan "
             f"'applied'; then ANALYZE). Day 2 ({churn:.1%} churn) through the same five stages (timed); then, "
             "outside the timer, a fresh scim2-server is started and seeded (below), then the real apply stage runs "
             f"against it, timed: {shards} apply children in parallel (HRLMS_APPLY_SHARDS={shards}, the DAG's "
             "mapped tasks), each a fresh interpreter. Then day 2 again under a new run key, its apply against the "
             "same server.")
    rec.note("Seeding the LMS for the measured apply (not timed): the accounts day 2's plan touches — the person "
             "of every user op and set_manager op, the managers its set_manager ops set, the members of its "
             "membership ops, and the managers those accounts hold as applied — created through /Bulk from their "
             "sync.applied_users rows (what the warehouse believes after day 1: attributes, active flag, manager; "
             "managers first so each carries its manager's new id); the groups of the plan's group and membership "
             f"ops that we hold (sync.applied_groups), with their applied members when those number at most "
             f"{members_max:,} (then those members' accounts are seeded too), else with only the members among the "
             "seeded accounts (the group objects then hold fewer members than the warehouse believes: a PATCH into "
             "them costs scim2-server less than into the full group). Then sync.applied_users / applied_groups "
             "rows of those objects get the server's ids (one UPDATE from a temp table each) and ANALYZE. So the "
             "apply sends exactly what it would send to an LMS in the state the warehouse believes, every request "
             "finds its target, and the rows it touches are those of the real apply; the accounts not touched keep "
             "their fake ids and are never addressed (a request to one would fail: the op status row shows none).")
    rec.note("'HR file → every change applied' = sum of the walls of the stage children ingest, staging, gate, "
             "transform, plan and the apply children (interpreter start and imports included; no Airflow "
             "scheduling latency, no export/completions/report). The LMS is scim2-server: one Python process, "
             "in memory, answering HTTP/1.0 (a new connection per request); a production LMS may be slower or "
             "faster per request. A plan held by the breaker (more than HRLMS_BREAKER_MAX_COUNT = 500 "
             "deactivations) is approved by the benchmark outside the timer (breaker.decide, as approve_plan).")
    rec.note("The rerun's apply runs against the same server: 0 writes means the applied state after day 2's real "
             "apply matches the desired state, and that day 1's SQL seeding left nothing for the rerun to redo.")


# -- main ------------------------------------------------------------------------------------------------

def normal_notes(rec: common.Recorder, shards: int, limit: int) -> None:
    rec.note("Each repeat: a fresh database and scim2-server; day 1 provisioned through the whole pipeline "
             "(setup), then day 2 (0.5% churn) and day 2 again under a new run key. 'HR file → LMS' = sum of "
             "the walls of the stage children ingest, staging, gate, transform, plan, apply (each a fresh "
             f"interpreter; apply = {shards} shard processes in parallel); no Airflow scheduling latency, "
             "no export/completions/report.")
    rec.note("Synthetic data without seeded defects (Messiness.clean()), so every difference between the days is "
             "churn: the generator's truth file lists each change (kind, person). 'Writes' = ops the apply sent "
             "(audit stage 'apply' detail.writes); membership ops are per group (one PATCH adds/removes several "
             "people). A future hire (starts in 1–30 days) gets no account yet and a future-dated termination "
             "changes nothing the LMS holds, so some truth changes have no user op by design; see per_kind.")
    rec.note(f"Sizes above {limit:,} workers (1M, the target's size) run in the warehouse-only mode "
             f"({WH_NAME}.json: day 1's applied state seeded by SQL, apply estimated): scim2-server (one Python "
             "process, in memory, ~200–500 users/s) would take about an hour for day 1 alone at 1M.")
    if os.environ.get("HRLMS_LMS_READ_TIMEOUT"):
        rec.note(f"Run with HRLMS_LMS_READ_TIMEOUT={os.environ['HRLMS_LMS_READ_TIMEOUT']} s (default 30 s): with the "
                 "default, day 1 at 10k left 335 membership ops in escrow (a /Bulk of membership PATCHes into "
                 "groups of thousands takes scim2-server longer than 30 s on this loaded machine; the client "
                 "times out and retries), day 2 re-planned them, they failed again and apply halted "
                 "(ApplyHalted: 381 of 424 attempted ops failed).")


def normal_size(rec: common.Recorder, args, size: int) -> None:
    folder = churn_days(size, args.seed, args.churn)
    common.say(f"[churn] {size:,} workers, {args.churn:.1%} churn, {args.repeats} repeat(s)")
    results = []
    for rep in range(args.repeats):
        before = common.loadavg()
        res = one_repeat(size, folder, rep, args.shards, churn_tag(args.churn))
        rec.run_load(f"{size} r{rep + 1}", before, common.loadavg())
        results.append(res)

    def col(fn, results=results):
        return [fn(r) for r in results]

    for label in ("day1", "day2", "rerun"):
        for stage in ("ingest", "staging", "gate", "transform", "plan", "apply"):
            rec.add_row(common.row(size, f"{label}: {stage} (wall)", col(lambda r, lb=label, s=stage: r[lb]["wall"][s]),
                                   digits=2))
        rec.add_row(common.row(size, f"{label}: HR file → LMS" + (" (setup, not the figure)" if label == "day1" else ""),
                               col(lambda r, lb=label: r[lb]["file_to_lms"]), digits=1))
    share = col(lambda r: r["rerun"]["file_to_lms"] / r["day2"]["file_to_lms"])
    rec.add_row(common.row(size, "rerun ÷ day 2 time", share, unit="×", digits=2))
    d2 = results[0]["day2"]["facts"]
    cmp_ = results[0]["compare"]
    rec.add_row({"size": size, "metric": "day 2: LMS writes (ops sent)", "median": d2["writes"],
                 "runs": col(lambda r: r["day2"]["facts"]["writes"]), "unit": "writes",
                 "ops": ", ".join(f"{k} {v:,}" for k, v in sorted(d2["ops"].items())),
                 "members": ", ".join(f"{k} {v:,}" for k, v in sorted(d2["members"].items()))})
    rec.add_row({"size": size, "metric": "day 2: people changed (generator truth)", "median": cmp_["truth_people"],
                 "runs": [], "unit": "people"})
    rec.add_row({"size": size, "metric": "day 2: people with a user op", "median": cmp_["user_op_people"],
                 "runs": [], "unit": "people", "both": cmp_["both"],
                 "user op, no truth change": cmp_["n_ops_not_in_truth"],
                 "truth change, no user op": cmp_["n_truth_without_op"]})
    rec.add_row({"size": size, "metric": "rerun: LMS writes", "median": results[0]["rerun"]["facts"]["writes"] or 0,
                 "runs": col(lambda r: r["rerun"]["facts"]["writes"] or 0), "unit": "writes",
                 "ops": ", ".join(f"{k} {v:,}" for k, v in sorted(results[0]["rerun"]["facts"]["ops"].items()))})
    rec.doc.setdefault("profile", {})
    rec.set_profile({"size": size, "truth_changes_day2": results[0]["compare"]["per_kind"],
                     "update_fields": cmp_["update_fields"], "ops_not_in_truth_sample": cmp_["ops_not_in_truth"],
                     "day2_lms_requests": d2.get("lms_requests"), "lms_users_after": results[0]["lms_users"]})
    rerun_writes = max(r["rerun"]["facts"]["writes"] or 0 for r in results)
    rec.check(f"rerun of day 2 at {size:,} workers: LMS writes", "0", rerun_writes, "writes", rerun_writes == 0,
              size=size)
    rec.check(f"rerun ÷ day 2 time at {size:,} workers", "≤ 0.25×", round(common.median(share), 2), "×",
              common.median(share) <= 0.25, size=size)
    if size == 1_000_000:
        v = common.median(col(lambda r: r["day2"]["file_to_lms"]))
        rec.check("day 2 HR file → LMS at 1M workers", "≤ 120 s", round(v, 1), "s", v <= 120, size=size)
    rec.save()


def main(argv: list[str] | None = None) -> int:
    def extra(ap) -> None:
        ap.add_argument("--shards", type=int, default=2, help="apply shards (default 2, as the DAG)")
        ap.add_argument("--churn", type=float, default=DEFAULT_CHURN,
                        help=f"day 2's churn: share of the rows changed (hrlms.synth Churn.total; default "
                             f"{DEFAULT_CHURN}); another value writes its own result files (e.g. "
                             f"{WH_NAME}{churn_tag(0.05)}.json for 0.05)")
        ap.add_argument("--warehouse-only", action="store_true",
                        help="every size in the warehouse-only mode (no LMS for day 1: its applied state seeded "
                             "by SQL; day 2 applied for real to a scim2-server seeded with the accounts it "
                             f"touches); results in <out>/{WH_NAME}[{churn_tag(0.05)}].json")
        ap.add_argument("--lms-max-size", type=common.parse_sizes, default=[LMS_MAX_SIZE],
                        help=f"sizes above this run warehouse-only (default {LMS_MAX_SIZE:,}: scim2-server cannot "
                             "hold more in reasonable time)")
        ap.add_argument("--seed-members-max", type=int, default=SEED_MEMBERS_MAX,
                        help="warehouse-only mode: seed the groups day 2 touches with all their members when "
                             f"those number at most this many (default {SEED_MEMBERS_MAX:,}), else with the members "
                             "among the seeded accounts only")
        ap.add_argument("--apply-timeout", type=float, default=3600.0,
                        help="warehouse-only mode: stop a measured apply after this many seconds (default 3600)")

    args = common.parse_args("python -m bench.bench_churn", __doc__.split("\n")[0], argv,
                             default_sizes="10000,100000", extra=extra)
    if args.child:
        spec = common.child_spec(args)
        if spec["stage"] == "apply_dry_run":
            return _dry_run_child(spec)
        from bench.bench_provisioning import child

        return child(spec)
    if not 0 < args.churn < 1:
        raise SystemExit("--churn must be between 0 and 1 (a share of the rows)")
    limit = args.lms_max_size[0]
    wh_sizes = sorted(s for s in args.sizes if args.warehouse_only or s > limit)
    lms_sizes = sorted(s for s in args.sizes if s not in wh_sizes)
    server = common.server_info()
    ctag = churn_tag(args.churn)
    recs = []
    if lms_sizes:
        rec = common.Recorder(argparse.Namespace(**{**vars(args), "sizes": lms_sizes}), NAME + ctag,
                              titled(TITLE, args.churn), TARGET)
        rec.doc["meta"]["server"] = server
        rec.doc["meta"]["churn"] = args.churn
        normal_notes(rec, args.shards, limit)
        for size in lms_sizes:
            normal_size(rec, args, size)
        recs.append(rec)
    if wh_sizes:
        rec = common.Recorder(argparse.Namespace(**{**vars(args), "sizes": wh_sizes}), WH_NAME + ctag,
                              titled(WH_TITLE, args.churn), TARGET)
        rec.doc["meta"]["server"] = server
        rec.doc["meta"]["churn"] = args.churn
        rec.doc["meta"]["mode"] = ("warehouse only for day 1 (applied state seeded by SQL); day 2 and its rerun "
                                   "applied for real to a seeded scim2-server "
                                   f"({'--warehouse-only' if args.warehouse_only else f'sizes above {limit:,}'})")
        warehouse_notes(rec, args.shards, args.churn, args.seed_members_max)
        for size in wh_sizes:
            warehouse_size(rec, args, size)
        recs.append(rec)
    for rec in recs:
        common.say(f"[churn] wrote {rec.save(final=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
