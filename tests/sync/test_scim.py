"""The SCIM client against a real scim2-server: payloads, 201/409/204, lookups; transport settings."""
import time
from email.utils import formatdate

import pytest

from hrlms.sync.apply import _create
from hrlms.sync.scim import (
    ENTERPRISE,
    Conflict,
    LmsConfig,
    ScimClient,
    ScimError,
    lms_config_from_env,
    parse_retry_after,
)

from .helpers import DEFAULT_OUTBOUND, lms_patch, lms_user, with_attrs

DESIRED = {"person_id": "P0000001", "user_name": "ann.lee", "given_name": "Ann", "family_name": "Lee",
           "display_name": "Ann Lee", "email": "ann.lee@example.com", "title": "Analyst",
           "employee_number": "100001", "department": "Finance", "is_active": True}


@pytest.fixture
def client(fresh_lms):
    url, token = fresh_lms
    with ScimClient(LmsConfig(url, token)) as c:
        yield c


def test_user_resource_is_core_plus_enterprise():
    body = lms_user(DESIRED)
    assert body["externalId"] == "P0000001" and body["userName"] == "ann.lee" and body["active"] is True
    assert body["name"] == {"givenName": "Ann", "familyName": "Lee", "formatted": "Ann Lee"}
    assert body["emails"] == [{"value": "ann.lee@example.com", "type": "work", "primary": True}]
    assert body[ENTERPRISE] == {"employeeNumber": "100001", "department": "Finance"}
    assert ENTERPRISE in body["schemas"]


def test_patch_body_sends_only_changed_attributes():
    body = lms_patch({**DESIRED, "title": None, "department": "Legal"}, ["title", "department"])
    assert body["Operations"] == [
        {"op": "remove", "path": "title"},
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Legal"},
    ]


def test_create_then_conflict_then_lookup(client):
    created = client.create_user(lms_user(DESIRED))
    assert created["externalId"] == "P0000001"
    with pytest.raises(Conflict) as err:
        client.create_user(lms_user(DESIRED))
    assert err.value.status == 409 and not err.value.transient
    assert client.find_user(external_id="P0000001")["id"] == created["id"]
    assert client.find_user(user_name="ann.lee")["id"] == created["id"]
    assert client.find_user(external_id="P9999999") is None


def test_patch_accepts_204_and_changes_only_what_is_sent(client):
    lms_id = client.create_user(lms_user(DESIRED))["id"]
    client.patch_user(lms_id, lms_patch({**DESIRED, "is_active": False, "title": "Lead"}, ["title"], active=True))
    got = client.get_user(lms_id)
    assert got["active"] is False and got["title"] == "Lead"
    assert got[ENTERPRISE]["department"] == "Finance" and got["userName"] == "ann.lee"


def test_resume_after_lost_response_links_instead_of_duplicating(client):
    # The first attempt reached the LMS but its response was lost: the user exists.
    first = client.create_user(lms_user(DESIRED))["id"]
    # Retry with verify_first (outcome unknown) and without (409 path): both link the same account.
    assert _create(client, with_attrs({**DESIRED, "title": "Lead"}), DEFAULT_OUTBOUND, verify_first=True) == first
    assert _create(client, with_attrs({**DESIRED, "title": "Lead 2"}), DEFAULT_OUTBOUND, verify_first=False) == first
    users = list(client.iter_users())
    assert [u["externalId"] for u in users] == ["P0000001"]
    assert users[0]["title"] == "Lead 2"


def test_username_owned_by_someone_else_is_a_permanent_error(client):
    client.create_user(lms_user(DESIRED))
    with pytest.raises(ScimError) as err:
        _create(client, with_attrs({**DESIRED, "person_id": "P0000002"}), DEFAULT_OUTBOUND, verify_first=False)
    assert err.value.status == 409 and "already used by another LMS account" in str(err.value)


def test_wrong_token_is_a_permanent_error(fresh_lms):
    url, _ = fresh_lms
    with ScimClient(LmsConfig(url, "wrong")) as c, pytest.raises(ScimError) as err:
        c.create_user(lms_user(DESIRED))
    assert err.value.status == 401 and not err.value.transient
    assert "wrong" not in str(err.value)


def test_unreachable_lms_is_transient():
    with ScimClient(LmsConfig("http://127.0.0.1:9", "t", timeout=(0.5, 0.5), backoff_base=0.01)) as c:
        with pytest.raises(ScimError) as err:
            c.find_user(external_id="P1")
        assert err.value.transient and err.value.status is None
        # A connection that was never established cannot have reached the LMS: even a POST is retried.
        with pytest.raises(ScimError):
            c.create_user(lms_user(DESIRED))
        assert c.stats.snapshot()["attempts"] == 2 * c.max_attempts == 8


def test_retry_after_values():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0     # a date in the past: now
    assert 50 < parse_retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60


def test_transport_settings_from_env(monkeypatch):
    monkeypatch.setenv("HRLMS_LMS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("HRLMS_LMS_TOKEN", "secret-token")
    monkeypatch.setenv("HRLMS_LMS_READ_TIMEOUT", "7")
    monkeypatch.setenv("HRLMS_LMS_MAX_RPS", "12.5")
    monkeypatch.setenv("HRLMS_LMS_MAX_ATTEMPTS", "2")
    cfg = lms_config_from_env()
    assert cfg.timeout == (5.0, 7.0) and "secret-token" not in repr(cfg)
    with ScimClient(cfg) as c:
        assert c.limiter.rate == 12.5 and c.max_attempts == 2 and c.max_retry_after == 60
