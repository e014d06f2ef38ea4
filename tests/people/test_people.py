"""History (SCD2), identity (one LMS account per person for life) and HR data issues over real
multi-day pipelines (ingest → staging → gate → dbt build) on a fresh Postgres. No LMS: the marts are
what is checked."""
from __future__ import annotations

from datetime import date

from hrlms import pipeline
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker

D1, D2, D3, D4 = date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7), date(2026, 1, 8)
ORG_CSV_3 = ORG_CSV + "ORG0003,Sales,ORG0001,department,ACTIVE\n"


def run_day(landing, day, rows, org_csv=ORG_CSV_3):
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(rows))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(org_csv)
    key = f"test-{day}"
    snaps = pipeline.ingest(key, day)
    pipeline.stage_models(key, day, snaps)
    pipeline.gate(key, day, snaps)
    pipeline.transform(key, day, snaps)
    return snaps


def q(url, sql, *args):
    with db.connect(url) as c:
        return c.execute(sql, args).fetchall()


def as_of(url, day):
    """person -> (org unit, manager) on `day`, by the documented SCD2 pattern (analyses/workers_as_of.sql)."""
    return {p: (o, m) for p, o, m in q(
        url, "select person_id, org_unit_code, manager_person_id from marts.workers_history "
             "where valid_from_on <= %s and (valid_to_on is null or %s < valid_to_on)", day, day)}


def everything(url):
    return {t: q(url, f"select * from {t} order by 1, 2, 3") for t in (
        "snapshots.snap_workers", "snapshots.snap_org_units", "marts.workers_history",
        "intermediate.int_identity_decisions", "marts.dq_person_issues", "marts.lms_desired_users")}


def test_history_answers_as_of_a_past_date_after_a_transfer_and_a_leaver(fresh_db, landing):
    base = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 11)]
    run_day(landing, D1, base)
    day2 = [dict(r) for r in base]
    day2[4] = worker(5, Org_Unit="ORG0002", Manager_ID="P0000002")            # transfer on day 2
    run_day(landing, D2, day2)
    day3 = day2[:-1]                                                          # P10 vanishes on day 3
    day3[4] = worker(5, Org_Unit="ORG0003", Manager_ID="P0000003")            # and P5 moves again
    run_day(landing, D3, day3)

    assert as_of(fresh_db, D1)["P0000005"] == ("ORG0001", "P0000001")
    assert as_of(fresh_db, D2)["P0000005"] == ("ORG0002", "P0000002")
    assert as_of(fresh_db, D3)["P0000005"] == ("ORG0003", "P0000003")
    assert "P0000010" in as_of(fresh_db, D2) and "P0000010" not in as_of(fresh_db, D3)
    versions = q(fresh_db, "select valid_from_on, valid_to_on, is_current from marts.workers_history "
                           "where person_id = 'P0000005' order by valid_from_on")
    assert versions == [(D1, D2, False), (D2, D3, False), (D3, None, True)]
    assert q(fresh_db, "select valid_to_on from marts.workers_history where person_id = 'P0000010'") == [(D3,)]
    # org units: ORG0003 renamed on day 3
    run_day(landing, D4, day3, ORG_CSV_3.replace("Sales", "Sales & Marketing"))
    assert q(fresh_db, "select org_unit_name, valid_from_on, valid_to_on from marts.org_units_history "
                       "where org_unit_code = 'ORG0003' order by valid_from_on") == [
        ("Sales", D1, D4), ("Sales & Marketing", D4, None)]


def test_rehire_after_a_gap_keeps_the_original_account(fresh_db, landing):
    base = [worker(i) for i in range(1, 11)]
    run_day(landing, D1, base)
    run_day(landing, D2, base[:-1])                                           # P10 leaves
    rehired = worker(11, Employee_Number="100010", Work_Email="back@example.com", Login="back")
    run_day(landing, D3, base[:-1] + [rehired])                               # new id, same employee number
    ident = dict(q(fresh_db, "select person_id, account_person_id from intermediate.int_workers_identity"))
    assert ident["P0000011"] == "P0000010"
    rule = q(fresh_db, "select identity_rule, is_ambiguous from intermediate.int_workers_identity "
                       "where person_id = 'P0000011'")
    assert rule == [("employee_number", False)]
    desired = dict(q(fresh_db, "select person_id, user_name from marts.lms_desired_users"))
    assert desired["P0000010"] == "back" and "P0000011" not in desired
    run_day(landing, D4, base[:-1] + [rehired])                               # the next day: still linked
    ident = dict(q(fresh_db, "select person_id, account_person_id from intermediate.int_workers_identity"))
    assert ident["P0000011"] == "P0000010"
    assert q(fresh_db, "select account_person_id from marts.workers_history where person_id = 'P0000011'") == [
        ("P0000010",)]


