"""Every dbt unit test of the project, once (the daily pipeline build skips them: they test the SQL,
not the data). Upstream relations must exist for dbt to type the fixtures, so the whole project is
built empty (`--empty`) on a fresh, bootstrapped warehouse, unit tests included."""
from __future__ import annotations

import json
from datetime import date

from hrlms.transform import dbt
from hrlms.warehouse import db


def test_every_dbt_unit_test_passes(fresh_db, tmp_path):
    with db.connect() as conn:
        db.bootstrap(conn)
    res = dbt.run_dbt(["build", "--empty"], snapshot_id=-1, org_snapshot_id=-1, logical_date=date(2026, 1, 5),
                      target_path=str(tmp_path / "target"))
    assert res.success, res.failures
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    unit = {r["unique_id"].split(".")[-1]: r["status"] for r in results if r["unique_id"].startswith("unit_test.")}
    assert len(unit) >= 20, sorted(unit)
    assert set(unit.values()) == {"pass"}, {k: v for k, v in unit.items() if v != "pass"}
    for name in ("compliance_status_flips_at_the_workers_local_day_boundaries",
                 "role_change_ends_assignments_and_keeps_history", "keep_assigned_keeps_open_spells_of_active_workers",
                 "effective_dating_uses_each_workers_local_date",
                 "dates_parse_in_snapshot_format_and_impossible_ones_flagged"):
        assert name in unit
