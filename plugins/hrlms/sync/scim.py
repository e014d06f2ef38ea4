"""A small SCIM 2.0 client for the operations hrlms sends (RFC 7644), payloads built with scim2-models.

Why not a generic client: we need exact control of what is retried. The transport:

- **Timeouts** on every request (connect, read): `HRLMS_LMS_CONNECT_TIMEOUT` (default 5 s) and
  `HRLMS_LMS_READ_TIMEOUT` (default 30 s).
- **One `requests.Session`** per client, its connection pool shared by the client's threads
  (note: scim2-server's wsgiref server answers HTTP/1.0 and closes every connection, so reuse only
  pays off with a keep-alive LMS).
- **Retries in this module, not in urllib3** (urllib3 is set to retry nothing): up to
  `HRLMS_LMS_MAX_ATTEMPTS` attempts (default 4), exponential backoff with jitter (0.5 s, 1 s, 2 s…,
  each drawn from [d/2, d], capped at 20 s). Every attempt takes a token from the rate limiter.
  urllib3's own Retry did honour Retry-After, but only for GET/PATCH/PUT, without any cap (a
  `Retry-After: 86400` would park a worker thread, its ops claimed, for a day) and behind any
  client-side rate limit; so it is not used.
- **What is retried.** Idempotent requests (GET, PUT, PATCH — our PATCHes replace values, add members
  that may already be there, remove members by filter or replace a member list guarded by its version —
  and a POST /Bulk made only of PATCHes):
  on 429, 500, 502, 503, 504, timeouts and broken connections. Non-idempotent requests (POST
  /Users, POST /Groups, a POST /Bulk carrying creates): only when the LMS cannot have acted on
  them — a 429 (the request was refused) or a connection that was never established. After a lost
  response, a 5xx or a timeout their outcome is unknown: the caller escrows them, and the next
  attempt looks the resource up by externalId before creating it again (see hrlms.sync.apply).
- **Retry-After** (seconds or an HTTP date) is honoured on 429/503: the retry waits at least that
  long; after a 429 *every* thread of the client waits (the LMS rate-limits the client, not the
  thread). A Retry-After beyond `HRLMS_LMS_MAX_RETRY_AFTER` (default 60 s) is not waited for: the
  error goes back to the caller (escrow, with next_attempt_at no earlier than the LMS asked).
- **Client-side rate limit**: a token bucket shared by the client's threads, `HRLMS_LMS_MAX_RPS`
  requests per second (default 0 = unlimited; bursts of up to one second's worth).
- **Member removal** (`ScimClient.remove_members`): when the LMS advertises ETags
  (`/ServiceProviderConfig` etag.supported, read once per client) and `HRLMS_SCIM_MEMBER_REMOVAL` is
  `auto` (the default), the group's members and version are read (`GET /Groups/{id}?attributes=members`)
  and the members left are written with one `replace` of `members`, sent with `If-Match: <version>`.
  Members to add in the same write (`add`: the apply's adds to a group it removes from) are in that
  replace. A 412 (someone changed the group since the read) reads again and retries, up to
  `HRLMS_LMS_MAX_ATTEMPTS` reads, with the same backoff (retry reason "412"). Nothing is sent when none
  of the members to remove is in the group. Otherwise (`filter`, no ETag support, or a read without a
  version) one `remove` per member with a `members[value eq "…"]` filter: an LMS without versioning is
  never sent an unguarded replace of a member list. Why: scim2-server deep-copies and scans the whole
  member list for every filtered remove (≈45 µs × removals × group size: 500 removals from a
  5,000-member group took 121 s; read + guarded replace took 1 s).
- `ScimClient.stats` counts attempts, retries (by reason) and time spent waiting.

The bearer token comes from the `hrlms_lms` connection / env and is never logged.
"""
from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from scim2_models import (
    Context,
    EnterpriseUser,
    Group,
    GroupMember,
    PatchOp,
    PatchOperation,
    User,
)
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from hrlms.settings import env_float

