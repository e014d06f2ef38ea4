"""Assignment rules: the YAML is validated with errors naming the rule and field; every rule dimension,
recurrence and exemption is proven on real pipeline runs (ingest → gate → dbt build) on a fresh Postgres."""
from __future__ import annotations

from datetime import date

import pytest

from hrlms import pipeline
from hrlms.learning.rules import DEFAULT_RULES, RulesError, load_rules, parse_rules
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker

REQ = "requirements: [{id: R1, kind: course, title: One}, {id: R2, kind: certification, title: Two, recurrence: {valid_months: 12}}]\n"


def test_the_shipped_rules_file_is_valid():
    loaded = load_rules(DEFAULT_RULES)
    assert loaded.ruleset.rules and loaded.ruleset.requirements
    assert [(r.role, r.match.people_manager) for r in loaded.ruleset.roles] == [("manager", True)]
    assert len(loaded.checksum) == 64


@pytest.mark.parametrize(("body", "message"), [
    ("rules: [{id: r1, requirement: R1, match: {countries: DE}, due: {days: 3}}]",
     "rule 'r1' field 'match.countries': Input should be a valid list"),
    ("rules: [{id: r1, requirement: R1, match: {all: true}, due: {days: 3, after: hire}}]",
     "rule 'r1' field 'due.after'"),
    ("rules: [{id: r1, requirement: R1, match: {}, due: {days: 3}}]",
     "rule 'r1' field 'match': Value error, no criteria"),
    ("rules: [{id: r1, requirement: R1, match: {all: true, countries: [DE]}, due: {days: 3}}]",
     "'all: true' cannot be combined"),
    ("rules: [{id: r1, requirement: R1, match: {all: true}, due: {days: 3}, colour: red}]",
     "rule 'r1' field 'colour': Extra inputs are not permitted"),
    ("rules: [{id: r1, requirement: R9, match: {all: true}, due: {days: 3}}]",
     "rule 'r1' field 'requirement': unknown requirement 'R9'"),
    ("rules: [{id: r1, requirement: R1, match: {all: true}, due: {days: 3}},"
     " {id: r1, requirement: R2, match: {all: true}, due: {days: 3}}]",
     "rule 'r1' field 'id': defined more than once"),
    ("rules: [{id: r1, requirement: R1, match: {min_tenure_days: 90, max_tenure_days: 30}, due: {days: 3}}]",
     "min_tenure_days is greater than max_tenure_days"),
    ("rules: [{id: r1, requirement: R1, match: {job_codes: []}, due: {days: 3}}]",
     "rule 'r1' field 'match.job_codes'"),
    ("rules: [{requirement: R1, match: {all: true}, due: {days: 3}}]",
     "rule '#1' field 'id': Field required"),
    ("rules: [{id: r1, requirement: R1, match: {all: true}, due: {days: -1}}]",
     "rule 'r1' field 'due.days'"),
    ("rules: []\nexemptions: [{person_id: P1, reason: x}]",
     "exemption '#1' field 'reason'"),
    ("rules: []\nexemptions: [{reason: nobody in particular}]",
     "give at least one of person_id, requirement, rule"),
    ("rules: []\nexemptions: [{rule: nope, reason: no such rule}]",
     "exemption #1 field 'rule': unknown rule 'nope'"),
    ("requirements: [{id: OFF, kind: course, title: x}]\nrules: []",
     "requirement '#1' field 'id': Input should be a valid string (YAML reads an unquoted yes/no/on/off"),
    ("rules: []\nsettings: {on_unmatch: delete_everything}",
     "field 'settings.on_unmatch'"),
    ("roles: [{id: m, role: manager, match: {}}]",
     "role rule 'm' field 'match': Value error, no criteria"),
    ("roles: [{id: m, role: manager, attribute: groups, match: {people_manager: true}}]",
     "role rule 'm' field 'attribute'"),
    ("roles: [{id: m, role: a, match: {all: true}}, {id: m, role: b, match: {all: true}}]",
     "role rule 'm' field 'id': defined more than once"),
])
def test_invalid_rules_name_the_rule_and_field(body, message):
    with pytest.raises(RulesError) as err:
        parse_rules(REQ + body, "rules.yaml")
    assert "rules.yaml: " in str(err.value)
    assert message in str(err.value)


