"""The reporting models (dbt tag reporting) built after the apply (hrlms.pipeline.marts), as the DAGs run them:
the transform leaves them alone, the stage marts brings them to the same rows as a transform that builds
everything, incrementally when it follows the last reporting build, whole when a run's stage marts did not
complete, and not at all when it already holds the last build. Real Postgres and dbt."""
from __future__ import annotations

from datetime import date

from hrlms import pipeline

from ..sources.hrfiles import ORG_CSV, worker
from .test_build_ledger import land, q

D1, D2, D3, D4 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7), date(2026, 1, 8)
ORG = ORG_CSV + "ORG0003,Engineering,ORG0001,department,ACTIVE\n"
# what analysts read from the reporting models (rows as a full build of everything writes them)
REPORTING = ("intermediate.int_learning_compliance_counts", "marts.learning_compliance_rollup",
             "marts.dq_person_issues")
TABLES = ("intermediate.int_learning_compliance_counts", "marts.dq_person_issues")   # (the rollup: a view)


def warehouse(key, day, *, defer):
    snaps = pipeline.ingest(key, day)
    pipeline.stage_models(key, day, snaps)
    pipeline.gate(key, day, snaps)
    pipeline.transform(key, day, snaps, defer_reporting=defer)
    return snaps


def reporting(url, tables=REPORTING):
    out = {}
    for t in tables:
        cols = [r[0] for r in q(url, "select attname from pg_attribute where attrelid = to_regclass(%s) and attnum > 0 "
                                     "and not attisdropped order by attname", t)]
        assert cols, f"{t} does not exist"
        out[t] = q(url, f"select {', '.join(cols)} from {t} order by {', '.join(cols)}")
    return out


def people(day):
    rows = [worker(i, Manager_ID="P0000001" if i > 1 else "", Org_Unit="ORG0002" if i % 2 else "ORG0003",
                   Job_Family="Finance" if i % 2 else "Engineering") for i in range(1, 11)]
    if day >= D2:    # a transfer, a leaver, a hire and a bad line
        rows[2] = {**rows[2], "Org_Unit": "ORG0003", "Job_Family": "Engineering"}
        rows[5] = {**rows[5], "Worker_Status": "T", "Termination_Date": "01/05/2026", "Last_Day_Of_Work": "01/05/2026"}
        rows.append(worker(11, Manager_ID="P0000001", Org_Unit="ORG0002", Job_Family="Finance"))
        rows[7] = {**rows[7], "Hire_Date": "31/31/2020"}
    if day >= D3:
        rows[3] = {**rows[3], "Org_Unit": "ORG0003", "Job_Family": "Engineering"}
    if day >= D4:
        rows[4] = {**rows[4], "Org_Unit": "ORG0003", "Job_Family": "Engineering"}
    return rows


def full_build(monkeypatch, key, day):
    """What a transform that builds everything from scratch writes (HRLMS_REBUILD=always: a full build)."""
    with monkeypatch.context() as m:
        m.setenv("HRLMS_REBUILD", "always")
        warehouse(key, day, defer=False)


def test_the_reporting_models_are_built_after_the_apply_and_match_a_full_build(fresh_db, landing, monkeypatch):
    for day in (D1, D2, D3, D4):
        land(landing, day, people(day), ORG)

    snaps = warehouse("d1", D1, defer=True)
    # the first build is a full one: it makes the reporting tables too, the stage marts has nothing to do
    assert q(fresh_db, "select count(*) from marts.learning_compliance_rollup")[0][0] > 0
    pipeline.plan("d1", D1, snaps)
    assert "skipped" in pipeline.marts("d1", D1)
    # a run that built nothing (a decision on a held plan) leaves the warehouse alone
    assert "did not complete" in pipeline.marts("decision", D1)["skipped"]

    # day 2: the transform leaves the reporting tables as they were; the stage marts builds them after the apply,
    # incrementally (it follows day 1's build), with the same rows as a build of everything
    before = reporting(fresh_db, TABLES)
    snaps = warehouse("d2", D2, defer=True)
    assert reporting(fresh_db, TABLES) == before
    pipeline.plan("d2", D2, snaps)
    assert pipeline.marts("d2", D2)["build"] == "incremental"
    again = pipeline.marts("d2", D2)                         # a retry of the task: nothing to do
    assert "skipped" in again and again["build"] == "incremental"
    incremental = reporting(fresh_db)
    assert incremental["intermediate.int_learning_compliance_counts"]
    assert incremental["marts.dq_person_issues"], "day 2's bad line is reported"
    full_build(monkeypatch, "d2-full", D2)
    assert reporting(fresh_db) == incremental
    # a transform that built everything leaves the stage marts nothing to do
    assert "skipped" in pipeline.marts("d2-full", D2)

    # day 3's stage marts never ran (its worker died): day 4's reporting build catches up whole
    warehouse("d3", D3, defer=True)
    before = reporting(fresh_db, TABLES)
    warehouse("d4", D4, defer=True)
    assert reporting(fresh_db, TABLES) == before          # the reporting tables did not move with the transforms
    detail = pipeline.marts("d4", D4)
    assert detail["build"] == "full" and "skipped" not in detail
    caught_up = reporting(fresh_db)
    assert reporting(fresh_db, TABLES) != before          # days 3 and 4's transfers are in the counts now
    full_build(monkeypatch, "d4-full", D4)
    assert reporting(fresh_db) == caught_up
