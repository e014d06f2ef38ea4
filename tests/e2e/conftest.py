import pytest


@pytest.fixture(scope="session")
def provision_dag(local_stack):
    """The real hrlms_provision DAG, loaded from dags/ with a migrated (project-local) Airflow DB."""
    local_stack.ensure_airflow_db()
    from airflow.dag_processing.dagbag import DagBag

    from hrlms.settings import REPO_ROOT

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag("hrlms_provision")
