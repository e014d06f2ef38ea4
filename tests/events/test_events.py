"""HR change events (issue 17) through the package, as the hrlms_hr_events DAG runs them: real Postgres, dbt,
GX and scim2-server. Events land once per id, are laid over the last HR file in HR-timestamp order, bad
records are refused or quarantined while the rest applies, a leaver nobody hired waits, and the next daily
file stays the reference (it wins, and the run report lists where it disagreed)."""
from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from hrlms import pipeline
from hrlms.quality.gate import GX_ROOT
from hrlms.quality.suites import SUITES
from hrlms.sources.events import Received
from hrlms.sync.scim import ENTERPRISE, ScimClient, lms_config_from_env
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker

D1, D2 = date(2026, 1, 5), date(2026, 1, 6)
EPOCH = datetime.now(timezone.utc)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def hr(seconds: int) -> str:
    """An HR timestamp after the day-1 file was written (events before it are the file's business)."""
    return (EPOCH + timedelta(minutes=10, seconds=seconds)).isoformat()


def land_file(landing, day, rows, mtime: datetime | None = None):
    path = landing / f"workers_{day}.csv"
    path.write_text(csv_text(rows))
    (landing / f"org_units_{day}.csv").write_text(ORG_CSV)
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))


def event(event_id: str, seconds: int, *records: dict) -> Received:
    return Received({"event_id": event_id, "hr_timestamp": hr(seconds), "source": "test", "records": list(records),
                     "from_rest_api": True})


def run_events(key: str, moment: datetime, *received: Received, before_report=None) -> dict:
    """The hrlms_hr_events DAG's tasks, in order (report releases the warehouse lease and prunes the raw lines of
    the event snapshots no build refers to any more); `before_report()` runs before it."""
    landed = pipeline.receive_events(key, moment, list(received))
    try:
        planned = pipeline.event_build(key, moment)
        if planned:
            pipeline.apply(key, moment, planned["plan_id"])
        if before_report is not None:
            before_report()
    finally:
        pipeline.report(key, moment, pages=False)
    return landed


def stage(url: str, key: str, name: str) -> dict:
    with db.connect(url) as c:
        row = c.execute("select detail from audit.stage_runs where run_key = %s and stage = %s", (key, name)).fetchone()
    return row[0] if row else {}


def staged_as_parsed(url: str, key: str) -> int:
    """Rows in which the run's parsed snapshot (carried line by line from the held one) differs from every line of
    it parsed afresh (the staging view)."""
    sid = stage(url, key, "ingest")["workers"]["snapshot_id"]
    with db.connect(url) as c:
        return c.execute(
            """select count(*) from (
                 (select * from staging.stg_hris__snapshot_workers
                  except all select * from staging.stg_hris__workers where snapshot_id = %(sid)s)
                 union all
                 (select * from staging.stg_hris__workers where snapshot_id = %(sid)s
                  except all select * from staging.stg_hris__snapshot_workers)) d""", {"sid": sid}).fetchone()[0]


def edited(url: str, key: str) -> dict[str, list[str]]:
    """The people the run's change set found edited, new or gone ({reason: people}), and how it found them."""
    changes = stage(url, key, "transform")["changes"]
    with db.connect(url) as c:
        rows = c.execute("select r, array_agg(person_id order by person_id) from audit.change_set_people, unnest(reasons) r "
                         "where change_set_id = %s and r in ('new', 'gone', 'hr_edit') group by r",
                         (changes["change_set_id"],)).fetchall()
    return dict(rows) | {"found_by": [k for k in changes["timings"] if k.startswith("hr_edits")]}


def _base_lines(url: str, key: str, base_key: str, by_number: bool) -> list[tuple]:
    """Every person's lines in the base snapshot (run `base_key`'s) as the change set of run `key` finds its
    seeds' (hrlms.warehouse.changes: by line number, or by reading the base's lines)."""
    from hrlms.warehouse import changes

    p = {"cur": stage(url, key, "ingest")["workers"]["snapshot_id"],
         "base": stage(url, base_key, "ingest")["workers"]["snapshot_id"]}
    sql = changes._SEED_BASE_LINES.format(
        numbers=changes._SEED_BASE_LINE_NUMBERS if by_number else "",
        line_filter="and w._line_no = any(array(select line_no from numbers))" if by_number else "")
    with db.connect(url) as c, c.transaction():
        c.execute("create temp table cs_seeds on commit drop as select distinct person_id "
                  "from staging.stg_hris__snapshot_workers where person_id is not null")
        c.execute(sql, p)
        return c.execute("select * from cs_seed_base order by 1, 2, 3").fetchall()


