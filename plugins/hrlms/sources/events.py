"""HR change events: landed in raw_hris, then a workers snapshot = the last good HR file + the events after it.

An HR system (or a relay for webhooks) posts an asset event on :data:`ASSET_URI` to Airflow's REST API
(`POST /api/v2/assets/events`), the change in the event's ``extra``::

    {"event_id": "wd-2026-000123", "hr_timestamp": "2026-12-03T09:15:00+00:00", "source": "workday",
     "records": [{"Employee_ID": "P000123", "Job_Title": "Data Engineer", "Org_Unit": "ENG-2"}]}

Records use the HR export's own column names (the workers mapping's ``columns``) and carry the person's id
and the fields that changed (a hire carries every required field). The ``hrlms_hr_events`` DAG, scheduled
on the asset, lands them (:func:`land`: one row per event id, so the same id twice is landed once) and
builds the snapshot the run stages, gates and builds like any other (:func:`overlay`): the last HR file
the warehouse was built from, with each person named by an event since that file was extracted rebuilt
from their file line and the events' fields in HR-timestamp order (an older event arriving late never
rolls back a newer one's field). The daily file stays the reference: events HR made before a new file was
extracted are the file's business (it wins; :func:`disagreements` lists where it says otherwise), events
after it are laid over it again. A record for a person no file or event has hired yet, without every
required field (e.g. a leaver), waits until they are hired (:attr:`Overlay.pending`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hrlms.sources.mapping import WORKER_FIELDS, EntityMapping
from hrlms.warehouse.load import SnapshotMeta, _insert_snapshot

#: The asset the HR system posts events on (the DAG's schedule).
ASSET_URI = "hrlms://hr/worker-changes"
ASSET_NAME = "hr_worker_changes"
#: Records one event may carry (a bigger change is a file, not an event).
MAX_RECORDS = 10_000
#: Keys of the extra besides the change: Airflow adds from_rest_api.
_KNOWN_KEYS = {"event_id", "hr_timestamp", "records", "source", "from_rest_api"}
_COLS = WORKER_FIELDS


@dataclass(frozen=True)
class Received:
    """One asset event as Airflow hands it to the task."""
    extra: Mapping[str, Any]
    airflow_event_id: int | None = None
    airflow_ts: datetime | None = None


def from_airflow(events: Iterable[Any]) -> list[Received]:
    """Airflow's AssetEventResult objects (triggering_asset_events / inlet_events) → :class:`Received`."""
    return [Received(dict(getattr(e, "extra", None) or {}), getattr(e, "id", None), getattr(e, "timestamp", None))
            for e in events]


@dataclass
class Landed:
    received: int = 0
    new: int = 0
    duplicates: int = 0
    conflicts: list[str] = field(default_factory=list)       # ids whose payload differed from the landed one
    rejected: list[dict[str, Any]] = field(default_factory=list)   # {event_id, record, field, problem}
    records: int = 0                                         # usable records among the new events

    def summary(self) -> dict[str, Any]:
        return {"received": self.received, "new": self.new, "duplicates": self.duplicates,
                "conflicts": self.conflicts[:50], "records": self.records, "rejected": self.rejected[:200],
                "rejected_count": len(self.rejected)}


def _ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else None


def _event_problem(extra: Mapping[str, Any]) -> str | None:
    if not isinstance(extra.get("event_id"), str) or not extra["event_id"].strip() or len(extra["event_id"]) > 200:
        return "event_id: expected a non-empty string (≤ 200 characters), the HR system's id of the change"
    if _ts(extra.get("hr_timestamp")) is None:
        return "hr_timestamp: expected an ISO 8601 timestamp with a time zone, e.g. 2026-12-03T09:15:00+00:00"
    records = extra.get("records")
    if not isinstance(records, list) or not records:
        return "records: expected a non-empty list of worker records"
    if len(records) > MAX_RECORDS:
        return f"records: {len(records)} records in one event (at most {MAX_RECORDS}; send a file instead)"
    return None


