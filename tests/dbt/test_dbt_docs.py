"""`make dbt-docs`: `dbt docs generate` works against a fresh warehouse (built empty first), and the docs
show every mart and exposure with its lineage and every mart's columns."""
from __future__ import annotations

import json

from hrlms.transform import docs
from hrlms.transform.dbt import PROJECT_DIR


def test_dbt_docs_generate_has_every_mart_and_exposure(fresh_db, tmp_path):
    out = docs.generate(tmp_path / "docs")
    assert (out / "index.html").is_file() and (out / "static_index.html").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    catalog = json.loads((out / "catalog.json").read_text())

    marts = {p.stem for p in (PROJECT_DIR / "models" / "marts").rglob("*.sql")}
    models = {n["name"]: uid for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    assert marts and marts <= set(models), marts - set(models)
    for name in marts:
        node = manifest["nodes"][models[name]]
        assert node["depends_on"]["nodes"], f"{name} has no lineage"
        assert catalog["nodes"][models[name]]["columns"], f"{name} has no columns in the catalog"

    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    yml = "".join(p.read_text() for p in (PROJECT_DIR / "models").rglob("_*exposures*.yml"))
    assert {"hr_compliance_report", "workforce_analytics_bi"} <= set(exposures)
    for name, exposure in exposures.items():
        assert f"name: {name}" in yml
        assert exposure["depends_on"]["nodes"] and set(exposure["depends_on"]["nodes"]) <= set(models.values())
    # the child map is what the lineage graph draws: each mart an exposure reads points at it
    assert any(c.startswith("exposure.") for c in manifest["child_map"][models["workers"]])


def test_the_reporting_tables_are_nothing_the_plan_reads(fresh_db, tmp_path):
    """hrlms.pipeline.marts builds the models tagged reporting after the apply: no other table may read one (it
    would read the last build's rows; a view over one is rebuilt with them), none may be a view (a table rebuilt
    under a view drops it until the marts stage), and the plan's own inputs are not among them."""
    from datetime import date

    from hrlms.transform.dbt import run_dbt

    assert run_dbt(["parse"], snapshot_id=-1, org_snapshot_id=-1, logical_date=date(2026, 1, 5),
                   target_path=str(tmp_path / "target"), tracked=True).success
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    nodes = {uid: n for uid, n in manifest["nodes"].items() if n["resource_type"] in ("model", "snapshot")}
    reporting = {uid for uid, n in nodes.items() if "reporting" in n["tags"]}
    assert {nodes[u]["name"] for u in reporting} >= {"int_learning_compliance_counts", "learning_compliance_monthly",
                                                     "dq_person_issues"}
    readers = [(n["name"], nodes[p]["name"]) for uid, n in nodes.items() if uid not in reporting
               for p in n["depends_on"]["nodes"] if p in reporting and n["config"]["materialized"] != "view"]
    assert not readers, f"models that read a reporting model: {readers}"
    assert not [nodes[u]["name"] for u in reporting if nodes[u]["config"]["materialized"] == "view"]
    planned = {"lms_desired_users", "lms_desired_groups", "lms_desired_group_members", "int_identity_decisions",
               "access_events", "learning_compliance_status"}
    assert not planned & {nodes[u]["name"] for u in reporting}
    # a data test tagged reporting waits for the marts too: it may judge nothing the plan reads
    upstream, todo = set(), [u for u, n in nodes.items() if n["name"].startswith("lms_desired_")]
    while todo:
        u = todo.pop()
        if u not in upstream:
            upstream.add(u)
            todo += manifest["nodes"].get(u, {}).get("depends_on", {}).get("nodes", [])
    late = {uid: t for uid, t in manifest["nodes"].items() if t["resource_type"] == "test" and "reporting" in t["tags"]}
    assert {t["attached_node"] for t in late.values()} >= {
        "model.hrlms.learning_history", "model.hrlms.int_data_issues_org", "model.hrlms.int_managers_all"}
    assert not [uid for uid, t in late.items() if set(t["depends_on"]["nodes"]) & upstream]
    # the tests left out of a build on the last build's org file (tag org_structure) judge only what that file
    # decides: org_unit_tree's units and parents, and the hierarchy bridge (tag org_snapshot) against them
    structure = [t for t in manifest["nodes"].values() if t["resource_type"] == "test" and "org_structure" in t["tags"]]
    assert len(structure) == 5
    org_file_models = {u for u, n in nodes.items() if "org_snapshot" in n["tags"]} | {"model.hrlms.org_unit_tree"}
    assert not [t["name"] for t in structure if not set(t["depends_on"]["nodes"]) <= org_file_models]
    assert {t["column_name"] for t in structure} == {"org_unit_code", "parent_org_unit_code", "ancestor_org_unit_code",
                                                     "descendant_org_unit_code"}