def base_lines_by_number(url: str, key: str, base_key: str) -> list[tuple]:
    return _base_lines(url, key, base_key, True)


def base_lines_read(url: str, key: str, base_key: str) -> list[tuple]:
    return _base_lines(url, key, base_key, False)


def written_for(url: str) -> dict[int, int]:
    """The parsed snapshot's rows by the snapshot they were written for (kept in place since)."""
    with db.connect(url) as c:
        return dict(c.execute("select parsed_for_snapshot_id, count(*) from staging.stg_hris__snapshot_workers_rows "
                              "group by 1").fetchall())


def gate_pages(url: str, key: str) -> list[Path]:
    """The Data Docs pages of the checks the run's gate ran (its run names: hrlms.quality.gate.run_name_for)."""
    names = stage(url, key, "gate").get("data_docs_after_apply")
    assert names, "the event run's gate left no Data Docs for after the apply"
    site = GX_ROOT / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations"
    return sorted(p for name in names for p in site.glob(f"*/{name}/**/*.html"))


def writes(url: str, key: str) -> int:
    return int((stage(url, key, "apply") or {}).get("writes") or 0)


def lms() -> dict[str, dict]:
    with ScimClient(lms_config_from_env()) as client:
        return {u["externalId"]: u for u in client.iter_users()}


def dept(user: dict) -> str | None:
    return (user.get(ENTERPRISE) or {}).get("department")


