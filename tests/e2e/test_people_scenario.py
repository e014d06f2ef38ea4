"""Issue 3's multi-day scenario: people are messy. Real DAG runs, real Postgres, real scim2-server.

After every day the LMS must hold exactly the expected users (active flag, manager, department) and
org-group memberships. The expectations are written out by hand below: they are the specification.
"""
from __future__ import annotations

import csv
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import yaml

from hrlms.settings import DEFAULT_MAPPING
from hrlms.sync.scim import ENTERPRISE, LmsConfig, ScimClient
from hrlms.warehouse import db

pytestmark = pytest.mark.e2e

D1, D2, D3 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)
D4 = date(2026, 7, 6)                      # six months later: the rehire

WORKER_COLS = ["Employee_ID", "Employee_Number", "First_Name", "Last_Name", "Work_Email", "Login",
               "Worker_Status", "Worker_Type", "Hire_Date", "Start_Date", "Termination_Date",
               "Last_Day_Of_Work", "Job_Title", "Org_Unit", "Manager_ID", "Time_Zone",
               "Temp_Manager_ID", "Temp_From", "Temp_Until"]
ORG_COLS = ["Org_Code", "Org_Name", "Parent_Org_Code", "Org_Type", "Org_Status", "Org_Manager_ID"]


def us(d: date | None) -> str:
    return d.strftime("%m/%d/%Y") if d else ""


def person(pid, org, mgr, *, status="A", tz="Europe/London", hire=date(2020, 1, 1), start=None,
           term=None, last=None, email=None, number=None, kind="EMP", temp=None):
    n = pid[1:]
    return {"Employee_ID": pid, "Employee_Number": number or f"9{n}", "First_Name": f"First{n}",
            "Last_Name": f"Last{n}", "Work_Email": email or f"p{n}@example.com",
            "Login": (email or f"p{n}@example.com").split("@")[0], "Worker_Status": status,
            "Worker_Type": kind, "Hire_Date": us(hire), "Start_Date": us(start or hire),
            "Termination_Date": us(term), "Last_Day_Of_Work": us(last), "Job_Title": "Staff",
            "Org_Unit": org, "Manager_ID": mgr or "", "Time_Zone": tz,
            "Temp_Manager_ID": temp[0] if temp else "", "Temp_From": us(temp[1]) if temp else "",
            "Temp_Until": us(temp[2]) if temp else ""}


ORGS_1 = [("ORG1", "Company", "", "P01"), ("ORG2", "Finance", "ORG1", "P02"), ("ORG3", "Payroll", "ORG2", "P03"),
          ("ORG4", "Engineering", "ORG1", "P04"), ("ORG5", "Platform", "ORG4", "P05"), ("ORG6", "Sales", "ORG1", "P06")]
# Day 2 reorg: Platform moves out of Engineering to the top and is renamed.
ORGS_2 = [o if o[0] != "ORG5" else ("ORG5", "Platform & Cloud", "ORG1", "P05") for o in ORGS_1]


def day1():
    return [
        person("P01", "ORG1", None), person("P02", "ORG2", "P01"), person("P03", "ORG3", "P02"),
        person("P10", "ORG3", "P03"), person("P11", "ORG3", "P03", tz="Asia/Tokyo"),
        person("P04", "ORG4", "P01"), person("P05", "ORG5", "P04"),
        person("P12", "ORG5", "P05", tz="America/Los_Angeles"), person("P13", "ORG5", "P05"),
        person("P06", "ORG6", "P01"), person("P14", "ORG6", "P06"),
        person("P15", "ORG6", "P06", status="P", hire=D3, start=D3),              # future-dated hire
        person("P16", "ORG4", "P04", kind="CTR", email="p16@example.com"),       # contractor
        person("P18", "ORG2", "P02"),                                            # will leave, come back
        person("P19", "ORG6", "P20"), person("P20", "ORG6", "P19"),              # a manager loop
        person("P21", "ORG999", "P01"),                                          # unknown org code
    ]


