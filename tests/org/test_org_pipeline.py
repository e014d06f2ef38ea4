"""Org hierarchy, manager resolution and desired groups through the real pipeline (ingest → stage →
gate → dbt build) on a fresh database, over two days. No LMS."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from hrlms import pipeline
from hrlms.settings import DEFAULT_MAPPING
from hrlms.warehouse import db

from ..sources.hrfiles import HEADER, csv_text, worker

D1, D2 = date(2026, 1, 5), date(2026, 1, 6)
EXTRA = {"secondary_manager_person_ids": "Matrix_Managers", "temporary_manager_person_id": "Temp_Manager_ID",
         "temporary_manager_from": "Temp_From", "temporary_manager_until": "Temp_Until"}
WORKER_HEADER = HEADER + list(EXTRA.values())
ORG_HEADER = "Org_Code,Org_Name,Parent_Org_Code,Org_Type,Org_Status,Org_Manager_ID\n"


def pid(i: int) -> str:
    return f"P{i:07d}"


@pytest.fixture
def org_mapping(tmp_path: Path, landing: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The synthetic mapping plus the optional manager columns (matrix, temporary, org unit head)."""
    doc = yaml.safe_load(DEFAULT_MAPPING.read_text(encoding="utf-8"))
    doc["entities"]["workers"]["columns"].update(EXTRA)
    doc["entities"]["org_units"]["columns"]["manager_person_id"] = "Org_Manager_ID"
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    monkeypatch.setenv("HRLMS_MAPPING", str(path))
    monkeypatch.setenv("HRLMS_ORG_ROLLUP_GROUPS", "true")
    return path


def land(landing: Path, day: date, workers: list[dict[str, str]], orgs: list[tuple[str, ...]]) -> None:
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(workers, WORKER_HEADER))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(
        ORG_HEADER + "".join(",".join(o) + "\n" for o in orgs))


def run_day(day: date) -> None:
    key = f"test-org-{day}"
    snaps = pipeline.ingest(key, day)
    pipeline.stage_models(key, day, snaps)
    pipeline.gate(key, day, snaps)
    pipeline.transform(key, day, snaps)


def rows(url: str, sql: str) -> list[tuple]:
    with db.connect(url) as c:
        return c.execute(sql).fetchall()


ORGS_D1 = [
    ("ROOT", "Company", "", "company", "ACTIVE", ""),
    ("SALES", "Sales", "ROOT", "division", "ACTIVE", ""),
    ("EMEA", "Sales EMEA", "SALES", "region", "ACTIVE", ""),
    ("UK", "Sales UK", "EMEA", "team", "ACTIVE", ""),
    ("ENG", "Engineering", "ROOT", "division", "ACTIVE", pid(6)),
    ("LOOPA", "Loop A", "LOOPB", "team", "ACTIVE", ""),     # a parent cycle in HR's data
    ("LOOPB", "Loop B", "LOOPA", "team", "ACTIVE", ""),
    ("ORPHAN", "Orphan", "GONE", "team", "ACTIVE", ""),     # a parent that does not exist
]


def staff(**changes: dict[str, str]) -> list[dict[str, str]]:
    people = {
        1: dict(Org_Unit="ROOT"),                                   # CEO, no manager
        2: dict(Org_Unit="SALES", Manager_ID=pid(1)),
        3: dict(Org_Unit="EMEA", Manager_ID=pid(2)),
        4: dict(Org_Unit="UK", Manager_ID=pid(3), Matrix_Managers=f"{pid(6)} ; {pid(7)}"),
        5: dict(Org_Unit="UK", Manager_ID=pid(3)),
        6: dict(Org_Unit="ENG", Manager_ID=pid(1)),
        7: dict(Org_Unit="ENG", Manager_ID=pid(6),                 # temporary manager on day 2 only
                Temp_Manager_ID=pid(2), Temp_From="01/06/2026", Temp_Until="01/31/2026"),
        8: dict(Org_Unit="NOWHERE", Manager_ID=pid(8)),             # unknown org code, manages themself
        9: dict(Org_Unit="UK", Manager_ID=pid(10)),                 # a reporting loop 9 → 10 → 9
        10: dict(Org_Unit="UK", Manager_ID=pid(9)),
    }
    for i, over in changes.items():
        people[int(i)] = {**people[int(i)], **over}
    return [worker(i, **over) for i, over in people.items()]