@pytest.mark.e2e
def test_events_reach_the_lms_once_in_hr_order_and_the_next_file_stays_the_reference(fresh_db, fresh_lms, landing):
    rows = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 9)]
    bad_file_line = worker(10, Manager_ID="P0000001", Hire_Date="31/31/2020")   # quarantined: no account
    land_file(landing, D1, [*rows, bad_file_line], mtime=EPOCH)
    pipeline.run_all("d1", at(D1, 6))
    before = lms()
    assert len(before) == 8 and all(u["active"] for u in before.values())
    reports = landing.parent / "reports"
    pages = {p: p.stat().st_mtime_ns for p in [*reports.glob("access/*.json"), *reports.glob("compliance/*.json")]}
    assert len(pages) == 2      # the scheduled run's compliance and access pages

    # hire, transfer, rename and leaver, in two events (one of them carrying a record the mapping does not know)
    hire = worker(9, Manager_ID="P0000001", Job_Title="Designer")
    docs_before_report: list[list[Path]] = []
    landed = run_events("e1", at(D1, 10), event("ev-1", 1, hire, {"Employee_ID": "P0000002", "Org_Unit": "ORG0002",
                                                                   "Job_Title": "Controller"}),
                        event("ev-2", 2, {"Employee_ID": "P0000003", "Last_Name": "Renamed"},
                              {"Employee_ID": "P0000004", "Worker_Status": "T", "Termination_Date": "01/02/2026",
                               "Last_Day_Of_Work": "01/02/2026"},
                              {"Employee_ID": "P0000005", "Shoe_Size": "44"}),
                        before_report=lambda: docs_before_report.append(gate_pages(fresh_db, "e1")))
    assert landed == {"new": 2, "records": 4}
    # the gate's Data Docs wait for the report task (after the apply), which renders one page per workers check
    # (the org file's were kept); a run name may recur from an earlier warehouse: its pages are older results
    rendered = set(gate_pages(fresh_db, "e1")) - set(docs_before_report[0])
    assert sorted(p.relative_to(GX_ROOT).parts[5] for p in rendered) == \
        sorted(s for s, (entity, *_) in SUITES.items() if entity == "workers")
    received = stage(fresh_db, "e1", "events")
    assert received["rejected"] == [{"event_id": "ev-2", "record": 3, "problem": received["rejected"][0]["problem"]}]
    assert "field Shoe_Size: not a column of the workers mapping" in received["rejected"][0]["problem"]
    after = lms()
    assert after["P0000009"]["active"] and after["P0000009"]["title"] == "Designer"
    assert after["P0000002"]["title"] == "Controller" and dept(after["P0000002"]) != dept(before["P0000002"])
    assert after["P0000003"]["name"]["familyName"] == "Renamed"
    assert after["P0000004"]["active"] is False
    # the event run wrote its run report, and left the day's pages to the scheduled runs
    assert next(reports.glob("run_*_e1.json"))
    assert {p: p.stat().st_mtime_ns for p in [*reports.glob("access/*.json"), *reports.glob("compliance/*.json")]} \
        == pages
    assert after["P0000005"] == before["P0000005"] | {"meta": after["P0000005"]["meta"]}
    ingest = stage(fresh_db, "e1", "ingest")
    assert ingest["events"]["people"] == 4 and ingest["workers"]["file_snapshot_id"] != ingest["workers"]["snapshot_id"]
    # what events cannot change is kept: the staging views and the org file's verdicts (the daily run built both)
    assert "views" not in stage(fresh_db, "d1", "staging") and "kept" not in stage(fresh_db, "d1", "gate")["org_units"]
    staged, gated = stage(fresh_db, "e1", "staging"), stage(fresh_db, "e1", "gate")
    assert staged["views"].startswith("kept") and staged["success"] == 1 and staged["lines"]["parsed"] == 4
    # the file's other lines were carried by their numbers (no hashing), to the same rows as a full parse
    assert staged["lines"]["by_line_number_from"] == ingest["workers"]["file_snapshot_id"]
    assert staged["lines"]["carried"] == 6 and staged["lines"]["carried_from_snapshot"] == \
        ingest["workers"]["file_snapshot_id"]
    assert staged_as_parsed(fresh_db, "e1") == 0
    # in place: the rows of the lines carried by number are the file's rows as the daily run wrote them
    assert written_for(fresh_db) == {ingest["workers"]["file_snapshot_id"]: 6, ingest["workers"]["snapshot_id"]: 4}
    # the file line the daily run quarantined keeps its verdict (carried by number, not checked again): no account
    assert gated["workers"]["lines"]["verdicts_carried_from"] == ingest["workers"]["file_snapshot_id"]
    assert gated["workers"]["lines"]["carried_verdicts"] == 1 and gated["workers"]["lines"]["checked"] == 4
    with db.connect(fresh_db) as c:
        assert c.execute("select record_key, field from dq.quarantine where snapshot_id = %s",
                         (ingest["workers"]["snapshot_id"],)).fetchall() == [("P0000010", "hire_date")]
    assert "P0000010" not in after
    # its raw lines are its 4 event lines; raw_hris.worker_lines adds the file's lines they do not replace (9 - 3)
    with db.connect(fresh_db) as c:
        own, seen, counted, people = c.execute(
            """select (select count(*) from raw_hris.workers where _snapshot_id = %(s)s),
                      (select count(*) from raw_hris.worker_lines where _snapshot_id = %(s)s),
                      (select row_count from raw_hris.snapshots where snapshot_id = %(s)s),
                      (select count(distinct btrim(person_id)) from raw_hris.worker_lines where _snapshot_id = %(s)s)""",
            {"s": ingest["workers"]["snapshot_id"]}).fetchone()
    assert (own, seen, counted, people) == (4, 10, 10, 10)
    # the change set read the people of the event lines only, not the million lines of either snapshot
    assert edited(fresh_db, "e1") == {"new": ["P0000009"], "hr_edit": ["P0000002", "P0000003", "P0000004"],
                                      "found_by": ["hr_edits_event_lines"]}
    assert gated["org_units"]["kept"] and gated["org_units"]["rows"] == stage(fresh_db, "d1", "gate")["org_units"]["rows"]

    # the same event again: landed once, nothing to send
    landed = run_events("e2", at(D1, 10, 5), event("ev-2", 2, {"Employee_ID": "P0000003", "Last_Name": "Renamed"},
                                                   {"Employee_ID": "P0000004", "Worker_Status": "T",
                                                    "Termination_Date": "01/02/2026", "Last_Day_Of_Work": "01/02/2026"},
                                                   {"Employee_ID": "P0000005", "Shoe_Size": "44"}))
    assert landed == {"new": 0, "records": 0} and stage(fresh_db, "e2", "events")["duplicates"] == 1
    assert writes(fresh_db, "e2") == 0

    # out of order: the newer title arrives first, the older one later does not roll it back; a record with a
    # bad date is quarantined (the person keeps their title) while the other record of its event applies;
    # a leaver nobody has hired waits
    run_events("e3", at(D1, 11), event("ev-4", 20, {"Employee_ID": "P0000006", "Job_Title": "Lead"}),
               event("ev-stale", -3600, {"Employee_ID": "P0000008", "Job_Title": "Stale"}))
    # HR made ev-stale before the file was extracted: the file is its reference (kept, listed, not applied)
    assert stage(fresh_db, "e3", "ingest")["events"]["older_than_file"] == ["ev-stale"]
    assert lms()["P0000008"]["title"] == before["P0000008"]["title"]
    base_lines: dict[str, list[tuple]] = {}

    def read_base_lines():   # while e3's snapshot, the base of e4's change set, still has its raw lines
        base_lines.update(by_number=base_lines_by_number(fresh_db, "e4", "e3"),
                          read=base_lines_read(fresh_db, "e4", "e3"))

    run_events("e4", at(D1, 11, 5), event("ev-3", 10, {"Employee_ID": "P0000006", "Job_Title": "Junior"},
                                          {"Employee_ID": "P0000007", "Hire_Date": "31/31/2020",
                                           "Job_Title": "Never"}),
               event("ev-5", 21, {"Employee_ID": "P0000077", "Worker_Status": "T", "Termination_Date": "01/02/2026"}),
               before_report=read_base_lines)
    now = lms()
    assert now["P0000006"]["title"] == "Lead"
    assert now["P0000007"]["title"] == before["P0000007"]["title"]
    assert "P0000077" not in now
    with db.connect(fresh_db) as c:
        quarantined = c.execute("select q.record_key, q.field from dq.quarantine q where q.snapshot_id = %s",
                                (stage(fresh_db, "e4", "ingest")["workers"]["snapshot_id"],)).fetchall()
    assert ("P0000007", "hire_date") in [(k, f) for k, f in quarantined]
    # carried from e3's snapshot, its event lines by content: only P0000007's line is new (P0000006's older
    # title changed nothing)
    lines = stage(fresh_db, "e4", "staging")["lines"]
    assert lines["by_line_number_from"] == stage(fresh_db, "e3", "ingest")["workers"]["snapshot_id"]
    assert lines["parsed"] == 1 and staged_as_parsed(fresh_db, "e4") == 0
    assert edited(fresh_db, "e4") == {"hr_edit": ["P0000007"], "found_by": ["hr_edits_event_lines"]}
    # on such a run the change set finds its people's base lines by number: the same lines as reading the base
    assert base_lines["by_number"] == base_lines["read"] and len(base_lines["read"]) == 10   # P0000001-10
    # the raw lines of event snapshots no build refers to are deleted once a later run has applied (its report)
    sids = {k: stage(fresh_db, k, "ingest")["workers"]["snapshot_id"] for k in ("e1", "e4")}
    with db.connect(fresh_db) as c:
        kept = dict(c.execute("""select s.snapshot_id, s.pruned_at is null and exists (
                                     select 1 from raw_hris.workers w where w._snapshot_id = s.snapshot_id)
                                 from raw_hris.snapshots s where s.snapshot_id = any(%s)""", (list(sids.values()),)))
    assert kept == {sids["e1"]: False, sids["e4"]: True}
    assert stage(fresh_db, "e4", "ingest")["events"]["pruned_snapshots"] >= 1
    pending = stage(fresh_db, "e4", "ingest")["events"]["pending"]
    assert [p["person_id"] for p in pending] == ["P0000077"] and "not hired yet" in pending[0]["why"]
    report = json.loads(next((landing.parent / "reports").glob("run_*_e4.json")).read_text())
    assert report["events"]["pending_count"] == 1

    # the next day's HR file (extracted after the events): it agrees with the hire, the transfer and the leaver
    # (nothing to send for them) but not with the rename (HR changed its mind: the file wins, and is listed)
    day2 = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 9)] + [hire]
    day2[1] = worker(2, Manager_ID="P0000001", Org_Unit="ORG0002", Job_Title="Controller")
    day2[3] = worker(4, Manager_ID="P0000001", Worker_Status="T", Termination_Date="01/02/2026",
                     Last_Day_Of_Work="01/02/2026")
    day2[5] = worker(6, Manager_ID="P0000001", Job_Title="Lead")
    land_file(landing, D2, day2, mtime=EPOCH + timedelta(hours=1))
    pipeline.run_all("d2", at(D2, 6))
    final = lms()
    assert final["P0000003"]["name"]["familyName"] == "Last3"
    assert final["P0000009"]["active"] and final["P0000002"]["title"] == "Controller" and not final["P0000004"]["active"]
    ingest = stage(fresh_db, "d2", "ingest")
    assert {(d["person_id"], d["field"]) for d in ingest["events"]["disagreements"]} >= {("P0000003", "last_name")}
    assert ("P0000006", "job_title") not in {(d["person_id"], d["field"]) for d in ingest["events"]["disagreements"]}
    applied = stage(fresh_db, "d2", "apply")["applied"]
    assert sum(applied.values()) >= 1
    with db.connect(fresh_db) as c:
        sent = c.execute("select person_id from sync.ops o join sync.plans p using (plan_id) where p.snapshot_id = %s",
                         (ingest["workers"]["snapshot_id"],)).fetchall()
    assert {p for (p,) in sent} <= {"P0000003", None}
    with db.connect(fresh_db) as c:
        assert c.execute("select run_key from audit.pipeline_lease").fetchone()[0] is None
    # and an event after that daily run builds on its file
    run_events("e5", at(D2, 10), event("ev-6", 3600, {"Employee_ID": "P0000003", "Last_Name": "Again"}))
    assert stage(fresh_db, "e5", "ingest")["workers"]["file_snapshot_id"] == ingest["workers"]["snapshot_id"]
    assert lms()["P0000003"]["name"]["familyName"] == "Again" and writes(fresh_db, "e5") == 1


