"""LMS roles by rule through the real DAG (dbt, GX, scim2-server): a worker who gets a first direct report
gains the manager role, one who loses the last loses it, and a rerun sends nothing."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hrlms.sync import outbound
from hrlms.sync.scim import LmsConfig, ScimClient
from hrlms.warehouse import db

from .test_people_scenario import D1, D2, person, scenario_mapping, write_day  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

ORGS = [("ORG1", "Company", "", "P01"), ("ORG2", "Finance", "ORG1", "P02")]


def _run(dag, day):
    run = dag.test(logical_date=datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc))
    assert run.state == "success", day
    return run


def _roles(client) -> dict[str, list[str]]:
    return {u["externalId"]: sorted(r["value"] for r in u.get("roles") or [] if r.get("type") == "hrlms")
            for u in client.iter_users()}


@pytest.mark.usefixtures("scenario_mapping")
def test_the_manager_role_follows_direct_reports(provision_dag, fresh_db, fresh_lms, landing, tmp_path, monkeypatch):
    mapping = tmp_path / "lms.yaml"
    mapping.write_text(outbound.DEFAULT_LMS_MAPPING.read_text() + "  - name: roles\n"
                       "    path: roles[type eq \"hrlms\"].value\n    from: roles\n")
    monkeypatch.setenv("HRLMS_LMS_MAPPING", str(mapping))
    client = ScimClient(LmsConfig(*fresh_lms))

    write_day(landing, D1, [person("P01", "ORG1", None), person("P02", "ORG2", "P01"),
                            person("P03", "ORG2", "P02"), person("P04", "ORG2", "P03")], ORGS)
    _run(provision_dag, D1)
    assert _roles(client) == {"P01": ["manager"], "P02": ["manager"], "P03": ["manager"], "P04": []}

    # P04 now reports to P02 (P03 loses their last report) and gets a first report of their own (a hire)
    write_day(landing, D2, [person("P01", "ORG1", None), person("P02", "ORG2", "P01"),
                            person("P03", "ORG2", "P02"), person("P04", "ORG2", "P02"),
                            person("P05", "ORG2", "P04")], ORGS)
    run = _run(provision_dag, D2)
    assert _roles(client) == {"P01": ["manager"], "P02": ["manager"], "P03": [], "P04": ["manager"], "P05": []}
    with db.connect(fresh_db) as c:
        changed = dict(c.execute("select person_id, changed_fields from sync.ops o join sync.plans p using (plan_id) "
                                 "where p.run_key = %s and op_type = 'update_user'", (run.run_id,)).fetchall())
    # P04's update sets their new manager P02 too (its set_manager then sends nothing)
    assert changed == {"P03": ["roles"], "P04": ["roles", "manager"]}

    rerun = _run(provision_dag, D2)
    with db.connect(fresh_db) as c:
        writes = c.execute("select detail -> 'writes' from audit.stage_runs where run_key = %s and stage = 'apply'",
                           (rerun.run_id,)).fetchone()[0]
    assert writes == 0
    client.close()