def parse_record(rec: Any, em: EntityMapping) -> tuple[str | None, dict[str, str | None], str | None]:
    """(person_id, {canonical: text}, problem) of one event record in the export's own columns."""
    if not isinstance(rec, dict):
        return None, {}, "expected a JSON object (one worker record)"
    by_source = {src: canonical for canonical, src in em.columns.items()}
    out: dict[str, str | None] = {}
    for key, value in rec.items():
        canonical = by_source.get(key)
        if canonical is None:
            return None, {}, (f"field {key}: not a column of the workers mapping "
                              f"(known: {', '.join(sorted(by_source))})")
        if isinstance(value, (dict, list)):
            return None, {}, f"field {key} ({canonical}): expected a single value"
        out[canonical] = None if value is None else str(value)
    person = (out.get("person_id") or "").strip()
    if not person:
        src = em.columns["person_id"]
        return None, {}, f"field {src} (person_id): missing — every record names the person it changes"
    return person, out, None


def land(conn: psycopg.Connection, received: Iterable[Received], em: EntityMapping, run_key: str | None = None) -> Landed:
    """Store the events in raw_hris.hr_events / hr_event_records (one transaction; idempotent per event id).

    A malformed event is landed with its problem (kept for audit, never applied); a malformed record is
    landed with its problem and the event's other records apply."""
    res = Landed()
    with conn.transaction():
        for ev in received:
            res.received += 1
            extra = {k: v for k, v in dict(ev.extra).items() if k != "from_rest_api"}
            sha = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()
            problem = _event_problem(extra)
            event_id = (str(extra["event_id"]).strip() if isinstance(extra.get("event_id"), str)
                        and extra["event_id"].strip() and len(extra["event_id"]) <= 200
                        else f"airflow-{ev.airflow_event_id}")
            hr_ts = _ts(extra.get("hr_timestamp")) if problem is None else None
            records = extra.get("records") if problem is None else []
            row = conn.execute(
                """insert into raw_hris.hr_events (event_id, hr_ts, source, airflow_event_id, airflow_ts, payload_sha,
                                                   record_count, problem, landed_by)
                   values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict (event_id) do nothing returning event_id""",
                (event_id, hr_ts, str(extra.get("source") or "")[:100] or None, ev.airflow_event_id, ev.airflow_ts,
                 sha, len(records or []), problem, run_key)).fetchone()
            if row is None:
                same = conn.execute("select payload_sha = %s from raw_hris.hr_events where event_id = %s",
                                    (sha, event_id)).fetchone()[0]
                if same:
                    res.duplicates += 1
                else:
                    res.conflicts.append(event_id)
                continue
            res.new += 1
            if problem is not None:
                res.rejected.append({"event_id": event_id, "record": None, "problem": problem})
                continue
            for no, rec in enumerate(records, start=1):
                person, fields, why = parse_record(rec, em)
                conn.execute(
                    """insert into raw_hris.hr_event_records (event_id, record_no, person_id, hr_ts, fields, problem)
                       values (%s, %s, %s, %s, %s, %s)""", (event_id, no, person, hr_ts, Jsonb(fields), why))
                if why:
                    res.rejected.append({"event_id": event_id, "record": no, "problem": why})
                else:
                    res.records += 1
    return res


def older_than_file(conn: psycopg.Connection, run_key: str, file_snapshot_id: int) -> list[str]:
    """The events run `run_key` landed that HR made before the file was extracted: the file is their reference
    (they are kept, and not laid over it)."""
    return [r[0] for r in conn.execute(
        """select e.event_id from raw_hris.hr_events e, raw_hris.snapshots s
           where e.landed_by = %s and e.problem is null and s.snapshot_id = %s and e.hr_ts <= s.extracted_at
           order by e.hr_ts""", (run_key, file_snapshot_id))]


def file_base(conn: psycopg.Connection, snapshot_id: int) -> int:
    """The HR file (or API extract) snapshot an event-built snapshot starts from (itself for a file)."""
    row = conn.execute("select base_snapshot_id from raw_hris.snapshots where snapshot_id = %s",
                       (snapshot_id,)).fetchone()
    return int(row[0]) if row and row[0] is not None else snapshot_id


def has_events(conn: psycopg.Connection) -> bool:
    return conn.execute("select exists (select 1 from raw_hris.hr_event_records)").fetchone()[0]


@dataclass
class Overlay:
    snapshot_id: int             # the snapshot to stage: the file's, or one built from it and the events
    base_snapshot_id: int        # the HR file's snapshot
    events: int = 0              # events with a record laid over the file
    people: int = 0              # people whose line comes from events
    pending: list[dict[str, Any]] = field(default_factory=list)   # records waiting for the person's hire
    reused: bool = False         # the same snapshot was built before (a rerun)

    def summary(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "base_snapshot_id": self.base_snapshot_id, "events": self.events,
                "people": self.people, "pending": self.pending[:200], "pending_count": len(self.pending),
                "reused": self.reused}


