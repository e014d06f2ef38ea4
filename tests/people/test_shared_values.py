"""A work e-mail, LMS userName or employee number that two people share is an HR defect the gate finds
(duplicate_email / duplicate_username / duplicate_employee_number): the line that would take the value
from the person who keeps it is quarantined, nothing about it reaches the LMS, both people are on the
HR fix list until HR fixes the line. Real pipeline stages, real Postgres, real scim2-server."""
from __future__ import annotations

import json
from pathlib import Path

from hrlms import pipeline

from ..sources.hrfiles import worker
from .test_people import D1, D2, D3, q, run_day

ISSUES = ("select person_id, issue_type, field, value, related_person_ids, is_open, first_seen_on, closed_on "
          "from marts.dq_person_issues where issue_type like 'duplicate\\_%%' order by 1, 2")
USER_OPS = ("select op_type, person_id from sync.ops where plan_id = %s and person_id is not null "
            "and op_type like '%%user' order by 2, 1")


def provision(day, rows, landing, report=True):
    key = f"test-{day}"
    planned = pipeline.plan(key, day, run_day(landing, day, rows))
    pipeline.apply(key, day, planned["plan_id"])
    if report:
        return planned["plan_id"], json.loads(Path(pipeline.report(key, day)).with_suffix(".json").read_text())
    return planned["plan_id"], None


def lms(fresh_lms):
    from hrlms.sync.scim import LmsConfig, ScimClient

    with ScimClient(LmsConfig(*fresh_lms)) as c:
        return {u["externalId"]: (u["userName"], u["emails"][0]["value"], u["active"]) for u in c.iter_users()}


def quarantined(url, day):
    return q(url, "select record_key, rule, field, value, related_key from dq.quarantine q "
                  "join raw_hris.snapshots s using (snapshot_id) where s.logical_date = %s and q.entity = 'workers' "
                  "order by record_key, rule", day)


def dead_letters(url):
    return q(url, "select person_id, op_type, last_error from sync.ops where status in ('dead_letter', 'escrow')")


