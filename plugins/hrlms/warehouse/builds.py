"""The build ledger: skip a warehouse stage whose inputs have not changed since it last completed.

A rerun of a day with no change (the same snapshot, rules, completions, code) need not re-parse, re-gate
and rebuild a million workers: staging, gate and transform each record the inputs they were built from in
`audit.builds`, one row per stage = what the warehouse holds now. Before doing its work a stage compares
its inputs with that row; equal inputs and state 'built' mean the work would produce what is already
there, and the stage returns the recorded result. Otherwise it writes 'building' first (a crash leaves
it there: never skipped), works, then 'built'.

Inputs are what the stage's output depends on, as small values (ids, counts, checksums), never data.
Any dbt invocation outside these stages (a manual `dbt build`, `--empty` in the tests) forgets the
ledger, since it may have changed the relations (hrlms.transform.dbt.run_dbt). HRLMS_REBUILD=always
turns skipping off.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from psycopg.types.json import Jsonb

STAGES = ("staging", "gate", "transform", "marts")


def files_digest(paths: Iterable[Path], root: Path) -> str:
    """sha256 over the files' names (relative to `root` where they are under it) and contents."""
    h = hashlib.sha256()
    for p in sorted(paths):
        name = p.relative_to(root) if p.is_relative_to(root) else p.name
        h.update(str(name).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def snapshot_keys(conn, snapshots: dict[str, int]) -> dict[str, Any]:
    """The run's snapshots as ledger inputs: id, checksum and load time (a recreated database that hands
    out the same ids again does not pass for the one that was built)."""
    ids = {v: k for k, v in snapshots.items() if isinstance(v, int) and k != "rows"}
    rows = conn.execute("select snapshot_id, checksum, loaded_at::text from raw_hris.snapshots "
                        "where snapshot_id = any(%s)", (list(ids),)).fetchall()
    found = {r[0]: [r[0], r[1], r[2]] for r in rows}
    return {entity: found.get(sid, [sid]) for sid, entity in sorted(ids.items(), key=lambda kv: kv[1])}


def skipping_enabled() -> bool:
    value = os.environ.get("HRLMS_REBUILD", "changed").strip().lower()
    if value not in ("changed", "always"):
        raise ValueError(f"HRLMS_REBUILD must be 'changed' or 'always', not {value!r}")
    return value == "changed"


def recorded(conn, stage: str) -> dict[str, Any] | None:
    """The ledger's row of `stage` (inputs, state, run_key, detail, finished_at) as it stands, or None: read it before
    unchanged() marks the stage 'building' with the new inputs."""
    row = conn.execute("select inputs, state, run_key, detail, finished_at from audit.builds where stage = %s",
                       (stage,)).fetchone()
    return dict(zip(("inputs", "state", "run_key", "detail", "finished_at"), row)) if row else None


def built_from(previous: dict[str, Any] | None, key: str, value: Any) -> bool:
    """The recorded build (recorded()) completed with input `key` = `value`, and skipping is on (HRLMS_REBUILD
    =always makes every stage do all its work)."""
    return (skipping_enabled() and previous is not None and previous["state"] == "built"
            and previous["inputs"].get(key) == jsonable(value))


def unchanged(conn, stage: str, inputs: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the recorded run of `stage`, "") when its last build completed from the same inputs, else
    (None, why the stage must do its work)."""
    if not skipping_enabled():
        return None, "HRLMS_REBUILD=always"
    row = recorded(conn, stage)
    if not row:
        return None, "no completed build recorded"
    if row["state"] != "built":
        return None, f"the build of run {row['run_key']} did not complete"
    now = jsonable(inputs)
    changed = sorted(k for k in set(now) | set(row["inputs"]) if now.get(k) != row["inputs"].get(k))
    if changed:
        return None, "changed since the last build: " + ", ".join(changed)
    return {"run_key": row["run_key"], "detail": row["detail"], "finished_at": row["finished_at"]}, ""


def started(conn, stage: str, run_key: str, inputs: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(
            """insert into audit.builds (stage, inputs, state, run_key) values (%s, %s, 'building', %s)
               on conflict (stage) do update set inputs = excluded.inputs, state = 'building',
                   run_key = excluded.run_key, detail = '{}', started_at = clock_timestamp(), finished_at = null""",
            (stage, Jsonb(jsonable(inputs)), run_key))


def finished(conn, stage: str, run_key: str, detail: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(
            """update audit.builds set state = 'built', detail = %s, finished_at = clock_timestamp()
               where stage = %s and run_key = %s and state = 'building'""",
            (Jsonb(jsonable(detail)), stage, run_key))


def forget(conn, stages: Iterable[str] = STAGES) -> None:
    with conn.transaction():
        conn.execute("delete from audit.builds where stage = any(%s)", (list(stages),))


def jsonable(value: Any) -> Any:
    """The value as it reads back from jsonb (tuples -> lists, dates -> text) so comparisons hold."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))