def test_requirement_errors_name_the_requirement():
    with pytest.raises(RulesError, match=r"requirement 'R1' field 'kind'"):
        parse_rules("requirements: [{id: R1, kind: webinar, title: x}]\nrules: []", "rules.yaml")
    with pytest.raises(RulesError, match=r"requirement 'R2' field 'recurrence.valid_months'"):
        parse_rules("requirements: [{id: R2, kind: course, title: x, recurrence: {valid_months: 0}}]", "rules.yaml")


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(RulesError, match="rules file not found"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed")
    with pytest.raises(RulesError, match="bad.yaml: not valid YAML"):
        load_rules(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("requirements: [{id: R1, kind: course, title: 'Sécurité'}]".encode("latin-1"))
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(latin)


# --- every dimension on a real pipeline run -------------------------------------------------------
D1 = date(2026, 1, 5)
ORG = ORG_CSV + "ORG0003,Payments,ORG0002,team,ACTIVE\nORG0004,Sales,ORG0001,department,ACTIVE\n"

DIMENSIONS_RULES = """
version: 1
requirements:
  - {id: JOB, kind: course, title: by job code}
  - {id: FAM, kind: course, title: by job family}
  - {id: SUB, kind: course, title: by org subtree}
  - {id: LOC, kind: course, title: by location}
  - {id: CTY, kind: course, title: by country}
  - {id: TYP, kind: course, title: by employment type}
  - {id: MGR, kind: learning_path, title: people managers}
  - {id: TEN, kind: course, title: by tenure}
  - {id: HIR, kind: course, title: by hire date}
  - {id: ALL, kind: certification, title: everyone, recurrence: {valid_months: 12, window_days: 30}}
  - {id: LATER, kind: course, title: rule not active yet}
  - {id: COMBO, kind: course, title: every criterion at once}
rules:
  - {id: job, requirement: JOB, match: {job_codes: [J200]}, due: {days: 10}}
  - {id: fam, requirement: FAM, match: {job_families: [Engineering]}, due: {days: 10}}
  - {id: sub, requirement: SUB, match: {org_subtrees: [org0002]}, due: {days: 10}}
  - {id: loc, requirement: LOC, match: {locations: [PAR]}, due: {days: 10}}
  - {id: cty, requirement: CTY, match: {countries: [fr]}, due: {days: 10}}
  - {id: typ, requirement: TYP, match: {employment_types: [contractor]}, due: {days: 10}}
  - {id: mgr, requirement: MGR, match: {people_manager: true}, due: {days: 60, after: assignment}}
  - {id: ten, requirement: TEN, match: {min_tenure_days: 365, max_tenure_days: 2500}, due: {days: 10}}
  - {id: hir, requirement: HIR, match: {hired_on_or_after: 2025-06-01, hired_before: 2026-01-01}, due: {days: 30, after: start}}
  - {id: all, requirement: ALL, match: {all: true}, due: {days: 10}}
  - {id: later, requirement: LATER, match: {all: true}, due: {days: 10}, active_from: 2026-02-01}
  - id: combo
    requirement: COMBO
    match: {job_families: [Engineering], org_subtrees: [ORG0002], countries: [FR], employment_types: [employee],
            min_tenure_days: 30}
    due: {days: 10}
exemptions:
  - {person_id: P0000006, requirement: ALL, reason: "certified by the regulator", until: 2026-12-31}
  - {rule: typ, reason: "contractors train with their agency", until: 2026-01-04}
"""


def _people():
    return [
        worker(1),                                                           # FIN, ORG0001, LON/GB, 2020 hire
        worker(2, Job_Code="J200", Manager_ID="P0000001"),                   # job code; reports to P1
        worker(3, Job_Family="Engineering", Org_Unit="ORG0003", Location="PAR", Country="FR",
               Time_Zone="Europe/Paris", Manager_ID="P0000001"),             # family, subtree (ORG0003 < ORG0002), location, country
        worker(4, Worker_Type="CTR", Org_Unit="ORG0004", Manager_ID="P0000001"),  # contractor, outside the subtree
        worker(5, Hire_Date="09/01/2025", Start_Date="09/01/2025", Manager_ID="P0000001"),  # hired in the window, tenure < 365
        worker(6, Hire_Date="01/15/2010", Start_Date="01/15/2010", Manager_ID="P0000001"),  # tenure > 2000 days
        worker(7, Worker_Status="T", Termination_Date="12/31/2025", Last_Day_Of_Work="12/31/2025",
               Manager_ID="P0000001"),                                       # terminated: no assignments
    ]


def _run(landing, day, rows, org=ORG, key=None):
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(rows))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(org)
    key = key or f"rules-{day}"
    snaps = pipeline.ingest(key, day)
    pipeline.stage_models(key, day, snaps)
    pipeline.gate(key, day, snaps)
    pipeline.transform(key, day, snaps)


def _q(sql, *args):
    with db.connect() as c:
        return c.execute(sql, args).fetchall()


TRANSCRIPT = ("Record_ID,User_External_ID,User_Email,Course_Code,Status,Completed_On,Score\n"
              "T1,P0000001,,ALL,Passed,2025-01-04,91\n"           # annual: expired on 2026-01-04
              "T2,,user2@example.com,ALL,Completed,2025-06-01,\n"  # by e-mail; valid until 2026-06-01
              "T3,P0000003,,FAM,Failed,2026-01-05T08:00:00Z,40\n")  # a failure on the day: in progress


def _assigned(open_only=True):
    got: dict[str, set[str]] = {}
    for person, req in _q("select person_id, requirement_id from marts.learning_assignments"
                          + (" where is_open" if open_only else "")):
        got.setdefault(req, set()).add(person)
    return got


def test_each_rule_dimension_recurrence_exemption_and_a_role_change(fresh_db, landing, tmp_path, monkeypatch):
    rules = tmp_path / "rules.yaml"
    rules.write_text(DIMENSIONS_RULES)
    monkeypatch.setenv("HRLMS_LEARNING_RULES", str(rules))
    (landing / f"transcripts_{D1.isoformat()}.csv").write_text(TRANSCRIPT)
    _run(landing, D1, _people())

    everyone = {f"P000000{i}" for i in range(1, 7)}           # P7 is terminated: nothing
    assert _assigned() == {
        "JOB": {"P0000002"},
        "FAM": {"P0000003"},
        "SUB": {"P0000003"},                                  # ORG0003 is below ORG0002 (lower-case in the file)
        "LOC": {"P0000003"},
        "CTY": {"P0000003"},                                  # 'fr' in the file
        "TYP": {"P0000004"},
        "MGR": {"P0000001"},                                  # the only one with active reports
        "TEN": {"P0000001", "P0000002", "P0000003", "P0000004"},  # 2,182 days; P5 too new, P6 too long
        "HIR": {"P0000005"},
        "ALL": everyone,
        "COMBO": {"P0000003"},
    }                                                         # LATER: active_from is in the future
    status = {(p, r): (s, due, exp, renew) for p, r, s, due, exp, renew in _q(
        "select person_id, requirement_id, status, due_on, expires_on, renewal_opens_on "
        "from marts.learning_compliance_status")}
    assert status["P0000006", "ALL"][0] == "exempt"            # person exemption in force
    assert status["P0000004", "TYP"][0] == "not_started"       # rule exemption expired the day before
    assert status["P0000001", "ALL"][:3] == ("expired", date(2026, 1, 15), date(2026, 1, 4))
    assert status["P0000002", "ALL"][:4] == ("completed", date(2026, 1, 15), date(2026, 6, 1), date(2026, 5, 2))
    assert status["P0000003", "FAM"][0] == "in_progress"
    assert status["P0000005", "HIR"][1] == date(2026, 2, 4)    # start + 30 already past: 30 days from assignment
    assert status["P0000001", "MGR"][1] == date(2026, 3, 6)    # 60 days after assignment
    # the audience groups the LMS gets: assigned and not exempt
    audience = {p for (p,) in _q("select person_id from marts.lms_desired_group_members where group_key = 'req:ALL'")}
    assert audience == everyone - {"P0000006"}

    # Day 2: P3 moves to Sales in London; P5 becomes P2's manager (so a people manager).
    day2 = date(2026, 1, 6)
    people = _people()
    people[2] = worker(3, Job_Family="Sales", Org_Unit="ORG0004", Location="PAR", Country="FR",
                       Time_Zone="Europe/Paris", Manager_ID="P0000001")
    people[1] = worker(2, Job_Code="J200", Manager_ID="P0000005")
    _run(landing, day2, people)
    now = _assigned()
    assert now["LOC"] == {"P0000003"} and now["CTY"] == {"P0000003"}
    assert "FAM" not in now and "SUB" not in now and "COMBO" not in now
    assert now["MGR"] == {"P0000001", "P0000005"}
    ended = _q("select requirement_id, ended_on, end_reason from marts.learning_assignments "
               "where person_id = 'P0000003' and not is_open order by 1")
    assert ended == [("COMBO", day2, "no_longer_matched"), ("FAM", day2, "no_longer_matched"),
                     ("SUB", day2, "no_longer_matched")]
    # history and completions survive the role change
    assert _q("select count(*) from marts.learning_completions where person_id = 'P0000003' and requirement_id = 'FAM'") == [(1,)]
    assert ("FAM", "unassigned") in {(r, e) for r, e in _q(
        "select requirement_id, event from marts.learning_history where person_id = 'P0000003'")}

    # Rerunning day 2 changes nothing.
    before = _q("select * from marts.learning_assignments order by assignment_id")
    _run(landing, day2, people, key="rules-rerun")
    assert _q("select * from marts.learning_assignments order by assignment_id") == before

    # Preview a candidate file: nothing live changes; the changes are listed per person.
    from hrlms.learning.preview import preview_rules, write_csv

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(DIMENSIONS_RULES
                         .replace("match: {locations: [PAR]}", "match: {locations: [LON]}")
                         .replace("{id: hir, requirement: HIR,", "{id: hir, requirement: HIR, active_until: 2025-12-31,"))
    with db.connect() as conn:
        result = preview_rules(conn, candidate)
    assert set(result.changes) >= {("remove", "LOC", "P0000003", "First3 Last3", "Sales"),
                                   ("remove", "HIR", "P0000005", "First5 Last5", "Company")}
    adds = {(r, p) for a, r, p, _n, _o in result.changes if a == "add"}
    assert adds == {("LOC", p) for p in ("P0000001", "P0000002", "P0000004", "P0000005", "P0000006")}
    assert ("loc", "LOC", 5) in result.per_rule and ("hir", "HIR", 0) in result.per_rule
    assert _q("select * from marts.learning_assignments order by assignment_id") == before
    out = write_csv(result, tmp_path / "preview.csv")
    assert out.read_text().count("\nchange,") == len(result.changes)
    with db.connect() as conn:
        only = preview_rules(conn, candidate, rule="loc")
    assert {a for a, *_ in only.changes} == {"add", "remove"} and {r for _a, r, *_ in only.changes} == {"LOC"}
