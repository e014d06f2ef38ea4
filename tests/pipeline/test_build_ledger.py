"""The build ledger (hrlms.warehouse.builds): a rerun with unchanged inputs skips staging, gate and
transform; any change of what a stage reads, a crash mid-stage, or a dbt run outside the stages makes
it do the work again. Real Postgres and dbt; the marts are compared before and after."""
from __future__ import annotations

from datetime import date

from hrlms import pipeline
from hrlms.transform import dbt
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker

D1, D2 = date(2026, 1, 5), date(2026, 1, 6)
STAGES = ("staging", "gate", "transform")


def q(url, sql, *args):
    with db.connect(url) as c:
        return c.execute(sql, args).fetchall()


def land(landing, day, rows, org=ORG_CSV):
    (landing / f"workers_{day}.csv").write_text(csv_text(rows))
    (landing / f"org_units_{day}.csv").write_text(org)


def run(key, day):
    """The warehouse stages; returns which of them skipped their work."""
    snaps = pipeline.ingest(key, day)
    pipeline.stage_models(key, day, snaps)
    gated = pipeline.gate(key, day, snaps)
    counts = pipeline.transform(key, day, snaps)
    return snaps, gated, counts


def skipped(url, key):
    rows = dict(q(url, "select stage, detail from audit.stage_runs where run_key = %s", key))
    return {s for s in STAGES if "skipped" in rows.get(s, {})}


def marts(url):
    return {t: q(url, f"select * from {t} order by 1, 2") for t in (
        "marts.lms_desired_users", "intermediate.int_identity_decisions", "marts.workers_history")}


def test_a_rerun_with_no_change_skips_the_warehouse_stages_and_changes_nothing(fresh_db, landing, monkeypatch):
    rows = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 13)]
    rows[3] = worker(4, Hire_Date="31/31/2020")          # quarantined (unparseable date)
    land(landing, D1, rows)
    snaps, gated, counts = run("r1", D1)
    assert skipped(fresh_db, "r1") == set() and gated["quarantined"] == 1
    before = marts(fresh_db)

    # the same day again, as a new run and as a retry of the same run: nothing rebuilt, same results
    for key in ("r2", "r1"):
        snaps2, gated2, counts2 = run(key, D1)
        assert snaps2 == snaps and gated2 == gated and counts2 == counts
        assert skipped(fresh_db, key) == set(STAGES)
        assert "inputs unchanged since run r1" in q(
            fresh_db, "select detail ->> 'skipped' from audit.stage_runs where run_key = %s and stage = 'transform'",
            key)[0][0]
    assert marts(fresh_db) == before

    # the parsed snapshot's rows are unlogged: a database crash empties them, and staging parses them again
    with db.connect(fresh_db) as c:
        c.execute("truncate staging.stg_hris__snapshot_workers_rows")
        c.commit()
    run("r2b", D1)
    assert skipped(fresh_db, "r2b") == {"gate", "transform"}
    assert q(fresh_db, "select count(*) from staging.stg_hris__snapshot_workers") == [(len(rows),)]

    # a person decides an identity question: only the transform reads it
    with db.connect(fresh_db) as c:
        c.execute("insert into sync.identity_resolutions (person_id, resolution, resolved_by) "
                  "values ('P0000009', 'new', 'test')")
        c.commit()
    run("r3", D1)
    assert skipped(fresh_db, "r3") == {"staging", "gate"}

    # a crash in the middle of the transform (state left 'building') is never taken for a build
    with db.connect(fresh_db) as c:
        c.execute("update audit.builds set state = 'building' where stage = 'transform'")
        c.commit()
    run("r4", D1)
    assert skipped(fresh_db, "r4") == {"staging", "gate"}

    # an account written outside the run's own apply may change an identity decision
    with db.connect(fresh_db) as c:
        c.execute("insert into sync.applied_users (person_id, lms_id, user_name, is_active, employee_number) "
                  "values ('PX', 'lms-x', 'x', true, '100002')")
        c.commit()
    run("r5", D1)
    assert "transform" not in skipped(fresh_db, "r5")
    with db.connect(fresh_db) as c:       # PX holds P2's employee number: the gate's next build would
        c.execute("delete from sync.applied_users where person_id = 'PX'")   # quarantine P2's line for it
        c.commit()

    # a dbt run outside the stages makes the ledger forget everything
    res = dbt.run_dbt(["run", "--select", "int_workers_gated"], snapshot_id=snaps["workers"],
                      org_snapshot_id=snaps["org_units"], logical_date=D1)
    assert res.success
    run("r6", D1)
    assert skipped(fresh_db, "r6") == set()

    # HRLMS_REBUILD=always turns skipping off; a new day rebuilds what depends on the date
    monkeypatch.setenv("HRLMS_REBUILD", "always")
    run("r7", D1)
    assert skipped(fresh_db, "r7") == set()
    monkeypatch.delenv("HRLMS_REBUILD")
    land(landing, D2, rows)                               # the same file content on the next day
    run("r8", D2)
    assert skipped(fresh_db, "r8") == {"staging", "gate"}   # same snapshot: parsed and gated already
    assert q(fresh_db, "select count(*) from marts.workers_history")[0][0] >= len(rows) - 1


def test_the_gate_refuses_a_snapshot_the_staging_stage_did_not_parse(fresh_db, landing):
    land(landing, D1, [worker(i) for i in range(1, 6)])
    snaps, _, _ = run("r1", D1)
    land(landing, D2, [worker(i) for i in range(1, 7)])
    snaps2 = pipeline.ingest("r2", D2)
    assert snaps2["workers"] != snaps["workers"]
    try:
        pipeline.gate("r2", D2, snaps2)                    # staging skipped: the table holds day 1
    except dbt.NotStaged as exc:
        assert f"holds snapshot {snaps['workers']}, not snapshot {snaps2['workers']}" in str(exc)
    else:
        raise AssertionError("the gate ran on another snapshot's parsed rows")
    assert q(fresh_db, "select count(*) from dq.gate_runs where snapshot_id = %s", snaps2["workers"]) == [(0,)]