def day2():
    rows = {r["Employee_ID"]: r for r in day1()}
    rows["P14"] = person("P14", "ORG2", "P02")                                   # transfer Sales -> Finance
    del rows["P16"]                                                              # converted to employee:
    rows["P17"] = person("P17", "ORG4", "P04", email="p16@example.com", number="817")  # new id, same email
    rows["P18"] = person("P18", "ORG2", "P02", status="T", term=D1, last=D1)      # left (last day Jan 5)
    rows["P11"] = person("P11", "ORG3", "P03", tz="Asia/Tokyo", term=D2, last=D2)            # last day Jan 6
    rows["P12"] = person("P12", "ORG5", "P05", tz="America/Los_Angeles", term=D2, last=D2)   # last day Jan 6
    rows["P13"] = person("P13", "ORG5", "P05", temp=("P02", D2, D3))            # temporary manager
    return list(rows.values())


def day3():
    rows = {r["Employee_ID"]: r for r in day2()}
    rows["P05"] = person("P05", "ORG5", "P04", status="T", term=D2, last=D2)      # a manager leaves
    return list(rows.values())


def day4():
    rows = {r["Employee_ID"]: r for r in day3()}
    rows["P11"] = person("P11", "ORG3", "P03", tz="Asia/Tokyo", status="T", term=D2, last=D2)
    rows["P12"] = person("P12", "ORG5", "P05", tz="America/Los_Angeles", status="T", term=D2, last=D2)
    rows["P15"] = person("P15", "ORG6", "P06", hire=D3, start=D3)
    rows["P18"] = person("P18", "ORG3", "P03", hire=D4)                           # rehired after six months
    return list(rows.values())


# Expected LMS state per day: externalId -> (active, manager externalId, org unit)
EXPECTED = {
    D1: {"P01": (True, None, "ORG1"), "P02": (True, "P01", "ORG2"), "P03": (True, "P02", "ORG3"),
         "P10": (True, "P03", "ORG3"), "P11": (True, "P03", "ORG3"), "P04": (True, "P01", "ORG4"),
         "P05": (True, "P04", "ORG5"), "P12": (True, "P05", "ORG5"), "P13": (True, "P05", "ORG5"),
         "P06": (True, "P01", "ORG6"), "P14": (True, "P06", "ORG6"), "P16": (True, "P04", "ORG4"),
         "P18": (True, "P02", "ORG2"),
         "P19": (True, "P06", "ORG6"),      # loop broken at the smallest id: its unit's head
         "P20": (True, "P19", "ORG6"),
         "P21": (True, "P01", "UNASSIGNED")},
}
EXPECTED[D2] = {**EXPECTED[D1],
                "P14": (True, "P02", "ORG2"),      # transfer
                "P16": (True, "P04", "ORG4"),      # P17 kept P16's account (same work email)
                "P18": (False, "P02", "ORG2"),     # left: deactivated, attributes as they were
                "P13": (True, "P02", "ORG5")}      # temporary manager while effective
EXPECTED[D3] = {**EXPECTED[D2],
                "P11": (False, "P03", "ORG3"),     # Tokyo: Jan 7 09:00 local, past the last day
                "P12": (True, "P04", "ORG5"),      # LA: still Jan 6 16:00 local; manager P05 left -> P04
                "P05": (False, "P04", "ORG5"),     # the manager who left
                "P15": (True, "P06", "ORG6")}      # future-dated hire starts
EXPECTED[D4] = {**EXPECTED[D3],
                "P12": (False, "P04", "ORG5"),
                "P13": (True, "P04", "ORG5"),      # temporary manager expired; primary P05 left -> P04
                "P18": (True, "P03", "ORG3")}      # rehire: the same account, reactivated