LMS_CONN_ID = "hrlms_lms"
MEMBER_REMOVAL_MODES = ("auto", "filter")   # HRLMS_SCIM_MEMBER_REMOVAL
SCIM_JSON = "application/scim+json"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ScimUser = User[EnterpriseUser]
log = logging.getLogger(__name__)

# The desired row's columns kept with each account (sync.applied_users): what the gate checks shared
# values against (user_name, email, employee_number) and what reports show. What the LMS receives is
# the outbound mapping's (hrlms.sync.outbound), kept as applied_users.attrs.
ACCOUNT_COLUMNS = ("user_name", "given_name", "family_name", "display_name", "email", "title", "employee_number",
                   "department")


class ScimError(Exception):
    def __init__(self, status: int | None, message: str, *, retry_after: float | None = None):
        self.status = status
        self.retry_after = retry_after     # seconds the LMS asked us to wait (Retry-After), if it did
        super().__init__(f"SCIM {status}: {message}" if status else f"SCIM: {message}")

    @property
    def transient(self) -> bool:
        """Worth retrying later (escrow): network trouble, 429, 5xx, and a 412 left after the retries of a
        guarded write (the group kept changing under us). 4xx otherwise is permanent."""
        return self.status is None or self.status in (412, 429) or self.status >= 500


class Conflict(ScimError):
    pass


class PreconditionFailed(ScimError):
    """412: the resource changed since the version sent in If-Match; nothing was written."""


# Statuses worth retrying for an idempotent request; a non-idempotent one only on REFUSED (the LMS
# did not act on it: RFC 6585 §4, 429 Too Many Requests).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REFUSED_STATUSES = frozenset({429})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class LmsConfig:
    """Where the LMS is, plus the transport knobs. None = the env var's value (see the module doc)."""
    base_url: str
    token: str
    timeout: tuple[float, float] = (5.0, 30.0)
    verify_tls: bool = True
    max_attempts: int | None = None        # HRLMS_LMS_MAX_ATTEMPTS, default 4 (1 = no retry)
    max_rps: float | None = None           # HRLMS_LMS_MAX_RPS, default 0 = unlimited
    max_retry_after: float | None = None   # HRLMS_LMS_MAX_RETRY_AFTER, default 60 s
    backoff_base: float = 0.5              # first retry after 0.25–0.5 s, then doubling…
    backoff_max: float = 20.0              # …up to 10–20 s

    def __repr__(self) -> str:  # never show the token
        return f"LmsConfig(base_url={self.base_url!r}, token=***)"


