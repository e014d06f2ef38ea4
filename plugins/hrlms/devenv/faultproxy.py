"""A fault-injecting HTTP reverse proxy for tests: put it between the SCIM client and a real scim2-server.

Why: retries, escrow and crash safety are only proven when the transport really misbehaves — a lost
response after the LMS applied a write, a reset before it saw the request, throttling. A mock cannot
tell which of those the server saw; a proxy in front of the real server can.

    with LocalScimServer(tmp) as lms, FaultProxy(lms.base_url, fault_rate=0.25, seed=7) as proxy:
        client = ScimClient(LmsConfig(proxy.base_url, lms.token, timeout=(2, 1.5)))
        ...
        proxy.stats.snapshot()  # {"requests": …, "forwarded": …, "faults": {"throttle_429": …}, …}

Faults (FAULT_KINDS), chosen with a seeded random generator for `fault_rate` of the requests (optionally
only for some methods), or queued deterministically with `inject()` (consumed first):

- ``throttle_429``: 429 with ``Retry-After`` 0..max_retry_after s, not forwarded;
- ``error_500``: 500, not forwarded;
- ``unavailable_503``: 503 with ``Retry-After``, not forwarded;
- ``timeout_after_forward``: forwarded (the server applied it), then no response: the proxy holds
  the connection for `hang_seconds` (set it above the client's read timeout) and closes it;
- ``reset_before_forward``: the connection is reset (RST) before anything is forwarded;
- ``reset_after_forward``: forwarded (the server applied it), then the connection is reset.

Threaded (one thread per client connection, HTTP/1.1 keep-alive towards the client, a fresh upstream
connection per request so a forwarded write is never sent twice). The Authorization header is
forwarded and never logged: the proxy logs nothing. Binds 127.0.0.1 only; a context manager that
stops cleanly (listener closed, open client connections shut down, hanging handlers woken).
With the stdlib only.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

FAULT_KINDS = ("throttle_429", "error_500", "unavailable_503", "timeout_after_forward",
               "reset_before_forward", "reset_after_forward")
_STATUS_FAULTS = {"throttle_429": 429, "error_500": 500, "unavailable_503": 503}
# Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; Host and Content-Length are set anew.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length"}


@dataclass
class Fault:
    kind: str
    retry_after: int | None = None   # seconds, for throttle_429 / unavailable_503


@dataclass
class _Scripted:
    fault: Fault
    times: int
    method: str | None
    path_prefix: str | None


class ProxyStats:
    """Thread-safe counters: every request received (and when: `arrivals`, time.monotonic()), forwarded, each
    injected fault by kind, responses relayed by status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.forwarded = 0
        self.faults: Counter = Counter()
        self.responses: Counter = Counter()
        self.by_method: Counter = Counter()
        self.arrivals: list[float] = []

    def _add(self, **kw: Any) -> None:
        with self._lock:
            for name, value in kw.items():
                if name == "requests":
                    self.arrivals.append(time.monotonic())
                if name in ("fault", "response", "method"):
                    {"fault": self.faults, "response": self.responses, "method": self.by_method}[name][value] += 1
                else:
                    setattr(self, name, getattr(self, name) + value)

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(self.faults.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "forwarded": self.forwarded,
                    "faults": dict(sorted(self.faults.items())), "injected": sum(self.faults.values()),
                    "responses": dict(sorted(self.responses.items())), "by_method": dict(self.by_method)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (it timed out, was killed, reset) is normal here: no traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (OSError, http.client.HTTPException)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60      # an idle keep-alive connection is closed after this many seconds

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.proxy._track(self.connection, add=False)

    def do_GET(self) -> None:
        self.server.proxy._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    # helpers used by FaultProxy._handle
    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class FaultProxy:
    """Reverse proxy on 127.0.0.1 in front of `upstream` (``http://host:port[/prefix]``), injecting faults."""

    def __init__(self, upstream: str, *, fault_rate: float = 0.0, seed: int | None = 0,
                 kinds: tuple[str, ...] | list[str] = FAULT_KINDS, methods: tuple[str, ...] | None = None,
                 hang_seconds: float = 5.0, max_retry_after: int = 1, upstream_timeout: float = 60.0) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("upstream must be an http:// URL")
        self._up_host, self._up_port = parts.hostname, parts.port or 80
        self._up_prefix = parts.path.rstrip("/")
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self.methods = tuple(m.upper() for m in methods) if methods else None
        self.hang_seconds = hang_seconds
        self.max_retry_after = max_retry_after
        self.upstream_timeout = upstream_timeout
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._script: deque[_Scripted] = deque()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._up_prefix}"

    def set_fault_rate(self, rate: float, kinds: tuple[str, ...] | None = None) -> None:
        with self._lock:
            self.fault_rate = rate
            if kinds is not None:
                self.kinds = tuple(kinds)

    def inject(self, kind: str, times: int = 1, *, method: str | None = None, path_prefix: str | None = None,
               retry_after: int | None = None) -> None:
        """Queue `times` faults of `kind` for the next matching requests (before any random fault)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._script.append(_Scripted(Fault(kind, retry_after), times, method.upper() if method else None,
                                          path_prefix))

    def clear_injected(self) -> None:
        """Drop the faults queued with inject() that were not used yet."""
        with self._lock:
            self._script.clear()

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for item in self._script:
                if (item.method in (None, method)) and (item.path_prefix is None or path.startswith(item.path_prefix)):
                    item.times -= 1
                    if item.times <= 0:
                        self._script.remove(item)
                    fault = item.fault
                    break
            else:
                if self.fault_rate <= 0 or (self.methods and method not in self.methods):
                    return None
                if self._rng.random() >= self.fault_rate:
                    return None
                fault = Fault(self._rng.choice(self.kinds))
            if fault.kind in ("throttle_429", "unavailable_503") and fault.retry_after is None:
                fault = Fault(fault.kind, self._rng.randint(0, self.max_retry_after))
            return fault

    # -- request handling ---------------------------------------------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _forward(self, h: _Handler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        if body or h.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        up = http.client.HTTPConnection(self._up_host, self._up_port, timeout=self.upstream_timeout)
        try:
            up.request(h.command, self._up_prefix + h.path, body=body or None, headers=headers)
            resp = up.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            return resp.status, out, data
        finally:
            up.close()

    def _handle(self, h: _Handler) -> None:
        self.stats._add(requests=1, method=h.command)
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            h.reply(411, [("Content-Type", "text/plain")], b"length required")
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        fault = self._decide(h.command, h.path)
        if fault:
            self.stats._add(fault=fault.kind)
        if fault and fault.kind in _STATUS_FAULTS:
            status = _STATUS_FAULTS[fault.kind]
            headers = [("Content-Type", "application/scim+json")]
            if fault.retry_after is not None and status in (429, 503):
                headers.append(("Retry-After", str(fault.retry_after)))
            detail = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status),
                      "detail": f"injected fault {fault.kind}"}
            h.reply(status, headers, json.dumps(detail).encode())
            self.stats._add(response=status)
            return
        if fault and fault.kind == "reset_before_forward":
            h.reset()
            return
        try:
            status, headers, data = self._forward(h, body)
        except (OSError, http.client.HTTPException) as exc:
            h.reply(502, [("Content-Type", "text/plain")], f"bad gateway: {type(exc).__name__}".encode())
            self.stats._add(response=502)
            return
        self.stats._add(forwarded=1)
        if fault and fault.kind == "reset_after_forward":
            h.reset()
            return
        if fault and fault.kind == "timeout_after_forward":
            self._stopping.wait(self.hang_seconds)
            h.reset()
            return
        h.reply(status, headers, data)
        self.stats._add(response=status)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()            # wake handlers holding a connection (timeout_after_forward)
        server.shutdown()               # stop accepting
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:              # keep-alive handlers blocked on the next request line
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
