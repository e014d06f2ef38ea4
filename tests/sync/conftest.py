"""Fixtures shared by the sync tests (the desired-state helpers are in helpers.py)."""
from __future__ import annotations

import pytest

from hrlms.sync.scim import LmsConfig, ScimClient


@pytest.fixture
def client(fresh_lms):
    """A ScimClient for the test's own scim2-server (fresh_lms)."""
    with ScimClient(LmsConfig(*fresh_lms)) as c:
        yield c