def write_day(landing: Path, day: date, workers: list[dict], orgs) -> None:
    with open(landing / f"workers_{day}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=WORKER_COLS)
        w.writeheader()
        w.writerows(workers)
    with open(landing / f"org_units_{day}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(ORG_COLS)
        w.writerows([(code, name, parent, "unit", "ACTIVE", head) for code, name, parent, head in orgs])


@pytest.fixture
def scenario_mapping(tmp_path, monkeypatch):
    doc = yaml.safe_load(Path(DEFAULT_MAPPING).read_text())
    cols = doc["entities"]["workers"]["columns"]
    for drop in ("preferred_name", "job_code", "job_family", "location_code", "country"):
        cols.pop(drop)
    cols.update({"temporary_manager_person_id": "Temp_Manager_ID", "temporary_manager_from": "Temp_From",
                 "temporary_manager_until": "Temp_Until"})
    doc["entities"]["org_units"]["columns"]["manager_person_id"] = "Org_Manager_ID"
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("HRLMS_MAPPING", str(path))
    monkeypatch.setenv("HRLMS_MAX_DROP_SHARE", "0.5")
    return path


def lms_state(client: ScimClient):
    users = {u["id"]: u for u in client.iter_users()}
    by_ext = {}
    for u in users.values():
        assert u["externalId"] not in by_ext, f"two accounts for {u['externalId']}"
        mgr = ((u.get(ENTERPRISE) or {}).get("manager") or {}).get("value")
        by_ext[u["externalId"]] = (u.get("active"), users[mgr]["externalId"] if mgr else None,
                                   (u.get(ENTERPRISE) or {}).get("department"), u["id"])
    groups = {}
    resp = client.session.get(client.config.base_url + "/Groups", params={"count": 1000})
    for g in resp.json().get("Resources", []):
        groups[g.get("externalId")] = (g["displayName"], sorted(users[m["value"]]["externalId"]
                                                              for m in g.get("members") or []))
    return by_ext, groups


def test_people_are_messy(provision_dag, fresh_db, fresh_lms, landing, scenario_mapping):
    names = {1: dict((o[0], o[1]) for o in ORGS_1), 2: dict((o[0], o[1]) for o in ORGS_2)}
    client = ScimClient(LmsConfig(*fresh_lms))
    days = [(D1, day1(), ORGS_1, 1), (D2, day2(), ORGS_2, 2), (D3, day3(), ORGS_2, 2), (D4, day4(), ORGS_2, 2)]
    for day, workers, orgs, v in days:
        write_day(landing, day, workers, orgs)
        run = provision_dag.test(logical_date=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc))
        assert run.state == "success", day
        users, groups = lms_state(client)
        want = EXPECTED[day]
        unit_name = {**names[v], "UNASSIGNED": "Unassigned (unknown org code)"}
        got = {pid: (a, m, d) for pid, (a, m, d, _id) in users.items()}
        assert got == {pid: (a, m, unit_name[o]) for pid, (a, m, o) in want.items()}, day
        want_groups = {}
        for pid, (active, _m, org) in want.items():
            if active:
                want_groups.setdefault(f"org:{org}", (unit_name[org], []))[1].append(pid)
        assert {k: (n, sorted(m)) for k, (n, m) in want_groups.items()} == \
               {k: g for k, g in groups.items() if g[1] and k.startswith("org:")}, day  # audiences: tests/learning

    # The rerun of the last day writes nothing.
    run = provision_dag.test(logical_date=datetime.combine(D4, datetime.min.time(), tzinfo=timezone.utc))
    with db.connect(fresh_db) as c:
        writes = c.execute("select detail -> 'writes' from audit.stage_runs where run_key = %s and stage = 'apply'",
                           (run.run_id,)).fetchone()[0]
        issues = {(p, t) for p, t in c.execute("select person_id, issue_type from marts.dq_person_issues where is_open")}
    assert writes == 0
    assert ("P21", "unknown_org_code") in issues
    assert {("P19", "manager_loop"), ("P20", "manager_loop")} & issues
    client.close()
