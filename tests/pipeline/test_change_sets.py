"""When a build is full and when it is not (hrlms.warehouse.changes), and what a restricted plan is given.

The small scenario of tests/e2e/test_people_scenario.py through the real pipeline (run_all: real Postgres,
dbt, GX and scim2-server). Every restricted plan is also checked against the full diff
(HRLMS_PLAN_CHECK_SCOPE, set in tests/conftest.py).
"""
from __future__ import annotations

import html
from datetime import datetime, timezone

import pytest

from hrlms import pipeline
from hrlms.sync.breaker import PlanHeld
from hrlms.warehouse import db
from tests.e2e.test_people_scenario import D1, D2, ORGS_1, ORGS_2, day1, day2, person, scenario_mapping, write_day

__all__ = ["scenario_mapping"]   # the fixture, used by name


def at(day, hour=0):
    return datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc).replace(hour=hour)


def stage(run_key: str, name: str) -> dict:
    with db.connect() as c:
        row = c.execute("select detail from audit.stage_runs where run_key = %s and stage = %s",
                        (run_key, name)).fetchone()
    return row[0] if row else {}


def people(run_key: str) -> dict[str, list[str]]:
    with db.connect() as c:
        return dict(c.execute("select p.person_id, p.reasons from audit.change_set_people p "
                              "join audit.change_sets s using (change_set_id) where s.run_key = %s", (run_key,)))


def test_full_builds_and_restricted_plans(fresh_db, fresh_lms, landing, scenario_mapping, monkeypatch, tmp_path):
    write_day(landing, D1, day1(), ORGS_1)
    pipeline.run_all("d1", at(D1))
    assert stage("d1", "transform")["changes"]["built_because"] == "first build (no completed build to compare with)"
    assert stage("d1", "plan")["scope"]["mode"] == "full"

    # An ordinary day: only what changed is compared, and the report says who and why.
    write_day(landing, D2, day2(), ORGS_2)
    pipeline.run_all("d2", at(D2))
    cs, scope = stage("d2", "transform")["changes"], stage("d2", "plan")["scope"]
    assert not cs["full_build"] and scope["mode"] == "restricted"
    got = people("d2")
    assert {"P14", "P17", "P18"} <= {p for p, r in got.items() if "hr_edit" in r or "new" in r}
    assert "gone" in got["P16"]                                   # converted: P17 took the account
    assert "org" in got["P12"] and "org" in got["P13"]             # their unit moved to the top and was renamed
    assert "P10" not in got                                        # nothing about P10 changed
    assert scope["people"] < 17
    page = html.unescape(next((tmp_path / "reports").rglob("run_2026-01-06_d2.html")).read_text())
    assert "What changed (change set)" in page and "incremental build" in page and "hr_edit" in page

    # The same day's file again at 15:00 UTC: nothing in HR changed, but P11's last day (Jan 6) has ended in
    # Tokyo (Jan 7, 00:00) and not in London — only P11 (and who P11's state touches) is compared.
    pipeline.run_all("d2-15h", at(D2, 15))
    got = people("d2-15h")
    assert got["P11"] == ["dates"] and "P12" not in got          # LA's last day has not ended yet
    with db.connect() as c:
        user_ops = c.execute("select person_id, op_type from sync.ops where plan_id = %s and person_id is not null",
                             (stage("d2-15h", "plan")["plan_id"],)).fetchall()
    assert user_ops == [("P11", "deactivate_user")]

    # A backfill (the logical moment goes back) and an explicit full refresh are full builds.
    pipeline.run_all("d2-again", at(D2))
    assert stage("d2-again", "transform")["changes"]["built_because"].startswith("the logical moment went back")
    assert stage("d2-again", "plan")["scope"]["mode"] == "full"
    pipeline.transform("d2-refresh", at(D2), pipeline.ingest("d2-refresh", at(D2)), full_refresh=True)
    assert stage("d2-refresh", "transform")["changes"]["built_because"] == "full_refresh requested"

    # Too large a change for a restricted plan: a full build, said so.
    monkeypatch.setenv("HRLMS_INCREMENTAL_MAX_SHARE", "0.1")
    rows = [r | {"Job_Title": "Renamed"} if r["Employee_ID"] in ("P10", "P11", "P12") else r for r in day2()]
    write_day(landing, D2.replace(day=7), rows + [person("P30", "ORG3", "P03")], ORGS_2)
    pipeline.run_all("d3", at(D2.replace(day=7)))
    why = stage("d3", "transform")["changes"]["built_because"]
    assert "> HRLMS_INCREMENTAL_MAX_SHARE 10%" in why and stage("d3", "plan")["scope"]["mode"] == "full"


@pytest.mark.parametrize("change", ["rules", "root", "exemption"])
def test_rules_or_top_of_the_tree_change_makes_a_full_build(change, fresh_db, fresh_lms, landing, scenario_mapping,
                                                           monkeypatch, tmp_path):
    if change == "exemption":   # in the rules from day 1: an exemption for everyone on a requirement, from D2
        from hrlms.settings import Settings

        rules = tmp_path / "rules.yaml"
        text = Settings.from_env().learning_rules.read_text()
        assert "\nexemptions: []\n" in text
        rules.write_text(text.replace("\nexemptions: []\n", f"\nexemptions:\n  - {{requirement: SEC-101, reason: audit "
                                                            f"pause, since: {D2}}}\n"))
        monkeypatch.setenv("HRLMS_LEARNING_RULES", str(rules))
    write_day(landing, D1, day1(), ORGS_1)
    pipeline.run_all("d1", at(D1))
    if change == "exemption":
        orgs = ORGS_1
    elif change == "rules":
        from hrlms.settings import Settings

        rules = tmp_path / "rules.yaml"
        rules.write_text(Settings.from_env().learning_rules.read_text().replace("days: 30, after: start",
                                                                               "days: 31, after: start"))
        monkeypatch.setenv("HRLMS_LEARNING_RULES", str(rules))
        orgs = ORGS_1
    else:
        orgs = [o if o[0] != "ORG1" else ("ORG1", "Company Group", "", "P01") for o in ORGS_1]
    write_day(landing, D2, day1(), orgs)
    if change == "exemption":   # everyone exempt from SEC-101 leaves its audience group: the breaker holds that
        with pytest.raises(PlanHeld, match="group memberships removed"):
            pipeline.run_all("d2", at(D2))
    else:
        pipeline.run_all("d2", at(D2))
    why = stage("d2", "transform")["changes"]["built_because"]
    assert why == {"rules": "changed since the last build: the learning rules",
                   "root": "an org change at the top of the tree (unit ORG1)",
                   "exemption": f"exemption 1 starts its active window on {D2}"}[change]
    assert stage("d2", "plan")["scope"]["mode"] == "full"
