"""Shared pytest setup: make ``plugins/`` importable and offer the local services as fixtures.

Under ``python -m hrlms.devenv run -- pytest`` the services already exist (WAREHOUSE_URL,
HRLMS_LMS_URL are set) and ``local_stack`` just reuses them; under a bare ``pytest`` it starts
Postgres and the SCIM server once per session (~1 s).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Every restricted plan made in the tests is checked against the full diff (hrlms.sync.plan.ScopeMismatch):
# each multi-day test is then also a test of the change sets (hrlms.warehouse.changes).
os.environ.setdefault("HRLMS_PLAN_CHECK_SCOPE", "true")
# ... and made restricted however large the change (the default falls back to a full plan above 25% of the
# people, which the small populations of the tests always exceed).
os.environ.setdefault("HRLMS_INCREMENTAL_MAX_SHARE", "1")

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))

if TYPE_CHECKING:
    from hrlms.devenv.stack import LocalStack

#: Variables naming the services of ``python -m hrlms.devenv run`` (the Makefile's wrapper): an xdist worker
#: drops them and starts its own.
_SERVICE_VARS = ("WAREHOUSE_URL", "HRLMS_LMS_URL", "HRLMS_LMS_TOKEN", "HRLMS_LRS_URL", "HRLMS_LRS_USERNAME",
                 "HRLMS_LRS_PASSWORD", "AIRFLOW_CONN_HRLMS_WAREHOUSE", "AIRFLOW_CONN_HRLMS_LMS",
                 "AIRFLOW_CONN_HRLMS_LRS")
_worker_stack: LocalStack | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadscope``) each worker process gets a warehouse
    Postgres, a scim2-server, an Airflow home (SQLite metadata DB, logs) and a dbt target folder of its own,
    under ``.local/xdist/<worker>``: the tests then see what a one-process run sees, and two workers never
    share a database, an LMS, dbt's partial-parse state or Airflow's SQLite file. Done here, before any test
    module imports Airflow (which reads its settings once, at import)."""
    global _worker_stack
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or _worker_stack is not None:
        return
    from hrlms.devenv import LOCAL_DIR
    from hrlms.devenv.stack import LocalStack

    base = LOCAL_DIR / "xdist" / worker
    for var in _SERVICE_VARS:
        os.environ.pop(var, None)
    base.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(base_dir=base)
    stack.__enter__()
    try:
        stack.ensure_airflow_db()
    except BaseException:
        stack.__exit__(None, None, None)
        raise
    _worker_stack = stack
    os.environ["HRLMS_DBT_TARGET_PATH"] = str(base / "dbt-target")
    os.environ["HRLMS_REPORTS_DIR"] = str(base / "reports")
    os.environ["HRLMS_LANDING_DIR"] = str(base / "landing")


#: Modules that take minutes, longest first (the durations pytest prints at the end of `make test`). They are
#: collected first: under the workers' --dist loadscope --no-loadscope-reorder a module is dispatched in
#: collection order, so these start at once instead of one of them running alone at the end.
LONG_MODULES = (
    "pipeline/test_incremental.py", "e2e/test_timeliness.py", "celery/test_celery_executor.py",
    "people/test_people.py", "pipeline/test_incremental_crash.py",
    "e2e/test_people_scenario.py", "events/test_events_rest.py", "events/test_events.py",
    "pipeline/test_change_sets.py", "pipeline/test_build_ledger.py",
    "e2e/test_breaker.py", "sync/test_breaker_blanking.py", "e2e/test_provisioning.py",
    "learning/test_learning_e2e.py", "people/test_shared_values.py", "org/test_org_pipeline.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """LONG_MODULES first (in that order), every other test after them in its usual order."""
    tests_dir = Path(__file__).resolve().parent
    missing = [name for name in LONG_MODULES if not (tests_dir / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONG_MODULES names modules that do not exist: {missing}")
    rank = {name: i for i, name in enumerate(LONG_MODULES)}

    def module_rank(item: pytest.Item) -> int:
        try:
            return rank.get(Path(item.path).resolve().relative_to(tests_dir).as_posix(), len(rank))
        except ValueError:
            return len(rank)

    items.sort(key=module_rank)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the worker's own services (pytest_configure)."""
    global _worker_stack
    if _worker_stack is not None:
        _worker_stack.__exit__(None, None, None)
        _worker_stack = None


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """Warehouse + LMS + Airflow env vars for the whole session, applied to os.environ."""
    if _worker_stack is not None:      # an xdist worker's own (pytest_configure)
        yield _worker_stack
        return
    from hrlms.devenv.stack import LocalStack

    with LocalStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def warehouse_url(local_stack: LocalStack) -> str:
    """libpq URL of the (throwaway unless given) warehouse database."""
    assert local_stack.warehouse_url
    return local_stack.warehouse_url


@pytest.fixture
def fresh_db(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty database of its own for one test, set as WAREHOUSE_URL (and the Airflow connection)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    admin = local_stack.warehouse_url
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    parts = urlsplit(admin)
    url = urlunsplit(parts._replace(path="/" + name))
    monkeypatch.setenv("WAREHOUSE_URL", url)
    monkeypatch.setenv("AIRFLOW_CONN_HRLMS_WAREHOUSE", url)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def fresh_lms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A scim2-server of its own (empty, in memory) for one test: (base_url, token)."""
    import json

    from hrlms.devenv.scim import LocalScimServer

    with LocalScimServer(tmp_path / "lms") as server:
        monkeypatch.setenv("HRLMS_LMS_URL", server.base_url)
        monkeypatch.setenv("HRLMS_LMS_TOKEN", server.token)
        monkeypatch.setenv("AIRFLOW_CONN_HRLMS_LMS", json.dumps(
            {"conn_type": "http", "host": server.base_url, "password": server.token}))
        yield server.base_url, server.token


@pytest.fixture
def landing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty landing folder set as HRLMS_LANDING_DIR; reports go next to it."""
    path = tmp_path / "landing"
    path.mkdir()
    monkeypatch.setenv("HRLMS_LANDING_DIR", str(path))
    monkeypatch.setenv("HRLMS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("HRLMS_SOURCE", "file")
    monkeypatch.delenv("HRLMS_MAPPING", raising=False)
    return path
