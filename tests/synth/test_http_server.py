"""The paginated HR API serves exactly the generated records, page by page, behind a bearer token."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hrlms.synth import SyntheticHR
from hrlms.synth.http_server import read_day_file, serve_pages

from .helpers import START

TOKEN = "s3cret"


def get(url: str, token: str | None = TOKEN) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read().decode("utf-8"))


def all_pages(url: str) -> tuple[list[dict], int]:
    items, pages = [], 0
    next_url: str | None = url
    while next_url:
        page = get(next_url)
        items += page["items"]
        next_url = page["next"]
        pages += 1
    return items, pages


def test_pages_cover_the_file_exactly(csv_run: Path) -> None:
    ds = START.isoformat()
    expected = read_day_file(csv_run / f"workers_{ds}.csv")
    with serve_pages(csv_run, page_size=100, token=TOKEN) as base:
        items, pages = all_pages(f"{base}/api/workers?snapshot_date={ds}")
        orgs, _ = all_pages(f"{base}/api/org_units?snapshot_date={ds}&page=1")
        last = get(f"{base}/api/workers?snapshot_date={ds}&page={pages}")
        beyond = get(f"{base}/api/workers?snapshot_date={ds}&page={pages + 1}")
    assert items == expected
    assert pages == -(-len(expected) // 100)
    assert last["next"] is None and beyond == {"items": [], "next": None}
    assert orgs == read_day_file(csv_run / f"org_units_{ds}.csv")
    assert all(v is None or isinstance(v, str) for r in items for v in r.values())


def test_token_and_errors(csv_run: Path) -> None:
    ds = START.isoformat()
    with serve_pages(csv_run, token=TOKEN) as base:
        for token, url, status in ((None, f"/api/workers?snapshot_date={ds}", 401),
                                   ("wrong", f"/api/workers?snapshot_date={ds}", 401),
                                   (TOKEN, "/api/workers?snapshot_date=1999-01-01", 404),
                                   (TOKEN, "/api/workers", 400),
                                   (TOKEN, "/api/nothing?snapshot_date=" + ds, 404)):
            with pytest.raises(urllib.error.HTTPError) as err:
                get(base + url, token)
            assert err.value.code == status, url
    with pytest.raises(urllib.error.URLError):
        get(f"{base}/api/workers?snapshot_date={ds}")      # stopped on exit


def test_in_memory_records_equal_written_files(tmp_path: Path) -> None:
    hr = SyntheticHR(400, START, seed=5)
    day = hr.write_day(tmp_path)
    records = hr.source_records()
    assert records["workers"] == read_day_file(day.workers_path)
    served = {k: {START.isoformat(): v} for k, v in records.items()}
    with serve_pages(served, page_size=64) as base:
        items, _ = all_pages(f"{base}/api/workers?snapshot_date={START.isoformat()}")
    assert items == records["workers"]
