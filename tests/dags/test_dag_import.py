"""Every DAG file imports without errors, quickly, and without heavy imports at parse time."""
import os
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
                          "export_enrolments", "plan", "shards", "apply", "marts", "report"}
    before = {t: i for i, t in enumerate(order)}
    for a, b in [("route", "ingest"), ("route", "completions"), ("route", "decide"), ("decide", "report"),
                 ("ingest", "staging"), ("staging", "gate"), ("gate", "transform"), ("completions", "transform"),
                 ("transform", "plan"), ("plan", "shards"), ("shards", "apply"), ("apply", "export_enrolments"),
                 ("decide", "export_enrolments"), ("export_enrolments", "report"), ("apply", "marts"),
                 ("marts", "report")]:
        assert before[a] < before[b], f"{a} must run before {b}"
    # the reporting tables after the apply, whatever it did: the LMS does not wait for them, nor they for the LMS
    assert dag.get_task("marts").upstream_task_ids == {"apply"}
    assert dag.get_task("marts").downstream_task_ids == {"report"}
    assert dag.get_task("marts").trigger_rule == "all_done"
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


@pytest.mark.parametrize("command, forks_tasks", [("scheduler", True), ("celery worker", True),
                                                   ("api-server", False), ("dag-processor", False)])
def test_task_modules_are_imported_once_where_task_processes_are_forked(local_stack, command, forks_tasks):
    """Airflow imports plugins/airflow_local_settings.py in each of its processes: the scheduler (its LocalExecutor
    forks the tasks) and Celery workers import dbt, GX and the pipeline once (hrlms.preload); a task forked from
    them starts with them. The API server and the DAG processor do not."""
    code = (f"import sys; sys.argv = ['airflow', *{command.split()!r}]\n"
            "import airflow  # noqa: F401  (initializes Airflow's settings, as the command does)\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert (set(heavy.split(",")) >= {"great_expectations", "dbt", "hrlms.pipeline"}) if forks_tasks else heavy == ""
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"HRLMS_PRELOAD_TASK_MODULES": "false"}).stdout.strip()
    assert off == ""


def test_task_placement_queues_and_apply_retries(local_stack):
    """Celery placement (hrlms.placement): warehouse work on one queue, the apply shards on another; only the
    apply is retried (a worker lost in the middle of a shard), every other stage fails once and alerts."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    bag = DagBag(dag_folder=str(DAGS))
    provision, events = bag.get_dag("hrlms_provision"), bag.get_dag("hrlms_hr_events")
    queues = {t.task_id: t.queue for t in provision.tasks}
    assert {t for t, q in queues.items() if q == "warehouse"} == {"ingest", "completions", "staging", "gate",
                                                                   "transform", "plan", "marts"}
    assert queues["apply"] == "lms" and len(set(queues.values())) == 3     # the rest on [operators] default_queue
    assert {t.task_id: t.queue for t in events.tasks} == {
        "build": "warehouse", "marts": "warehouse", "apply": "lms", "report": queues["route"]}
    for dag in (provision, events):
        apply = dag.get_task("apply")
        assert isinstance(apply, MappedOperator)
        assert apply.retries == 3 and apply.retry_delay.total_seconds() == 30
    assert {t.task_id for t in provision.tasks if t.retries} == {"apply"}


def test_queues_and_schedule_come_from_the_environment(local_stack):
    """What a deployment sets for every Airflow component: the queue names and the schedule ("none": triggered
    runs only)."""
    import os

    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"dag = DagBag(dag_folder={str(DAGS / 'hrlms_provision.py')!r}).dags['hrlms_provision']\n"
        "print('RESULT', dag.get_task('apply').queue, dag.get_task('gate').queue, dag.get_task('apply').retries, "
        "type(dag.timetable).__name__)\n"
    )
    env = {**os.environ, "HRLMS_LMS_QUEUE": "lms_edge", "HRLMS_WAREHOUSE_QUEUE": "dbt_big", "HRLMS_APPLY_RETRIES": "5",
           "HRLMS_PROVISION_SCHEDULE": "none"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    result = next(line for line in out.splitlines() if line.startswith("RESULT "))
    assert result.split()[1:] == ["lms_edge", "dbt_big", "5", "NullTimetable"], out