def test_a_shared_value_quarantines_the_later_line_until_hr_fixes_it_and_a_rehire_is_still_linked(
        fresh_db, fresh_lms, landing):
    base = [worker(i) for i in range(1, 21)]
    provision(D1, base, landing, report=False)
    before = lms(fresh_lms)
    # Day 2. P4's new e-mail and login are P3's (the LMS would refuse the userName); P21 is new with P2's
    # employee number (P2 is here: not a rehire); P22 and P23 are new and share an e-mail, P23 was hired
    # first. P9 leaves (gone from the file), P10 is terminated.
    day2 = [*base[:3], worker(4, Work_Email="user3@example.com", Login="user3"), *base[4:8], *base[10:],
            worker(10, Worker_Status="T", Termination_Date="01/05/2026", Last_Day_Of_Work="01/05/2026"),
            worker(21, Employee_Number="100002", Work_Email="new21@example.com", Login="new21"),
            worker(22, Work_Email="shared@example.com", Login="new22", Hire_Date="03/01/2021"),
            worker(23, Work_Email="shared@example.com", Login="new23", Hire_Date="02/01/2021")]
    plan2, report2 = provision(D2, day2, landing)

    assert dead_letters(fresh_db) == []
    assert quarantined(fresh_db, D2) == [
        ("P0000004", "duplicate_email", "work_email", "user3@example.com", "P0000003"),
        ("P0000004", "duplicate_username", "username", "user3", "P0000003"),
        ("P0000021", "duplicate_employee_number", "employee_number", "100002", "P0000002"),
        ("P0000022", "duplicate_email", "work_email", "shared@example.com", "P0000023"),
    ]
    # nothing is sent for the quarantined lines; the keepers are untouched, P23 gets its account
    assert q(fresh_db, USER_OPS, plan2) == [
        ("deactivate_user", "P0000009"), ("deactivate_user", "P0000010"), ("create_user", "P0000023")]
    after = lms(fresh_lms)
    assert {k: v for k, v in after.items() if k in before and k not in ("P0000009", "P0000010")} == {
        k: v for k, v in before.items() if k not in ("P0000009", "P0000010")}
    assert after["P0000023"] == ("new23", "shared@example.com", True) and set(after) == set(before) | {"P0000023"}
    # both people are on the HR fix list, each naming the other
    open_issues = [
        ("P0000002", "duplicate_employee_number", "employee_number", "100002", "P0000021", True, D2, None),
        ("P0000003", "duplicate_email", "work_email", "user3@example.com", "P0000004", True, D2, None),
        ("P0000003", "duplicate_username", "username", "user3", "P0000004", True, D2, None),
        ("P0000004", "duplicate_email", "work_email", "user3@example.com", "P0000003", True, D2, None),
        ("P0000004", "duplicate_username", "username", "user3", "P0000003", True, D2, None),
        ("P0000021", "duplicate_employee_number", "employee_number", "100002", "P0000002", True, D2, None),
        ("P0000022", "duplicate_email", "work_email", "shared@example.com", "P0000023", True, D2, None),
        ("P0000023", "duplicate_email", "work_email", "shared@example.com", "P0000022", True, D2, None),
    ]
    assert q(fresh_db, ISSUES) == open_issues
    assert {(p, t, o) for p, t, _f, _v, o, *_ in open_issues} <= {
        (i["person_id"], i["issue"], i["other_person"]) for i in report2["issues"]}
    assert {(r["record"], r["rule"], r["held_by"]) for r in report2["quarantine"]} == {
        ("P0000004", "duplicate_email", "P0000003"), ("P0000004", "duplicate_username", "P0000003"),
        ("P0000021", "duplicate_employee_number", "P0000002"), ("P0000022", "duplicate_email", "P0000023")}

    # Day 3. HR fixed the three lines: the issues close and the people flow (P4 keeps its own account).
    # P5 takes the e-mail and login of the leaver P10, whose account is inactive: quarantined. P24 is
    # new with P9's employee number: a rehire, linked to P9's account (and reactivated), not a conflict.
    day3 = [*base[:4], worker(5, Work_Email="user10@example.com", Login="user10"), *base[5:8], *base[10:], day2[18],
            worker(21, Employee_Number="200021", Work_Email="new21@example.com", Login="new21"),
            worker(22, Work_Email="new22@example.com", Login="new22", Hire_Date="03/01/2021"), day2[-1],
            worker(24, Employee_Number="100009", Work_Email="back24@example.com", Login="back24")]
    plan3, report3 = provision(D3, day3, landing)
    assert dead_letters(fresh_db) == []
    assert quarantined(fresh_db, D3) == [
        ("P0000005", "duplicate_email", "work_email", "user10@example.com", "P0000010"),
        ("P0000005", "duplicate_username", "username", "user10", "P0000010"),
    ]
    assert q(fresh_db, "select account_person_id, identity_rule from intermediate.int_workers_identity "
                       "where person_id = 'P0000024'") == [("P0000009", "employee_number")]
    assert q(fresh_db, ISSUES) == [(*i[:5], False, D2, D3) for i in open_issues[:5]] + [
        ("P0000005", "duplicate_email", "work_email", "user10@example.com", "P0000010", True, D3, None),
        ("P0000005", "duplicate_username", "username", "user10", "P0000010", True, D3, None),
        ("P0000010", "duplicate_email", "work_email", "user10@example.com", "P0000005", True, D3, None),
        ("P0000010", "duplicate_username", "username", "user10", "P0000005", True, D3, None),
    ] + [(*i[:5], False, D2, D3) for i in open_issues[5:]]
    assert {(i["person_id"], i["issue"]) for i in report3["issues"] if i["issue"].startswith("duplicate_")} == {
        ("P0000005", "duplicate_email"), ("P0000005", "duplicate_username"),
        ("P0000010", "duplicate_email"), ("P0000010", "duplicate_username")}
    last = lms(fresh_lms)
    assert last["P0000005"] == before["P0000005"] and last["P0000010"] == after["P0000010"]
    assert last["P0000004"] == before["P0000004"]
    assert last["P0000009"] == ("back24", "back24@example.com", True)
    assert last["P0000021"] == ("new21", "new21@example.com", True)
    assert last["P0000022"] == ("new22", "new22@example.com", True)
    assert q(fresh_db, USER_OPS, plan3) == [
        ("reactivate_user", "P0000009"), ("create_user", "P0000021"), ("create_user", "P0000022")]