def _folded(conn: psycopg.Connection, after: datetime, until: datetime | None = None
            ) -> dict[str, tuple[dict[str, str | None], list[str], datetime]]:
    """person → (their events' fields folded in HR-timestamp order, event ids, last HR timestamp), for the
    usable records with after < hr_ts (≤ until)."""
    rows = conn.execute(
        """select r.person_id, r.fields, r.event_id, r.hr_ts
           from raw_hris.hr_event_records r join raw_hris.hr_events e using (event_id)
           where r.problem is null and e.problem is null and r.hr_ts > %s and (%s::timestamptz is null or r.hr_ts <= %s)
           order by r.person_id, r.hr_ts, e.received_at, r.event_id, r.record_no""", (after, until, until)).fetchall()
    out: dict[str, tuple[dict[str, str | None], list[str], datetime]] = {}
    for person, fields, event_id, hr_ts in rows:
        merged, ids, _ = out.get(person, ({}, [], hr_ts))
        merged.update(fields)
        if event_id not in ids:
            ids.append(event_id)
        out[person] = (merged, ids, hr_ts)
    return out


def _base_lines(conn: psycopg.Connection, snapshot_id: int, people: list[str]) -> dict[str, list[dict[str, Any]]]:
    """person → their lines in the snapshot (the columns, and _line_no), in line order."""
    out: dict[str, list[dict[str, Any]]] = {}
    cur = conn.execute(f"select {', '.join(_COLS)}, _line_no from raw_hris.workers "
                       f"where _snapshot_id = %s and nullif(btrim(person_id), '') = any(%s) order by _line_no",
                       (snapshot_id, people))
    for row in cur:
        line = dict(zip((*_COLS, "_line_no"), row, strict=True))
        out.setdefault((line["person_id"] or "").strip(), []).append(line)
    return out


def overlay(conn: psycopg.Connection, base_snapshot_id: int, em: EntityMapping, logical_date: date) -> Overlay:
    """The workers snapshot for a run: the HR file `base_snapshot_id` (an event-built snapshot means its file)
    with the events HR made after the file was extracted laid over it. Returns the file itself when no event
    applies; reuses a snapshot built before from the same lines (a rerun); one transaction."""
    base = file_base(conn, base_snapshot_id)
    meta = conn.execute("select checksum, extracted_at, mapping_name, hints, source_columns from raw_hris.snapshots "
                        "where snapshot_id = %s", (base,)).fetchone()
    if meta is None:
        raise ValueError(f"snapshot {base} is not in raw_hris.snapshots")
    checksum, extracted_at, mapping_name, hints, source_columns = meta
    res = Overlay(snapshot_id=base, base_snapshot_id=base)
    folded = _folded(conn, extracted_at)
    if not folded:
        return res
    on_file = _base_lines(conn, base, sorted(folded))
    # (person, line, event ids, the file line it replaces: 0 when the person has none)
    lines: list[tuple[str, dict[str, Any], list[str], int]] = []
    for person in sorted(folded):
        fields, ids, _ = folded[person]
        if person in on_file:
            for line in on_file[person]:
                lines.append((person, {c: line[c] for c in _COLS} | fields, ids, line["_line_no"]))
        else:
            missing = [em.columns[c] for c in em.required if not (fields.get(c) or "").strip()]
            if missing:
                res.pending.append({"person_id": person, "event_ids": ids,
                                    "why": f"not hired yet: no HR file or event has given {', '.join(missing)}"})
                continue
            lines.append((person, {c: fields.get(c) for c in _COLS}, ids, 0))
    if not lines:
        return res
    res.events = len({i for _, _, ids, _ in lines for i in ids})
    res.people = len({p for p, _, _, _ in lines})
    digest = hashlib.sha256(checksum.encode())
    for person, line, _, _ in lines:
        digest.update(json.dumps([person, [line[c] for c in _COLS]]).encode())
    derived_sum = "events:" + digest.hexdigest()
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.events.overlay'))")
        row = conn.execute("select snapshot_id, pruned_at is not null from raw_hris.snapshots "
                           "where entity = 'workers' and checksum = %s", (derived_sum,)).fetchone()
        if row is not None and not row[1]:
            res.snapshot_id, res.reused = int(row[0]), True
            return res
        if row is not None:        # built before, its lines pruned since: write them again under its id
            sid = int(row[0])
            conn.execute("update raw_hris.snapshots set pruned_at = null where snapshot_id = %s", (sid,))
            conn.execute("delete from raw_hris.hr_event_lines where snapshot_id = %s", (sid,))   # written again below
        else:
            sid = _insert_snapshot(conn, SnapshotMeta(
                "workers", "event", f"{ASSET_URI} (events after snapshot {base})", derived_sum, mapping_name, hints,
                source_columns, logical_date, max(folded[p][2] for p, _, _, _ in lines)))
        # its raw lines are the event lines; the file's other lines are read through raw_hris.worker_lines
        conn.execute("update raw_hris.snapshots set base_snapshot_id = %s, lines_over_base = true where snapshot_id = %s",
                     (base, sid))
        cols = ", ".join(_COLS)
        base_rows, last = conn.execute(
            "select row_count, (select max(_line_no) from raw_hris.workers where _snapshot_id = %s) "
            "from raw_hris.snapshots where snapshot_id = %s", (base, base)).fetchone()
        first = (last or 1) + 1
        with conn.cursor() as cur:
            with cur.copy(f"copy raw_hris.workers (_snapshot_id, _line_no, {cols}) from stdin") as cp:
                for i, (_, line, _, _) in enumerate(lines):
                    cp.write_row((sid, first + i, *(line[c] for c in _COLS)))
            with cur.copy("copy raw_hris.hr_event_lines (snapshot_id, line_no, person_id, event_ids, file_line_no) "
                          "from stdin") as cp:
                for i, (person, _, ids, file_line) in enumerate(lines):
                    cp.write_row((sid, first + i, person, ids, file_line))
        # (no analyze: a few lines added to the table change none of its statistics)
        replaced = sum(1 for _, _, _, file_line in lines if file_line > 0)
        conn.execute("update raw_hris.snapshots set row_count = %s where snapshot_id = %s",
                     (base_rows - replaced + len(lines), sid))
    res.snapshot_id = sid
    return res


