"""Completions back from a Learning Record Store: pull xAPI statements into ``raw_lms``.

The pull (:func:`pull_statements`) is incremental and idempotent:

* **Window.**  LRSs filter ``since``/``until`` on the statement ``timestamp`` (when the learner did
  it), not on ``stored`` (Ralph does; so do others), and a statement can reach the LRS days after it
  happened (offline players, batched uploads).  So each pull asks for ``timestamp > watermark −
  overlap`` (``HRLMS_XAPI_OVERLAP_HOURS``, default 72) and de-duplicates by statement id.  A
  statement stored *after* a pull with a timestamp older than that pull's watermark minus the overlap
  is missed — widen the overlap (or run a full pull with ``overlap`` larger than the history) if
  the LRS receives such late statements.
* **Watermark.**  The greatest statement timestamp in ``raw_lms.xapi_statements`` as of the last
  *finished* pull (``raw_lms.xapi_pulls.watermark_after``).  Not simply the table's maximum: pages
  arrive in stored order, not timestamp order, so a pull that crashed after a few pages may have
  stored a late timestamp while older statements were still unfetched; its rerun must start from
  the previous finished pull's watermark to reach them.
* **Pages.**  Each page (``limit``, at most 100 on Ralph) is inserted with ``on conflict
  (statement_id) do nothing`` in one transaction, together with the pull's counters, then the
  ``more`` link (relative to the LRS origin) is followed until it is empty.  A crash loses nothing
  already stored, and a rerun converges.

HTTP: one ``requests.Session`` with HTTP Basic auth, ``X-Experience-API-Version: 1.0.3``, a timeout
on every request, TLS verification on unless configured off, and urllib3 retries with backoff
(honouring ``Retry-After``) on 429/500/502/503/504.  POST is retried too: every statement we post
carries its id, and an LRS stores an equivalent statement id once.  Only the LRS URL (without any
credentials) is logged or stored; the password is never.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import psycopg
import requests
from psycopg.types.json import Jsonb
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

LRS_CONN_ID = "hrlms_lrs"
XAPI_VERSION = "1.0.3"
STATEMENTS_PATH = "/xAPI/statements"
DEFAULT_OVERLAP_HOURS = 72.0
MAX_PAGES = 1_000_000  # a guard against a `more` link that never ends, far above any real history

_ADL = "http://adlnet.gov/expapi/verbs/"
#: Verbs the completions models care about (cmi5's defined verbs, ADL's satisfied/waived, and the
#: generic attempted/voided). Every statement is kept raw whatever its verb.
VERBS: dict[str, str] = {
    "launched": _ADL + "launched",
    "initialized": _ADL + "initialized",
    "attempted": _ADL + "attempted",
    "completed": _ADL + "completed",
    "passed": _ADL + "passed",
    "failed": _ADL + "failed",
    "abandoned": _ADL + "abandoned",
    "terminated": _ADL + "terminated",
    "voided": _ADL + "voided",  # retracts the statement it targets (e.g. a completion entered by mistake)
    "satisfied": "https://w3id.org/xapi/adl/verbs/satisfied",
    "waived": "https://w3id.org/xapi/adl/verbs/waived",
}


class XapiError(RuntimeError):
    """An LRS request that failed (after retries); the message names the method, URL and status."""


@dataclass(frozen=True)
class LrsConfig:
    """Where the LRS is. ``url`` is the base (``/xAPI/statements`` is appended)."""

    url: str
    username: str
    password: str = field(repr=False)
    verify_tls: bool = True
    timeout: float = 30.0


@dataclass(frozen=True)
class PullResult:
    """What one pull did (also in its ``raw_lms.xapi_pulls`` row)."""

    pull_id: int
    pages: int
    fetched: int
    inserted: int
    watermark_before: datetime | None
    watermark_after: datetime | None


def lrs_config_from_env() -> LrsConfig | None:
    """``HRLMS_LRS_URL``/``_USERNAME``/``_PASSWORD``, else the Airflow connection ``hrlms_lrs``
    (host = base URL or host name with schema/port, login, password); ``None`` when neither is
    configured, which tells the caller to skip the pull."""
    url = os.environ.get("HRLMS_LRS_URL")
    if url:
        return LrsConfig(url.rstrip("/"), os.environ.get("HRLMS_LRS_USERNAME", ""),
                         os.environ.get("HRLMS_LRS_PASSWORD", ""))
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        conn = Connection.get(LRS_CONN_ID)
    except AirflowNotFoundException:
        return None
    host = (conn.host or "").rstrip("/")
    if not host:
        return None
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    return LrsConfig(host, conn.login or "", conn.password or "")


def default_overlap() -> timedelta:
    """``HRLMS_XAPI_OVERLAP_HOURS`` (default 72 h): how far before the watermark each pull reaches."""
    raw = os.environ.get("HRLMS_XAPI_OVERLAP_HOURS") or str(DEFAULT_OVERLAP_HOURS)
    try:
        return timedelta(hours=float(raw))
    except ValueError:
        raise ValueError(f"environment variable HRLMS_XAPI_OVERLAP_HOURS={raw!r} is not a number") from None


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may be logged and stored."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def session(lrs: LrsConfig) -> requests.Session:
    """A session with auth, the xAPI version header, TLS verification and retries (see module doc)."""
    s = requests.Session()
    retry = Retry(total=5, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET", "POST"), respect_retry_after_header=True, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.auth = (lrs.username, lrs.password)
    s.headers["X-Experience-API-Version"] = XAPI_VERSION
    s.verify = lrs.verify_tls
    return s


def _request(s: requests.Session, method: str, url: str, timeout: float, **kw: Any) -> requests.Response:
    try:
        return s.request(method, url, timeout=timeout, **kw)
    except requests.RequestException as exc:
        # `from None`: the chained urllib3 errors repeat the URL and add nothing a reader needs.
        raise XapiError(f"{method} {public_url(url)}: {type(exc).__name__}") from None


def _fail(resp: requests.Response, method: str) -> XapiError:
    return XapiError(f"{method} {public_url(resp.url)}: HTTP {resp.status_code} {resp.text[:200]}")


def _utc_iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: xAPI timestamps are compared with offsets")
    return value.astimezone(timezone.utc).isoformat()


# --- post -------------------------------------------------------------------------------------------

def post_statements(lrs: LrsConfig, statements: Iterable[dict[str, Any]], batch_size: int = 500) -> int:
    """POST statements in batches; return how many the LRS stored now (already stored ones: 0).

    Idempotent: every statement must carry its ``id``.  An LRS answers a batch whose statements it
    all holds already with 204 and stores only the new ones of a mixed batch (Ralph does so for
    equivalent statements); a batch containing a *different* statement under an existing id gets
    409, and is then posted one by one so that only the conflicting statements are skipped (logged).
    Duplicate ids in the input are sent once (Ralph rejects a batch repeating an id with 400).
    """
    unique: dict[str, dict[str, Any]] = {}
    for statement in statements:
        if not statement.get("id"):
            raise ValueError("every statement needs an 'id' to be posted idempotently")
        unique.setdefault(str(statement["id"]), statement)
    batch = list(unique.values())
    url = public_url(lrs.url).rstrip("/") + STATEMENTS_PATH
    with session(lrs) as s:
        return sum(_post_batch(s, lrs, url, batch[i : i + batch_size]) for i in range(0, len(batch), batch_size))


def _post_batch(s: requests.Session, lrs: LrsConfig, url: str, batch: list[dict[str, Any]]) -> int:
    resp = _request(s, "POST", url, lrs.timeout, json=batch)
    if resp.status_code == 409 and len(batch) > 1:
        return sum(_post_batch(s, lrs, url, [statement]) for statement in batch)
    if resp.status_code == 409:
        log.warning("xAPI statement %s skipped: the LRS holds a different statement with this id", batch[0]["id"])
        return 0
    if resp.status_code == 204:
        return 0
    if resp.status_code != 200:
        raise _fail(resp, "POST")
    return len(resp.json())


# --- pull -------------------------------------------------------------------------------------------

_INSERT_PAGE = """
insert into raw_lms.xapi_statements (
    statement_id, statement, actor_account_name, actor_account_homepage, actor_mbox, verb_id, object_id,
    result_score_scaled, result_success, result_completion, statement_timestamp, stored, pull_id)
