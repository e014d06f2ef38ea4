"""A tiny paginated HR API over generated snapshots, for tests and the local dev stack.

Serves GET /api/workers and /api/org_units?snapshot_date=YYYY-MM-DD&page=N (1-based) as
{"items": [...], "next": <absolute url or null>} with the export's source column names and
string-or-null values, exactly what mappings/synthetic_hr.yaml expects from the HTTP source.
"""
from __future__ import annotations

import csv
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import parse_qs, urlencode, urlparse

Record = dict[str, "str | None"]
# entity -> snapshot date (YYYY-MM-DD) -> records
Records = Mapping[str, Mapping[str, list[Record]]]
ENDPOINTS = {"/api/workers": "workers", "/api/org_units": "org_units"}


def read_day_file(path: Path) -> list[Record]:
    """Rows of a generated CSV (BOM/CRLF tolerated) or JSONL file; empty CSV cells become None."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8-sig") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(fh)]


class _DirSource:
    """Loads workers_{ds}.csv|jsonl lazily from a snapshot folder and keeps it for later pages."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cache: dict[tuple[str, str], list[Record] | None] = {}
        self.lock = threading.Lock()

    def get(self, entity: str, ds: str) -> list[Record] | None:
        with self.lock:
            if (entity, ds) not in self.cache:
                paths = [self.folder / f"{entity}_{ds}.{ext}" for ext in ("csv", "jsonl")]
                found = next((p for p in paths if p.exists()), None)
                self.cache[(entity, ds)] = read_day_file(found) if found else None
            return self.cache[(entity, ds)]


class _MemSource:
    def __init__(self, records: Records) -> None:
        self.records = records

    def get(self, entity: str, ds: str) -> list[Record] | None:
        return self.records.get(entity, {}).get(ds)


def _handler(source: _DirSource | _MemSource, page_size: int, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:   # keep test output quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                return self._send(401, {"error": "unauthorized"})
            url = urlparse(self.path)
            entity = ENDPOINTS.get(url.path)
            if entity is None:
                return self._send(404, {"error": f"no endpoint {url.path}"})
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            ds = query.get("snapshot_date")
            try:
                page = int(query.get("page", "1"))
            except ValueError:
                page = 0
            if not ds or page < 1:
                return self._send(400, {"error": "snapshot_date required, page must be an integer >= 1"})
            records = source.get(entity, ds)
            if records is None:
                return self._send(404, {"error": f"no {entity} snapshot for {ds}"})
            items = records[(page - 1) * page_size: page * page_size]
            more = page * page_size < len(records)
            host, port = self.server.server_address[:2]
            nxt = f"http://{host}:{port}{url.path}?{urlencode({**query, 'page': page + 1})}" if more else None
            self._send(200, {"items": items, "next": nxt})

    return Handler


@contextmanager
def serve_pages(snapshot_dir_or_records: str | Path | Records, page_size: int = 1000, token: str | None = None,
                port: int = 0) -> Iterator[str]:
    """Run the API on 127.0.0.1 (free port unless given) in a thread; yields the base URL.

    `snapshot_dir_or_records` is a folder of generated files or {"workers": {ds: [...]}, "org_units": {...}}
    (e.g. built from SyntheticHR.source_records). With a token, requests need "Authorization: Bearer <token>".
    """
    src = snapshot_dir_or_records
    source = _DirSource(Path(src)) if isinstance(src, (str, Path)) else _MemSource(src)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(source, page_size, token))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="hrlms-synth-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