def prune(conn: psycopg.Connection, keep: Iterable[int]) -> int:
    """Delete the raw lines of event-built snapshots other than `keep` (the events themselves stay: they are
    the record of what arrived; such a snapshot can be built again from them). Returns the snapshots pruned."""
    ids = [r[0] for r in conn.execute(
        "select snapshot_id from raw_hris.snapshots where source_kind = 'event' and pruned_at is null "
        "and snapshot_id <> all(%s)", (list(keep),))]
    if ids:
        with conn.transaction():
            conn.execute("delete from raw_hris.workers where _snapshot_id = any(%s)", (ids,))
            conn.execute("update raw_hris.snapshots set pruned_at = clock_timestamp() where snapshot_id = any(%s)",
                         (ids,))
    return len(ids)


def disagreements(conn: psycopg.Connection, file_snapshot_id: int, previous_snapshot_id: int | None,
                  limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
    """Where a new HR file says otherwise than the events that were laid over the previous file and that HR
    made before this file was extracted (the file wins): (count, first `limit` of {person_id, field, event,
    file, event_ids})."""
    if previous_snapshot_id is None:
        return 0, []
    prev_base = file_base(conn, previous_snapshot_id)
    if prev_base == file_snapshot_id:
        return 0, []
    after, until = conn.execute(
        "select p.extracted_at, f.extracted_at from raw_hris.snapshots p, raw_hris.snapshots f "
        "where p.snapshot_id = %s and f.snapshot_id = %s", (prev_base, file_snapshot_id)).fetchone()
    if until <= after:
        return 0, []
    folded = _folded(conn, after, until)
    if not folded:
        return 0, []
    on_file = _base_lines(conn, file_snapshot_id, sorted(folded))
    out: list[dict[str, Any]] = []
    for person in sorted(folded):
        fields, ids, _ = folded[person]
        lines = on_file.get(person) or [{}]
        for name, value in sorted(fields.items()):
            file_value = lines[0].get(name) if lines[0] else None
            if (value or "") != (file_value or ""):
                out.append({"person_id": person, "field": name, "event": value, "file": file_value,
                            "event_ids": ids, "on_file": bool(lines[0])})
    return len(out), out[:limit]


__all__ = ["ASSET_NAME", "ASSET_URI", "Landed", "Overlay", "Received", "disagreements", "file_base", "from_airflow",
           "has_events", "land", "older_than_file", "overlay", "parse_record", "prune"]
