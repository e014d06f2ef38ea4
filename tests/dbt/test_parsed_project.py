"""The parsed dbt project is kept in the target folder for the next process (each Airflow task is one): it is
loaded instead of parsed while the project, its settings, the warehouse and dbt are the same, and parsed again
when any of them differs."""
from __future__ import annotations

from datetime import date

from hrlms.transform import dbt
from hrlms.warehouse import db


def _parse(target, monkeypatch, env: dict[str, str]):
    monkeypatch.setattr(dbt, "_PARSED", None)      # as in a new process
    with dbt._env(dbt.dbt_env() | env):
        return dbt._parsed(str(target), dbt.cli_options(str(target)))


def test_the_parsed_project_is_kept_for_the_next_process(fresh_db, tmp_path, monkeypatch):
    target = tmp_path / "target"
    first = _parse(target, monkeypatch, {})
    assert first is not None and (target / dbt.MANIFEST_CACHE).is_file()
    assert "model.hrlms.stg_hris__snapshot_workers" in first.nodes
    # dbt's parse writes manifest.json: the next process loads the kept project instead, and builds with it
    (target / "manifest.json").unlink()
    again = _parse(target, monkeypatch, {})
    assert again is not first and sorted(again.nodes) == sorted(first.nodes)
    assert not (target / "manifest.json").exists()
    with db.connect() as conn:
        db.bootstrap(conn)
    monkeypatch.setattr(dbt, "_PARSED", None)
    parsed_at = (target / "partial_parse.msgpack").stat().st_mtime_ns     # dbt's parse writes it
    res = dbt.run_dbt(["build", "--empty", "--exclude-resource-type", "unit_test"], snapshot_id=-1,
                      org_snapshot_id=-1, logical_date=date(2026, 1, 5), target_path=str(target), tracked=True)
    assert res.success, res.failures
    assert res.counts.get("success", 0) > 50 and res.counts.get("pass", 0) > 100
    assert (target / "partial_parse.msgpack").stat().st_mtime_ns == parsed_at
    # another warehouse (or project, setting, dbt version) is another key: parsed again, and kept under it
    other = _parse(target, monkeypatch, {"DBT_DBNAME": "another_warehouse"})
    assert other is not None and (target / "manifest.json").is_file()
    assert other.nodes["model.hrlms.stg_hris__snapshot_workers"].database == "another_warehouse"
    # an unreadable file is no manifest: parsed again
    (target / dbt.MANIFEST_CACHE).write_bytes(b"not a pickle")
    (target / "manifest.json").unlink()
    assert _parse(target, monkeypatch, {}) is not None and (target / "manifest.json").is_file()