@pytest.mark.e2e
def test_a_burst_of_leaver_events_is_held_by_the_breaker_like_a_daily_plan(fresh_db, fresh_lms, landing):
    from hrlms.sync.breaker import PlanHeld

    rows = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 41)]
    land_file(landing, D1, rows, mtime=EPOCH)
    pipeline.run_all("d1", at(D1, 6))
    leavers = [{"Employee_ID": f"P{i:07d}", "Worker_Status": "T", "Termination_Date": "01/02/2026",
                "Last_Day_Of_Work": "01/02/2026"} for i in range(2, 14)]
    # 12 leavers in 12 events within a minute, one run (as Airflow coalesces events queued while a run is busy)
    with pytest.raises((PlanHeld, pipeline.RunFailed)):
        run_events("burst", at(D1, 10), *(event(f"lv-{i}", i, rec) for i, rec in enumerate(leavers)))
    plan = stage(fresh_db, "burst", "plan")
    assert plan["held"] and plan["ops"]["deactivate_user"] == 12
    assert all(u["active"] for u in lms().values())                        # nothing reached the LMS
    with db.connect(fresh_db) as c:
        assert c.execute("select run_key from audit.pipeline_lease").fetchone()[0] is None   # the report gave it back
    # a person approves exactly that plan (hrlms_provision with approve_plan): the leavers are deactivated
    pipeline.decide_plan("approve", at(D1, 10, 30), plan["plan_id"], "approved", "hr-ops")
    assert sorted(p for p, u in lms().items() if not u["active"]) == [f"P{i:07d}" for i in range(2, 14)]