def test_reorg_and_leaver_propagate_in_one_run(fresh_db, landing, org_mapping):
    land(landing, D1, staff(), ORGS_D1)
    run_day(D1)

    paths = dict(rows(fresh_db, "select descendant_org_unit_code, path from marts.org_unit_hierarchy "
                                "where ancestor_org_unit_code = 'ROOT'"))
    assert paths["UK"] == "ROOT/SALES/EMEA/UK"
    # the cycle is cut at its smallest code, the orphan is a root, the holding unit exists
    assert set(rows(fresh_db, "select org_unit_code, parent_org_unit_code, level from marts.org_unit_tree "
                              "where parent_org_unit_code is null or org_unit_code like 'LOOP%'")) == {
        ("ROOT", None, 0), ("LOOPA", None, 0), ("LOOPB", "LOOPA", 1), ("ORPHAN", None, 0),
        ("UNASSIGNED", None, 0)}
    assert set(rows(fresh_db, "select org_unit_code, issue_type from intermediate.int_org_unit_issues")) == {
        ("LOOPA", "cycle"), ("LOOPB", "cycle"), ("ORPHAN", "unknown_parent")}
    assert rows(fresh_db, "select org_unit_code, org_unit_name from marts.workers where person_id = 'P0000008'") == [
        ("UNASSIGNED", "Unassigned (unknown org code)")]

    managers = dict(rows(fresh_db, "select person_id, coalesce(manager_person_id, '-') || ':' || manager_rule "
                                   "from intermediate.int_managers_resolved"))
    assert managers[pid(1)] == "-:none"                         # the top of the organisation
    assert managers[pid(4)] == f"{pid(3)}:primary"
    assert managers[pid(7)] == f"{pid(6)}:primary"              # temporary manager not yet in force
    assert managers[pid(9)] == f"{pid(3)}:org_chain"             # loop cut at the smallest id: UK's head
    assert managers[pid(10)] == f"{pid(9)}:primary"
    assert managers[pid(8)] == "-:none"                          # self → org chain: the holding unit has no head
    assert set(rows(fresh_db, "select person_id, issue_type, check_name from intermediate.int_data_issues_org")) == {
        (pid(8), "unknown_org_code", "int_workers_placed.unknown_org_code"),
        (pid(8), "self_manager", "int_managers_resolved.self_manager"),
        (pid(9), "manager_loop", "int_managers_resolved.manager_loop"),
        (pid(10), "manager_loop", "int_managers_resolved.manager_loop")}
    assert set(rows(fresh_db, "select manager_person_id, relation from intermediate.int_managers_all "
                              f"where person_id = '{pid(4)}'")) == {
        (pid(3), "primary"), (pid(6), "matrix"), (pid(7), "matrix")}

    members = set(rows(fresh_db, "select group_key, person_id from marts.lms_desired_group_members"))
    assert ("rollup:SALES", pid(4)) in members and ("org:UK", pid(4)) in members
    assert ("rollup:ENG", pid(4)) not in members
    assert ("org:EMEA", pid(3)) in members

    # Day 2: EMEA (with UK below it) moves under Engineering; P3 (EMEA's manager) leaves on day 1.
    orgs_d2 = [("EMEA", "Sales EMEA", "ENG", "region", "ACTIVE", "") if o[0] == "EMEA" else o for o in ORGS_D1]
    land(landing, D2, staff(**{"3": dict(Worker_Status="T", Termination_Date="01/05/2026",
                                         Last_Day_Of_Work="01/05/2026")}), orgs_d2)
    run_day(D2)

    paths = dict(rows(fresh_db, "select descendant_org_unit_code, path from marts.org_unit_hierarchy "
                                "where ancestor_org_unit_code = 'ROOT'"))
    assert paths["UK"] == "ROOT/ENG/EMEA/UK"
    assert rows(fresh_db, "select count(*) from marts.org_unit_hierarchy "
                          "where ancestor_org_unit_code = 'SALES' and descendant_org_unit_code in ('EMEA', 'UK')") == [(0,)]
    members = set(rows(fresh_db, "select group_key, person_id from marts.lms_desired_group_members"))
    assert ("rollup:ENG", pid(4)) in members and ("rollup:ENG", pid(5)) in members
    assert ("rollup:SALES", pid(4)) not in members
    assert ("org:EMEA", pid(3)) not in members                  # leavers are in no group
    groups = {g for (g,) in rows(fresh_db, "select group_key from marts.lms_desired_groups")}
    assert "org:EMEA" not in groups and "rollup:EMEA" in groups  # EMEA has no direct active member left

    managers = dict(rows(fresh_db, "select person_id, coalesce(manager_person_id, '-') || ':' || manager_rule "
                                   "from intermediate.int_managers_resolved"))
    assert managers[pid(4)] == f"{pid(2)}:manager_chain"         # the leaver's reports get the next one up
    assert managers[pid(5)] == f"{pid(2)}:manager_chain"
    assert managers[pid(7)] == f"{pid(2)}:temporary"             # temporary manager in force from day 2
    assert (pid(4), "terminated_manager") in set(
        rows(fresh_db, "select person_id, issue_type from intermediate.int_data_issues_org"))


def test_a_renamed_holding_unit_reaches_the_workers_with_unknown_codes_on_an_incremental_build(
        fresh_db, landing, org_mapping):
    """HR's own row for the holding unit, below the root: renaming it is no change at the top of the tree,
    so the build stays incremental, and its members are the workers whose HR code is unknown (P11:
    ELSEWHERE, with a manager from HR, so no fallback rule names them), not the workers whose HR code names it."""
    people = staff() + [worker(11, Org_Unit="ELSEWHERE", Manager_ID=pid(1))]
    land(landing, D1, people, ORGS_D1 + [("UNASSIGNED", "Unassigned", "ROOT", "holding", "ACTIVE", "")])
    run_day(D1)
    land(landing, D2, people, ORGS_D1 + [("UNASSIGNED", "Unassigned (review)", "ROOT", "holding", "ACTIVE", "")])
    run_day(D2)

    assert rows(fresh_db, "select full_build from audit.change_sets order by change_set_id desc limit 1") == [
        (False,)]
    for person in (pid(8), pid(11)):
        assert rows(fresh_db, f"select org_unit_code, org_unit_name from marts.workers where person_id = '{person}'"
                    ) == [("UNASSIGNED", "Unassigned (review)")]
        assert rows(fresh_db, f"select department from marts.lms_desired_users where person_id = '{person}'") == [
            ("Unassigned (review)",)]
