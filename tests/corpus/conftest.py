"""One warehouse + one scim2-server for the whole malformed-input corpus (module scope).

The baseline (50 workers) is provisioned once through the real pipeline; every case is a later logical
date on top of it (``Corpus.next_day``), in the order the test module defines them.
"""
from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from .harness import Corpus

# Tunables reset to their defaults for the corpus (a developer's shell may have others set).
_RESET = ("HRLMS_MAPPING", "HRLMS_MAX_DROP_SHARE", "HRLMS_MAX_QUARANTINE_SHARE", "HRLMS_MAX_GROWTH_FACTOR",
          "HRLMS_LEARNING_RULES", "HRLMS_ORG_ROLLUP_GROUPS", "HRLMS_LRS_URL", "HRLMS_EXPORT_DIR",
          "HRLMS_BREAKER_MAX_SHARE", "HRLMS_BREAKER_MAX_COUNT", "HRLMS_BREAKER_MIN_COUNT",
          "HRLMS_BREAKER_MAX_CHANGE_SHARE", "HRLMS_BREAKER_MAX_CHANGE_COUNT", "HRLMS_LMS_BATCH_SIZE",
          "HRLMS_LMS_CONCURRENCY")


def _own_gx_context(mp: pytest.MonkeyPatch, target: Path) -> None:
    """A copy of the committed GX context without the stored validation results: the gate rebuilds the
    Data Docs index from every result in the store (tens of seconds once hundreds of runs have piled up
    in the shared one), and the corpus adds none to it."""
    from hrlms import report
    from hrlms.quality import gate

    shutil.copytree(gate.GX_ROOT, target, ignore=lambda d, names: [
        n for n in names if Path(d).name == "uncommitted" and n in ("validations", "data_docs")])
    mp.setattr(gate, "GX_ROOT", target)
    mp.setattr(report, "GX_ROOT", target)


@pytest.fixture(scope="module")
def corpus(local_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    from hrlms.devenv.scim import LocalScimServer

    base = tmp_path_factory.mktemp("corpus")
    admin = local_stack.warehouse_url
    name = "corpus_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = urlunsplit(urlsplit(admin)._replace(path="/" + name))
    try:
        with LocalScimServer(base / "lms", keep_log=True) as lms, pytest.MonkeyPatch.context() as mp:
            for var in _RESET:
                mp.delenv(var, raising=False)
            mp.setenv("WAREHOUSE_URL", url)
            mp.setenv("AIRFLOW_CONN_HRLMS_WAREHOUSE", url)
            mp.setenv("HRLMS_LMS_URL", lms.base_url)
            mp.setenv("HRLMS_LMS_TOKEN", lms.token)
            mp.setenv("AIRFLOW_CONN_HRLMS_LMS", json.dumps(
                {"conn_type": "http", "host": lms.base_url, "password": lms.token}))
            landing = base / "landing"
            landing.mkdir()
            mp.setenv("HRLMS_LANDING_DIR", str(landing))
            mp.setenv("HRLMS_REPORTS_DIR", str(base / "reports"))
            mp.setenv("HRLMS_SOURCE", "file")
            _own_gx_context(mp, base / "expectations")
            c = Corpus(url=url, lms_url=lms.base_url, lms_token=lms.token, scim_log=Path(lms.log_path),
                       landing=landing, reports=base / "reports")
            c.provision_baseline()
            yield c
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
