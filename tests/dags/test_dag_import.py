"""Every DAG file imports without errors, quickly, and without heavy imports at parse time."""
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS.glob("*.py"))
HEAVY = ("great_expectations", "dbt", "pandas", "psycopg", "scim2_models", "hrlms.pipeline")


def test_dagbag_has_no_import_errors(local_stack):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "hrlms_provision" in bag.dag_ids
    dag = bag.get_dag("hrlms_provision")
    order = [t.task_id for t in dag.topological_sort()]
    assert set(order) == {"route", "decide", "ingest", "completions", "staging", "gate", "transform",
                          "export_enrolments", "plan", "shards", "apply", "report"}
    before = {t: i for i, t in enumerate(order)}
    for a, b in [("route", "ingest"), ("route", "completions"), ("route", "decide"), ("decide", "report"),
                 ("ingest", "staging"), ("staging", "gate"), ("gate", "transform"), ("completions", "transform"),
                 ("transform", "plan"), ("plan", "shards"), ("shards", "apply"), ("apply", "export_enrolments"),
                 ("decide", "export_enrolments"), ("export_enrolments", "report")]:
        assert before[a] < before[b], f"{a} must run before {b}"
    assert dag.get_task("report").trigger_rule == "all_done"
    # the CSV export follows the apply (or the decision on a held plan), whatever it did: it publishes
    # what the LMS got, and nothing while the plan is held
    export = dag.get_task("export_enrolments")
    assert export.trigger_rule == "all_done"
    assert export.upstream_task_ids == {"apply", "decide"} and export.downstream_task_ids == {"report"}
    # the apply fans out (dynamic task mapping) and the pool bounds LMS concurrency
    apply = dag.get_task("apply")
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert apply.pool == "hrlms_lms" and isinstance(apply, MappedOperator)
    assert dag.max_active_runs == 1
    assert "hrlms_learning_rules_preview" in bag.dag_ids


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_parses_fast_and_light(local_stack, path):
    # A fresh interpreter, as the dag-processor has: time the parse alone, list heavy modules it pulled in.
    code = (
        "import sys, time, airflow.sdk\n"
        "t = time.perf_counter()\n"
        f"import runpy; runpy.run_path({str(path)!r})\n"
        "print(time.perf_counter() - t)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    seconds, heavy = float(out[0]), out[1]
    assert seconds < 1.0, f"{path.name} took {seconds:.2f}s to parse"
    assert heavy == "", f"{path.name} imports {heavy} at parse time"