def lms_config_from_env() -> LmsConfig:
    """`HRLMS_LMS_URL` + `HRLMS_LMS_TOKEN`, else the Airflow connection `hrlms_lms` (host, password).
    Timeouts: `HRLMS_LMS_CONNECT_TIMEOUT` (5 s), `HRLMS_LMS_READ_TIMEOUT` (30 s)."""
    verify = os.environ.get("HRLMS_LMS_VERIFY_TLS", "true").lower() not in ("0", "false", "no")
    timeout = (env_float("HRLMS_LMS_CONNECT_TIMEOUT", 5.0), env_float("HRLMS_LMS_READ_TIMEOUT", 30.0))
    url = os.environ.get("HRLMS_LMS_URL")
    if url:
        return LmsConfig(url.rstrip("/"), os.environ.get("HRLMS_LMS_TOKEN", ""), timeout=timeout,
                         verify_tls=verify)
    from airflow.sdk import Connection

    conn = Connection.get(LMS_CONN_ID)
    host = conn.host or ""
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    return LmsConfig(host.rstrip("/"), conn.password or "", timeout=timeout, verify_tls=verify)


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
    """One "remove" per member, selected by a value filter (RFC 7644 §3.5.2.2). A remove whose filter
    matches nothing is a no-op (204 on scim2-server). scim2-server rejects a remove carrying a "value"
    (400), so the filter form is the portable one. The form for an LMS without ETags (see
    ScimClient.remove_members): it never replaces the member list."""
    ops = [PatchOperation[Group](op="remove", path=f'members[value eq "{_filter_value(i)}"]') for i in member_lms_ids]
    return PatchOp[Group](operations=ops).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def replace_members_body(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One "replace" of the whole member list by `members` (as read from the LMS: value, type and display
    are kept; $ref is the LMS's to derive). Only ever sent with If-Match (ScimClient.remove_members)."""
    value = [GroupMember(value=_text(m.get("value")), type=_text(m.get("type")), display=_text(m.get("display")))
             for m in members]
    op = PatchOperation[Group](op="replace", path="members", value=value)
    return PatchOp[Group](operations=[op]).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST)


def member_removal_mode() -> str:
    """`HRLMS_SCIM_MEMBER_REMOVAL`: auto (default: read + guarded replace when the LMS supports ETags)
    or filter (always one filtered remove per member)."""
    mode = (os.environ.get("HRLMS_SCIM_MEMBER_REMOVAL") or "auto").strip().lower()
    if mode not in MEMBER_REMOVAL_MODES:
        raise ValueError(f"HRLMS_SCIM_MEMBER_REMOVAL must be one of {', '.join(MEMBER_REMOVAL_MODES)}, not {mode!r}")
    return mode


def _etag_flag(config: dict[str, Any]) -> bool:
    return bool((config.get("etag") or {}).get("supported"))


class RateLimiter:
    """Token bucket shared by every thread of a client: `rate` requests per second (0 = unlimited),
    bursts of up to `burst` (default one second's worth). Callers reserve a token and sleep outside
    the lock, so waiting threads are served in arrival order. `hold(s)` makes every caller wait until
    s seconds from now (a 429's Retry-After applies to the whole client)."""

    def __init__(self, rate: float = 0.0, burst: float | None = None):
        self.rate = max(0.0, float(rate))
        self.burst = float(burst) if burst else max(1.0, self.rate)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._hold_until = 0.0
        self._lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the seconds slept."""
        with self._lock:
            now = time.monotonic()
            wait = max(0.0, self._hold_until - now)
            if self.rate > 0:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                self._tokens -= 1.0
                if self._tokens < 0:
                    wait = max(wait, -self._tokens / self.rate)
        if wait > 0:
            time.sleep(wait)
        return wait


class TransportStats:
    """Thread-safe counters of what the client did on the wire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts = 0              # HTTP requests sent (first tries + retries)
        self.retries: Counter = Counter()   # retries by reason ("429", "503", "ReadTimeout"…)
        self.gave_up: Counter = Counter()   # errors handed back to the caller after retrying, by reason
        self.waited_s = 0.0            # seconds spent in backoff / Retry-After / rate limit

    def add(self, *, attempts: int = 0, retry: str | None = None, gave_up: str | None = None,
            waited: float = 0.0) -> None:
        with self._lock:
            self.attempts += attempts
            self.waited_s += waited
            if retry:
                self.retries[retry] += 1
            if gave_up:
                self.gave_up[gave_up] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"attempts": self.attempts, "retries": sum(self.retries.values()),
                    "retries_by_reason": dict(self.retries), "gave_up": dict(self.gave_up),
                    "waited_s": round(self.waited_s, 2)}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent
    or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when no connection was established, so the LMS cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", None)   # urllib3 MaxRetryError(reason=…)
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