def test_ambiguous_identity_waits_for_review_then_a_resolution_links_it(fresh_db, landing):
    base = [worker(i) for i in range(1, 11)]
    run_day(landing, D1, base)
    run_day(landing, D2, base[:-2])                                           # P9 and P10 leave
    # employee number of P9, work email of P10: two accounts → ambiguous
    odd = worker(12, Employee_Number="100009", Work_Email="user10@example.com", Login="odd")
    run_day(landing, D3, base[:-2] + [odd])
    assert q(fresh_db, "select person_id, matched_rule, candidate_account_ids, first_seen_on "
                       "from marts.identity_review") == [("P0000012", "employee_number", "P0000009,P0000010", D3)]
    desired = {r[0] for r in q(fresh_db, "select person_id from marts.lms_desired_users")}
    assert "P0000012" not in desired and len(desired) == 8
    assert q(fresh_db, "select value, is_open from marts.dq_person_issues "
                       "where person_id = 'P0000012' and issue_type = 'identity_ambiguous'") == [
        ("P0000009,P0000010", True)]
    with db.connect(fresh_db) as c, c.transaction():
        c.execute("insert into sync.identity_resolutions (person_id, resolution, account_person_id, resolved_by) "
                  "values ('P0000012', 'link', 'P0000010', 'test')")
    run_day(landing, D4, base[:-2] + [odd])
    assert q(fresh_db, "select account_person_id, identity_rule from intermediate.int_workers_identity "
                       "where person_id = 'P0000012'") == [("P0000010", "resolved_link")]
    assert q(fresh_db, "select count(*) from marts.identity_review") == [(0,)]
    assert q(fresh_db, "select user_name from marts.lms_desired_users where person_id = 'P0000010'") == [("odd",)]
    assert q(fresh_db, "select is_open, closed_on from marts.dq_person_issues "
                       "where person_id = 'P0000012' and issue_type = 'identity_ambiguous'") == [(False, D4)]


def test_quarantined_bad_email_is_an_issue_until_fixed_and_reruns_change_nothing(fresh_db, landing):
    rows = [worker(i, Manager_ID="P0000001" if i > 1 else "") for i in range(1, 11)]
    rows[3] = worker(4, Work_Email="not-an-email", Manager_ID="P0000001")
    run_day(landing, D1, rows)
    issue = ("select issue_type, field, value, check_name, first_seen_on, last_seen_on, is_open, closed_on "
             "from marts.dq_person_issues where person_id = 'P0000004'")
    assert q(fresh_db, issue) == [("invalid_email", "work_email", "not-an-email", "invalid_email", D1, D1, True, None)]
    before = everything(fresh_db)
    run_day(landing, D1, rows)                                                # the same day again
    assert everything(fresh_db) == before
    rows[3] = worker(4, Manager_ID="P0000001")                                # HR fixed it
    run_day(landing, D2, rows)
    assert q(fresh_db, issue) == [("invalid_email", "work_email", "not-an-email", "invalid_email", D1, D1, False, D2)]
    before = everything(fresh_db)
    run_day(landing, D2, rows)
    assert everything(fresh_db) == before
    rows[3] = worker(4, Work_Email="still@bad@", Manager_ID="P0000001")      # it comes back: reopened
    run_day(landing, D3, rows)
    assert q(fresh_db, issue) == [("invalid_email", "work_email", "still@bad@", "invalid_email", D1, D3, True, None)]


def test_a_quarantined_line_never_hands_its_account_to_a_new_person(fresh_db, fresh_lms, landing):
    """A bad line keeps its person's LMS account exactly as it was — not linked to a newcomer carrying
    its employee number or e-mail, not deactivated because the line lost its person_id."""
    from hrlms.sync.scim import LmsConfig, ScimClient

    def provision(day, rows):
        planned = pipeline.plan(f"test-{day}", day, run_day(landing, day, rows))
        pipeline.apply(f"test-{day}", day, planned["plan_id"])
        return planned["plan_id"]

    def lms():
        with ScimClient(LmsConfig(*fresh_lms)) as c:
            return {u["externalId"]: (u["userName"], u["emails"][0]["value"], u["active"]) for u in c.iter_users()}

    base = [worker(i) for i in range(1, 11)]
    provision(D1, base)
    before = lms()
    assert len(before) == 10
    # P10's line says terminated but is bad (terminated before hire: quarantined) and P9's line lost its
    # person id (quarantined); two new people carry P10's employee number and P9's work email.
    day2 = base[:8] + [
        worker(9, Employee_ID=""),
        worker(10, Worker_Status="T", Termination_Date="01/01/2019"),
        worker(11, Employee_Number="100010", Work_Email="new11@example.com", Login="new11"),
        worker(12, Employee_Number="200012", Work_Email="user9@example.com", Login="new12"),
    ]
    plan2 = provision(D2, day2)
    assert q(fresh_db, "select count(*) from dq.quarantine where entity = 'workers'") == [(2,)]
    ident = {r[0]: r[1:] for r in q(fresh_db, "select person_id, account_person_id, is_ambiguous "
                                              "from intermediate.int_workers_identity")}
    assert ident["P0000011"] == (None, True) and ident["P0000012"] == (None, True)
    assert {p for p, in q(fresh_db, "select person_id from marts.identity_review")} == {"P0000011", "P0000012"}
    assert q(fresh_db, "select op_type, person_id from sync.ops where plan_id = %s", plan2) == []
    assert lms() == before
    # HR fixes both lines (and P11's employee number, P12's e-mail: with P9 and P10 back they would be
    # shared values, quarantined as duplicate_employee_number / duplicate_email): the newcomers are
    # different people, with accounts of their own
    provision(D3, base + [worker(11, Employee_Number="200011", Work_Email="new11@example.com", Login="new11"),
                          worker(12, Employee_Number="200012", Work_Email="new12@example.com", Login="new12")])
    ident = {r[0]: r[1:] for r in q(fresh_db, "select person_id, account_person_id, is_ambiguous "
                                              "from intermediate.int_workers_identity")}
    assert ident["P0000011"] == ("P0000011", False) and ident["P0000012"] == ("P0000012", False)
    after = lms()
    assert {k: v for k, v in after.items() if k in before} == before
    assert after["P0000011"] == ("new11", "new11@example.com", True)
