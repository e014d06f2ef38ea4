"""Fixtures for the learning tests: one real Ralph LRS per session, a bootstrapped warehouse per test.

The LRS is shared (starting Ralph costs ~2 s), so tests keep their statements apart by their own
seed / actor home page / activity ids instead of expecting an empty LRS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hrlms.devenv.ralph import LocalRalph
from hrlms.learning.xapi import LrsConfig
from hrlms.warehouse import db


@pytest.fixture(scope="session")
def lrs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRalph]:
    """A started Ralph (fs backend) for the whole session; its venv is cached in .local/ralph-venv."""
    base_dir: Path = tmp_path_factory.mktemp("lrs")
    with LocalRalph(base_dir) as server:
        yield server


@pytest.fixture
def lrs_config(lrs: LocalRalph) -> LrsConfig:
    return LrsConfig(lrs.base_url, lrs.username, lrs.password)


@pytest.fixture
def warehouse(fresh_db: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to an empty, bootstrapped warehouse of this test's own."""
    with db.connect(fresh_db) as conn:
        db.bootstrap(conn)
        yield conn