select (s->>'id')::uuid, s, s#>>'{actor,account,name}', s#>>'{actor,account,homePage}', s#>>'{actor,mbox}',
       s#>>'{verb,id}', s#>>'{object,id}', (s#>>'{result,score,scaled}')::numeric,
       (s#>>'{result,success}')::boolean, (s#>>'{result,completion}')::boolean,
       (s->>'timestamp')::timestamptz, (s->>'stored')::timestamptz, %(pull_id)s
from jsonb_array_elements(%(page)s) as s
on conflict (statement_id) do nothing
"""


def pull_statements(
    conn: psycopg.Connection,
    lrs: LrsConfig,
    *,
    overlap: timedelta | None = None,
    page_limit: int = 100,
    run_key: str | None = None,
    until: datetime | None = None,
) -> PullResult:
    """Fetch the statements newer than the watermark minus ``overlap`` into ``raw_lms``; see the
    module docstring for the window, the watermark and why a rerun converges.

    ``conn`` must be in autocommit mode (:func:`hrlms.warehouse.db.connect`): each page commits on
    its own.  ``until`` (aware) bounds the window for a backfill; ``run_key`` is recorded.
    """
    overlap = default_overlap() if overlap is None else overlap
    watermark_before = conn.execute(
        "select max(watermark_after) from raw_lms.xapi_pulls where finished_at is not null"
    ).fetchone()[0]
    since = watermark_before - overlap if watermark_before is not None else None
    base = public_url(lrs.url).rstrip("/")
    with conn.transaction():
        pull_id = conn.execute(
            "insert into raw_lms.xapi_pulls (lrs_url, since, until, watermark_before, run_key) "
            "values (%s, %s, %s, %s, %s) returning pull_id",
            (base, since, until, watermark_before, run_key),
        ).fetchone()[0]
    log.info("xAPI pull %s from %s since %s", pull_id, base, since.isoformat() if since else "the beginning")

    pages = fetched = inserted = 0
    with session(lrs) as s:
        for page in _pages(s, lrs, since, until, page_limit):
            pages += 1
            fetched += len(page)
            inserted += _store_page(conn, pull_id, page)

    with conn.transaction():
        watermark_after = conn.execute(
            "update raw_lms.xapi_pulls set finished_at = clock_timestamp(), "
            "  watermark_after = (select max(statement_timestamp) from raw_lms.xapi_statements) "
            "where pull_id = %s returning watermark_after",
            (pull_id,),
        ).fetchone()[0]
    log.info("xAPI pull %s: %d pages, %d statements fetched, %d new", pull_id, pages, fetched, inserted)
    return PullResult(pull_id, pages, fetched, inserted, watermark_before, watermark_after)


def _pages(
    s: requests.Session, lrs: LrsConfig, since: datetime | None, until: datetime | None, limit: int
) -> Iterator[list[dict[str, Any]]]:
    """Yield the statement pages of one query, following ``more`` links until there are none.

    ``ascending=true`` asks a conforming LRS for stored order, which keeps paging stable while
    statements arrive; Ralph's fs backend pages in stored order anyway (it only reverses each page).
    """
    origin = public_url(lrs.url).rstrip("/")
    params: dict[str, Any] = {"limit": limit, "ascending": "true"}
    if since is not None:
        params["since"] = _utc_iso(since)
    if until is not None:
        params["until"] = _utc_iso(until)
    url: str | None = requests.Request("GET", origin + STATEMENTS_PATH, params=params).prepare().url
    seen: set[str] = set()
    while url:
        if url in seen or len(seen) >= MAX_PAGES:
            raise XapiError(f"GET {public_url(url)}: the LRS's 'more' links do not end")
        seen.add(url)
        resp = _request(s, "GET", url, lrs.timeout)
        if resp.status_code != 200:
            raise _fail(resp, "GET")
        body = resp.json()
        yield body.get("statements") or []
        more = body.get("more")
        url = urljoin(origin + "/", more) if more else None


def _store_page(conn: psycopg.Connection, pull_id: int, page: Sequence[dict[str, Any]]) -> int:
    """Insert one page and advance the pull's counters in one transaction; return the new rows."""
    with conn.transaction():
        inserted = conn.execute(_INSERT_PAGE, {"pull_id": pull_id, "page": Jsonb(list(page))}).rowcount if page else 0
        conn.execute(
            "update raw_lms.xapi_pulls set pages = pages + 1, fetched = fetched + %s, inserted = inserted + %s "
            "where pull_id = %s",
            (len(page), inserted, pull_id),
        )
    return inserted
