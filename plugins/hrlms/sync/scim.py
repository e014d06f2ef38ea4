"""A small SCIM 2.0 client for the operations hrlms sends (RFC 7644), payloads built with scim2-models.

Why not a generic client: we need exact control of what is retried. GET/PATCH are idempotent and are
retried by urllib3 (with backoff, honouring Retry-After on 429/503); POST is not retried blindly —
a lost response could mean the user exists, so the caller looks it up by externalId first.
The bearer token comes from the `hrlms_lms` connection / env and is never logged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from scim2_models import Context, Email, EnterpriseUser, Group, GroupMember, Name, PatchOp, PatchOperation, User
from urllib3.util.retry import Retry

LMS_CONN_ID = "hrlms_lms"
SCIM_JSON = "application/scim+json"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ScimUser = User[EnterpriseUser]

# desired-state column -> SCIM attribute path (for PATCH of changed attributes only)
ATTRIBUTE_PATHS = {
    "user_name": "userName",
    "given_name": "name.givenName",
    "family_name": "name.familyName",
    "display_name": "displayName",
    "email": "emails",
    "title": "title",
    "employee_number": f"{ENTERPRISE}:employeeNumber",
    "department": f"{ENTERPRISE}:department",
    "is_active": "active",
}
USER_ATTRIBUTES = tuple(k for k in ATTRIBUTE_PATHS if k != "is_active")


class ScimError(Exception):
    def __init__(self, status: int | None, message: str):
        self.status = status
        super().__init__(f"SCIM {status}: {message}" if status else f"SCIM: {message}")

    @property
    def transient(self) -> bool:
        """Worth retrying later (escrow): network trouble, 429, 5xx. 4xx otherwise is permanent."""
        return self.status is None or self.status == 429 or self.status >= 500


class Conflict(ScimError):
    pass


@dataclass(frozen=True)
class LmsConfig:
    base_url: str
    token: str
    timeout: tuple[float, float] = (5.0, 30.0)
    verify_tls: bool = True

    def __repr__(self) -> str:  # never show the token
        return f"LmsConfig(base_url={self.base_url!r}, token=***)"


def lms_config_from_env() -> LmsConfig:
    """`HRLMS_LMS_URL` + `HRLMS_LMS_TOKEN`, else the Airflow connection `hrlms_lms` (host, password)."""
    verify = os.environ.get("HRLMS_LMS_VERIFY_TLS", "true").lower() not in ("0", "false", "no")
    url = os.environ.get("HRLMS_LMS_URL")
    if url:
        return LmsConfig(url.rstrip("/"), os.environ.get("HRLMS_LMS_TOKEN", ""), verify_tls=verify)
    from airflow.sdk import Connection

    conn = Connection.get(LMS_CONN_ID)
    host = conn.host or ""
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    return LmsConfig(host.rstrip("/"), conn.password or "", verify_tls=verify)


def user_resource(desired: dict[str, Any]) -> dict[str, Any]:
    """Desired-state row -> SCIM User (core + enterprise) creation payload, validated by scim2-models."""
    user = ScimUser(
        external_id=desired["person_id"],
        user_name=desired["user_name"],
        name=Name(given_name=desired.get("given_name"), family_name=desired.get("family_name"),
                  formatted=desired.get("display_name")),
        display_name=desired.get("display_name"),
        emails=[Email(value=desired["email"], type="work", primary=True)] if desired.get("email") else None,
        active=bool(desired.get("is_active", True)),
        title=desired.get("title"),
    )
    user[EnterpriseUser] = EnterpriseUser(employee_number=desired.get("employee_number"),
                                          department=desired.get("department"))
    return user.model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def patch_body(desired: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """PATCH replacing only `fields` (removing the attribute when the desired value is empty)."""
    ops = []
    for f in fields:
        path, value = ATTRIBUTE_PATHS[f], desired.get(f)
        if f == "email" and value:
            value = [{"value": value, "type": "work", "primary": True}]
        if f == "is_active":
            value = bool(value)
        if value is None:
            ops.append(PatchOperation[ScimUser](op="remove", path=path))
        else:
            ops.append(PatchOperation[ScimUser](op="replace", path=path, value=value))
        if f == "display_name":
            ops.append(PatchOperation[ScimUser](op="replace" if value else "remove", path="name.formatted",
                                                value=value))
    return PatchOp[ScimUser](operations=ops).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def manager_patch_body(manager_lms_id: str | None) -> dict[str, Any]:
    """Set (or remove) the enterprise manager. RFC 7643 §4.3: manager.value is the manager's LMS id."""
    path = f"{ENTERPRISE}:manager"
    op = (PatchOperation[ScimUser](op="replace", path=path, value={"value": manager_lms_id}) if manager_lms_id
          else PatchOperation[ScimUser](op="remove", path=path))
    return PatchOp[ScimUser](operations=[op]).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def group_resource(group_key: str, display_name: str | None) -> dict[str, Any]:
    """A new, empty group: externalId = our group key (members are added by add_members ops)."""
    return Group(external_id=group_key, display_name=display_name or group_key).model_dump(
        scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def group_rename_body(display_name: str) -> dict[str, Any]:
    return PatchOp[Group](operations=[PatchOperation[Group](op="replace", path="displayName", value=display_name)]
                          ).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def add_members_body(member_lms_ids: list[str]) -> dict[str, Any]:
    """One "add" of these members. Adding a member already present is a no-op on the server (RFC 7644 §3.5.2.1)."""
    op = PatchOperation[Group](op="add", path="members",
                               value=[GroupMember(value=i).model_dump(exclude_none=True) for i in member_lms_ids])
    return PatchOp[Group](operations=[op]).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def _filter_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def remove_members_body(member_lms_ids: list[str]) -> dict[str, Any]:
    """One "remove" per member, selected by a value filter (RFC 7644 §3.5.2.2): never a replace of the
    member list. A remove whose filter matches nothing is a no-op (204 on scim2-server). scim2-server
    rejects a remove carrying a "value" (400), so the filter form is the portable one."""
    ops = [PatchOperation[Group](op="remove", path=f'members[value eq "{_filter_value(i)}"]') for i in member_lms_ids]
    return PatchOp[Group](operations=ops).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


class ScimClient:
    def __init__(self, config: LmsConfig, pool_size: int = 8):
        self.config = config
        self.session = requests.Session()
        retry = Retry(total=4, connect=4, read=2, status=4, backoff_factor=0.5, backoff_jitter=0.3,
                      status_forcelist=(429, 502, 503, 504), allowed_methods=("GET", "PATCH", "PUT"),
                      respect_retry_after_header=True, raise_on_status=False)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Authorization": f"Bearer {config.token}", "Accept": SCIM_JSON,
                                     "Content-Type": SCIM_JSON})
        self.session.verify = config.verify_tls

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ScimClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw) -> requests.Response:
        try:
            return self.session.request(method, self.config.base_url + path, timeout=self.config.timeout, **kw)
        except requests.RequestException as exc:
            raise ScimError(None, f"{method} {path}: {type(exc).__name__}") from None

    @staticmethod
    def _error(resp: requests.Response, what: str) -> ScimError:
        try:
            detail = resp.json().get("detail") or resp.text[:200]
        except ValueError:
            detail = resp.text[:200]
        cls = Conflict if resp.status_code == 409 else ScimError
        return cls(resp.status_code, f"{what}: {detail}")

    def service_provider_config(self) -> dict[str, Any]:
        resp = self._request("GET", "/ServiceProviderConfig")
        if resp.status_code != 200:
            raise self._error(resp, "GET /ServiceProviderConfig")
        return resp.json()

    def bulk_limits(self) -> tuple[int, int] | None:
        """(maxOperations, maxPayloadSize) when the LMS advertises /Bulk, else None."""
        bulk = self.service_provider_config().get("bulk") or {}
        if not bulk.get("supported"):
            return None
        return int(bulk.get("maxOperations") or 0) or 1000, int(bulk.get("maxPayloadSize") or 0) or 1_048_576

    def bulk(self, operations: list[dict[str, Any]]) -> list[tuple[int, str | None, str | None]]:
        """POST /Bulk; per operation (status, resource id, error detail), in request order."""
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations}
        resp = self._request("POST", "/Bulk", json=body)
        if resp.status_code != 200:
            raise self._error(resp, "POST /Bulk")
        results = resp.json().get("Operations") or []
        by_id = {r.get("bulkId"): r for r in results if r.get("bulkId")}
        out = []
        for i, op in enumerate(operations):
            r = by_id.get(op.get("bulkId")) if op.get("bulkId") else (results[i] if i < len(results) else None)
            if r is None:
                out.append((0, None, "no result for this operation in the bulk response"))
                continue
            status = int(r.get("status") or 0)
            location = r.get("location") or ""
            detail = (r.get("response") or {}).get("detail") if status >= 300 else None
            out.append((status, location.rstrip("/").rsplit("/", 1)[-1] or None, detail))
        return out

    def find_user(self, *, external_id: str | None = None, user_name: str | None = None) -> dict | None:
        attr, value = ("externalId", external_id) if external_id else ("userName", user_name)
        value = str(value).replace("\\", "\\\\").replace('"', '\\"')
        resp = self._request("GET", "/Users", params={"filter": f'{attr} eq "{value}"', "count": 2})
        if resp.status_code != 200:
            raise self._error(resp, f"GET /Users?filter={attr}")
        found = resp.json().get("Resources") or []
        return found[0] if found else None

    def create_user(self, payload: dict[str, Any]) -> dict[str, Any]:
        resp = self._request("POST", "/Users", json=payload)
        if resp.status_code == 201:
            return resp.json()
        raise self._error(resp, "POST /Users")

    def patch_user(self, lms_id: str, body: dict[str, Any]) -> None:
        resp = self._request("PATCH", f"/Users/{lms_id}", json=body)
        if resp.status_code not in (200, 204):
            raise self._error(resp, f"PATCH /Users/{lms_id}")

    def patch(self, path: str, body: dict[str, Any]) -> None:
        """PATCH any resource path (e.g. /Groups/{id}); 200 and 204 are success."""
        resp = self._request("PATCH", path, json=body)
        if resp.status_code not in (200, 204):
            raise self._error(resp, f"PATCH {path}")

    def create_group(self, payload: dict[str, Any]) -> dict[str, Any]:
        resp = self._request("POST", "/Groups", json=payload)
        if resp.status_code == 201:
            return resp.json()
        raise self._error(resp, "POST /Groups")

    def find_group(self, *, external_id: str) -> dict | None:
        """The group whose externalId is ours (scim2-server filters on it; it does not enforce uniqueness,
        so with several the oldest one is taken and the others are left for reconcile to report)."""
        resp = self._request("GET", "/Groups", params={"filter": f'externalId eq "{_filter_value(external_id)}"',
                                                       "attributes": "id,externalId,displayName,meta"})
        if resp.status_code != 200:
            raise self._error(resp, "GET /Groups?filter=externalId")
        found = resp.json().get("Resources") or []
        found.sort(key=lambda g: ((g.get("meta") or {}).get("created") or "", g.get("id") or ""))
        return found[0] if found else None

    def _get(self, path: str) -> dict[str, Any] | None:
        resp = self._request("GET", path)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._error(resp, f"GET {path}")
        return resp.json()

    def _iter(self, path: str, page_size: int):
        """Every resource of a collection, page by page (servers cap a page's size)."""
        start = 1
        while True:
            resp = self._request("GET", path, params={"startIndex": start, "count": page_size})
            if resp.status_code != 200:
                raise self._error(resp, f"GET {path}")
            body = resp.json()
            items = body.get("Resources") or []
            yield from items
            start += len(items)
            if not items or start > int(body.get("totalResults", 0)):
                return

    def get_group(self, lms_id: str) -> dict[str, Any] | None:
        return self._get(f"/Groups/{lms_id}")

    def iter_groups(self, page_size: int = 200):
        return self._iter("/Groups", page_size)

    def get_user(self, lms_id: str) -> dict[str, Any] | None:
        return self._get(f"/Users/{lms_id}")

    def iter_users(self, page_size: int = 500):
        return self._iter("/Users", page_size)
