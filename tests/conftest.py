"""Shared pytest setup: make ``plugins/`` importable and offer the local services as fixtures.

Under ``python -m hrlms.devenv run -- pytest`` the services already exist (WAREHOUSE_URL,
HRLMS_LMS_URL are set) and ``local_stack`` just reuses them; under a bare ``pytest`` it starts
Postgres and the SCIM server once per session (~1 s).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))

if TYPE_CHECKING:
    from hrlms.devenv.stack import LocalStack


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """Warehouse + LMS + Airflow env vars for the whole session, applied to os.environ."""
    from hrlms.devenv.stack import LocalStack

    with LocalStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def warehouse_url(local_stack: LocalStack) -> str:
    """libpq URL of the (throwaway unless given) warehouse database."""
    assert local_stack.warehouse_url
    return local_stack.warehouse_url
