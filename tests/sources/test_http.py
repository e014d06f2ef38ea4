"""Paginated HTTP JSON HR source, through the Airflow HTTP connection, against a local page server."""
import json
from datetime import date

import pytest

from hrlms import pipeline
from hrlms.sources.http import HttpSource, fetch_all
from hrlms.synth import SyntheticHR
from hrlms.synth.http_server import serve_pages
from hrlms.warehouse import db
from hrlms.warehouse.load import IngestError

from .hrfiles import MAPPING, WORKERS

D1 = date(2026, 1, 5)


@pytest.fixture
def hr():
    return SyntheticHR(workers=250, start=D1, seed=3)


def by_day(records: dict) -> dict:
    """{entity: [..]} -> the page server's {entity: {ds: [..]}}."""
    return {entity: {D1.isoformat(): rows} for entity, rows in records.items()}


def test_pages_are_followed_and_loaded_once_through_the_airflow_connection(fresh_db, hr, monkeypatch):
    records = hr.source_records(D1)
    with serve_pages(by_day(records), page_size=40, token="hr-api-token") as base_url:
        monkeypatch.setenv("HRLMS_SOURCE", "http")
        monkeypatch.delenv("HRLMS_HRIS_API_URL", raising=False)
        monkeypatch.setenv("AIRFLOW_CONN_HRLMS_HRIS_API", json.dumps(
            {"conn_type": "http", "host": base_url, "password": "hr-api-token"}))
        first = pipeline.ingest("http-1", D1)
        again = pipeline.ingest("http-2", D1)
    assert first["rows"] == len(records["workers"]) > 40          # several pages
    assert again["workers"] == first["workers"]                     # same extract: no-op
    with db.connect(fresh_db) as c:
        got = c.execute("select _line_no, person_id, work_email from raw_hris.workers order by _line_no").fetchall()
        snap = c.execute("select source_kind, source_uri from raw_hris.snapshots where entity = 'workers'").fetchall()
    assert [g[1] for g in got] == [r["Employee_ID"] for r in records["workers"]]
    assert [g[0] for g in got] == list(range(1, len(got) + 1))
    assert snap == [("http", f"{base_url}/api/workers?snapshot_date={D1}")]


def test_wrong_token_is_a_clear_error(hr):
    with serve_pages(by_day(hr.source_records(D1)), token="right") as base_url:
        with pytest.raises(IngestError, match="HTTP 401"):
            fetch_all(HttpSource(base_url, "wrong"), WORKERS, D1)


def test_record_missing_a_required_field_names_the_record(fresh_db, hr):
    records = hr.source_records(D1)
    del records["workers"][7]["Work_Email"]
    with serve_pages(by_day(records), page_size=5) as base_url, db.connect(fresh_db) as conn:
        db.bootstrap(conn)
        from hrlms.sources.http import ingest_http

        with pytest.raises(IngestError) as err:
            ingest_http(conn, WORKERS, MAPPING.name, HttpSource(base_url), D1)
        assert err.value.line == 8 and err.value.field == "Work_Email (work_email)"
        assert conn.execute("select count(*) from raw_hris.workers").fetchone() == (0,)
