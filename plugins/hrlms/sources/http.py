"""Paginated HTTP JSON HR source, through the Airflow HTTP connection `hrlms_hris_api`.

Pages are fetched completely (following `next` links) and checksummed before anything is loaded, so
the same extract twice is a no-op and a failure mid-way loads nothing.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from urllib.parse import urljoin

import psycopg
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from hrlms.sources.files import parse_record
from hrlms.sources.mapping import EntityMapping
from hrlms.warehouse.load import IngestError, LoadResult, SnapshotMeta, copy_records, find_snapshot

HRIS_CONN_ID = "hrlms_hris_api"
MAX_PAGES = 100_000


@dataclass(frozen=True)
class HttpSource:
    base_url: str
    token: str | None = None
    timeout: float = 30.0


def http_source_from_env() -> HttpSource:
    """`HRLMS_HRIS_API_URL`/`_TOKEN`, else the Airflow connection (host = base URL, password = token)."""
    url = os.environ.get("HRLMS_HRIS_API_URL")
    if url:
        return HttpSource(url, os.environ.get("HRLMS_HRIS_API_TOKEN"))
    from airflow.sdk import Connection

    conn = Connection.get(HRIS_CONN_ID)
    host = conn.host or ""
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    return HttpSource(host, conn.password)


def _session(src: HttpSource) -> requests.Session:
    s = requests.Session()
    retry = Retry(total=5, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET",), respect_retry_after_header=True)
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    if src.token:
        s.headers["Authorization"] = f"Bearer {src.token}"
    return s


def fetch_all(src: HttpSource, em: EntityMapping, logical_date: date) -> tuple[str, list[dict], str]:
    """Return (first page URL, records, sha256 over the page bodies)."""
    spec = em.http
    if not spec.get("endpoint"):
        raise IngestError(f"mapping entities.{em.entity}.http", "no 'endpoint' configured for the HTTP source")
    params = {k: str(v).format(ds=logical_date.isoformat()) for k, v in (spec.get("params") or {}).items()}
    records_key, next_key = spec.get("records_key", "items"), spec.get("next_key", "next")
    url = urljoin(src.base_url.rstrip("/") + "/", spec["endpoint"].lstrip("/"))
    first_url = requests.Request("GET", url, params=params).prepare().url
    h = hashlib.sha256()
    records: list[dict] = []
    with _session(src) as s:
        next_url: str | None = first_url
        pages = 0
        while next_url:
            pages += 1
            if pages > MAX_PAGES:
                raise IngestError(first_url, f"more than {MAX_PAGES} pages: a 'next' loop?")
            resp = s.get(next_url, timeout=src.timeout)
            if resp.status_code != 200:
                raise IngestError(next_url, f"HTTP {resp.status_code} from the HR API")
            h.update(resp.content)
            try:
                body = resp.json()
            except ValueError:
                raise IngestError(next_url, "response is not JSON") from None
            items = body.get(records_key) if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise IngestError(next_url, f"response has no '{records_key}' list")
            records.extend(items)
            nxt = body.get(next_key)
            next_url = urljoin(next_url, nxt) if nxt else None
    return first_url, records, h.hexdigest()


def ingest_http(conn: psycopg.Connection, em: EntityMapping, mapping_name: str, src: HttpSource,
                logical_date: date) -> LoadResult:
    first_url, records, checksum = fetch_all(src, em, logical_date)
    existing = find_snapshot(conn, em.entity, checksum)
    if existing:
        return LoadResult(existing[0], em.entity, existing[1], first_url, checksum, True)
    if not records:
        raise IngestError(first_url, "the HR API returned no records", line=None)
    parsed = [(i, parse_record(first_url + " record", i, rec, em)) for i, rec in enumerate(records, start=1)]
    present = {c: s for c, s in em.columns.items()}
    meta = SnapshotMeta(em.entity, "http", first_url, checksum, mapping_name, em.hints(), present,
                        logical_date, datetime.now(timezone.utc))
    return copy_records(conn, meta, parsed)