class ScimClient:
    def __init__(self, config: LmsConfig, pool_size: int = 8):
        self.config = config
        self.max_attempts = max(1, int(config.max_attempts if config.max_attempts is not None
                                        else env_float("HRLMS_LMS_MAX_ATTEMPTS", 4)))
        self.max_retry_after = (config.max_retry_after if config.max_retry_after is not None
                                else env_float("HRLMS_LMS_MAX_RETRY_AFTER", 60.0))
        rate = config.max_rps if config.max_rps is not None else env_float("HRLMS_LMS_MAX_RPS", 0.0)
        self.limiter = RateLimiter(rate)
        self.stats = TransportStats()
        self.member_removal = member_removal_mode()
        self._etag: bool | None = None          # /ServiceProviderConfig etag.supported, read once
        self._etag_lock = threading.Lock()
        self._random = random.Random()
        self.session = requests.Session()
        # urllib3 retries nothing: every attempt goes through _request (rate limit, Retry-After, what is safe).
        retry = Retry(total=0, read=False, redirect=False, status=0, other=0, raise_on_status=False)
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

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: drawn from [d/2, d], d = base × 2^(attempt-1), capped."""
        d = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        return d / 2 + self._random.uniform(0, d / 2)

    def _request(self, method: str, path: str, *, idempotent: bool | None = None, **kw) -> requests.Response:
        """Send with retries (see the module doc). Returns the last response — the caller turns a
        non-2xx into a ScimError — or raises ScimError(None) when no response came back."""
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        attempt = 0
        while True:
            attempt += 1
            waited = self.limiter.acquire()
            self.stats.add(attempts=1, waited=waited)
            last = attempt >= self.max_attempts
            try:
                resp = self.session.request(method, self.config.base_url + path, timeout=self.config.timeout, **kw)
            except requests.RequestException as exc:
                reason, unsent = type(exc).__name__, _never_sent(exc)
                if not last and (idempotent or unsent):
                    self._pause(self._backoff(attempt), reason)
                    continue
                self.stats.add(gave_up=reason)
                maybe = "" if idempotent or unsent else " (outcome unknown: the LMS may have acted on it)"
                raise ScimError(None, f"{method} {path}: {reason} after {attempt} attempt(s){maybe}") from None
            status = resp.status_code
            if status not in RETRY_STATUSES or not (idempotent or status in REFUSED_STATUSES):
                return resp
            retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
            if last or (retry_after is not None and retry_after > self.max_retry_after):
                self.stats.add(gave_up=str(status))
                return resp
            resp.close()
            if retry_after is None:
                self._pause(self._backoff(attempt), str(status))
            elif status == 429:    # the whole client slows down, this thread included (in acquire)
                self.limiter.hold(retry_after)
                self.stats.add(retry=str(status))
            else:
                self._pause(retry_after, str(status))

    def _pause(self, seconds: float, reason: str) -> None:
        self.stats.add(retry=reason, waited=seconds)
        time.sleep(seconds)

    @staticmethod
    def _error(resp: requests.Response, what: str) -> ScimError:
        try:
            detail = resp.json().get("detail") or resp.text[:200]
        except ValueError:
            detail = resp.text[:200]
        cls = {409: Conflict, 412: PreconditionFailed}.get(resp.status_code, ScimError)
        return cls(resp.status_code, f"{what}: {detail}", retry_after=parse_retry_after(resp.headers.get("Retry-After")))

    def service_provider_config(self) -> dict[str, Any]:
        resp = self._request("GET", "/ServiceProviderConfig")
        if resp.status_code != 200:
            raise self._error(resp, "GET /ServiceProviderConfig")
        return resp.json()

    def bulk_limits(self) -> tuple[int, int] | None:
        """(maxOperations, maxPayloadSize) when the LMS advertises /Bulk, else None. Notes etag.supported
        from the same document (etag_supported then sends no request)."""
        config = self.service_provider_config()
        with self._etag_lock:
            if self._etag is None:
                self._etag = _etag_flag(config)
        bulk = config.get("bulk") or {}
        if not bulk.get("supported"):
            return None
        return int(bulk.get("maxOperations") or 0) or 1000, int(bulk.get("maxPayloadSize") or 0) or 1_048_576

    def etag_supported(self) -> bool:
        """Whether the LMS advertises ETags (versioned resources, If-Match); read once per client."""
        with self._etag_lock:
            if self._etag is None:
                self._etag = _etag_flag(self.service_provider_config())
            return self._etag

    def guarded_member_removal(self) -> bool:
        """Members are removed by read + replace with If-Match (else by filtered removes): see remove_members.
        When /ServiceProviderConfig cannot be read, False for now (the filtered removes are always safe)."""
        if self.member_removal != "auto":
            return False
        try:
            return self.etag_supported()
        except ScimError as exc:
            log.warning("member removal by filter: cannot read /ServiceProviderConfig (%s)", exc)
            return False

    def bulk(self, operations: list[dict[str, Any]]) -> list[tuple[int, str | None, str | None]]:
        """POST /Bulk; per operation (status, resource id, error detail), in request order."""
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations}
        # Only PATCHes (idempotent here): safe to resend after a lost response. With creates: not.
        idempotent = all(str(op.get("method", "")).upper() in IDEMPOTENT_METHODS for op in operations)
        resp = self._request("POST", "/Bulk", idempotent=idempotent, json=body)
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

    def patch(self, path: str, body: dict[str, Any], *, if_match: str | None = None) -> None:
        """PATCH any resource path (e.g. /Groups/{id}); 200 and 204 are success. With `if_match` (a version
        read before) the LMS writes only if the resource still has that version, else PreconditionFailed."""
        headers = {"If-Match": if_match} if if_match else None
        resp = self._request("PATCH", path, json=body, headers=headers)
        if resp.status_code not in (200, 204):
            raise self._error(resp, f"PATCH {path}")

    def group_members(self, lms_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """The group's members and its version (the ETag header, else meta.version; None if neither)."""
        path = f"/Groups/{lms_id}"
        resp = self._request("GET", path, params={"attributes": "members"})
        if resp.status_code != 200:
            raise self._error(resp, f"GET {path}")
        body = resp.json()
        version = resp.headers.get("ETag") or (body.get("meta") or {}).get("version")
        return list(body.get("members") or []), version

    def remove_members(self, group_lms_id: str, member_lms_ids: list[str], add: list[str] = ()) -> bool:
        """Remove these members from the group (and add the members `add`, in the same write); False when
        nothing was written (none of them is a member, every one of `add` is). Guarded form
        (guarded_member_removal): read the members and version, then one replace by the members left (and
        the added ones), sent with If-Match; on 412 read again and retry (HRLMS_LMS_MAX_ATTEMPTS reads in
        all, backoff between them); PreconditionFailed (transient: escrow) after the last. Ids are compared
        exactly. Filter form otherwise: one filtered remove per member (after one add of `add`), always
        sent. Both are idempotent: a rerun reads the group as it is now (or removes absent members: 204)."""
        path = f"/Groups/{group_lms_id}"
        gone = set(member_lms_ids)
        add = [i for i in dict.fromkeys(add) if i not in gone]
        if self.guarded_member_removal():
            attempt = 0
            while True:
                attempt += 1
                members, version = self.group_members(group_lms_id)
                if not version:    # no version to guard the replace with: the filter form instead
                    break
                kept = [m for m in members if m.get("value") not in gone]
                present = {m.get("value") for m in kept}
                added = [{"value": i} for i in add if i not in present]
                if len(kept) == len(members) and not added:
                    return False
                try:
                    self.patch(path, replace_members_body(kept + added), if_match=version)
                    return True
                except PreconditionFailed:
                    if attempt >= self.max_attempts:
                        self.stats.add(gave_up="412")
                        raise
                    self._pause(self._backoff(attempt), "412")
        body = remove_members_body(member_lms_ids)
        if add:
            body["Operations"] = add_members_body(add)["Operations"] + body["Operations"]
        self.patch(path, body)
        return True

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

    def schemas(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The LMS's /Schemas and /ResourceTypes (RFC 7644 §4: every one in one response)."""
        out = []
        for path in ("/Schemas", "/ResourceTypes"):
            body = self._get(path)
            if body is None:
                raise ScimError(404, f"GET {path}: the LMS does not publish {path}")
            out.append(body.get("Resources") if isinstance(body, dict) and "Resources" in body else body)
        return out[0] or [], out[1] or []

    def get_user(self, lms_id: str) -> dict[str, Any] | None:
        return self._get(f"/Users/{lms_id}")

    def iter_users(self, page_size: int = 500):
        return self._iter("/Users", page_size)
