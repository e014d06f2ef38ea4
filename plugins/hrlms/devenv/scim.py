"""A local SCIM 2.0 server standing in for the LMS in the demo and the tests.

Why scim2-server: it is a real, RFC-conformant SCIM server with in-memory storage that starts in
about a second, so the sync code is exercised against the protocol rather than a mock.  It is run
as a separate process (the venv's ``scim2-server`` console script) so it behaves like a remote LMS
and cannot share state with the code under test.

What it logs: one access-log line per request (method, path, status) and a start banner — no
headers, so the bearer token does not reach the log (``--debug`` would log the WSGI environ,
including Authorization: never pass it).  The token is visible in the local process list
(``--bearer-token`` is the only way to give it); acceptable for a throwaway 127.0.0.1 server.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from hrlms.devenv import LOCAL_DIR, free_port, stop_process_group, tail

STARTUP_TIMEOUT_S = 30.0


def http_status(url: str, token: str | None = None, timeout: float = 2.0) -> int:
    """Status code of a GET (0 when the server is unreachable); small helper for readiness checks."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


class LocalScimServer:
    """Run ``scim2-server`` on 127.0.0.1 with a random bearer token; use as a context manager.

    After :meth:`start`: ``base_url`` (``http://127.0.0.1:<port>``, no trailing slash; the SCIM
    endpoints are ``/Users``, ``/Groups``, ``/Bulk``…), ``token``, ``log_path``.
    ``service_provider_config``: the /ServiceProviderConfig to announce instead of scim2-server's default
    (every feature, ETags included), e.g. to test against an LMS without ETags. ``schemas`` /
    ``resource_types``: the /Schemas and /ResourceTypes to serve instead of RFC 7643's (an LMS with
    custom extension schemas; scim2-server validates the resources against them).
    """

    def __init__(self, base_dir: Path | None = None, *, keep_log: bool = False,
                 service_provider_config: dict[str, Any] | None = None,
                 schemas: list[dict[str, Any]] | None = None,
                 resource_types: list[dict[str, Any]] | None = None) -> None:
        self.base_dir = Path(base_dir) if base_dir else LOCAL_DIR
        self.keep_log = keep_log
        self.service_provider_config = service_provider_config
        self.served = {"schema": schemas, "resource-type": resource_types}
        self._config_path: Path | None = None
        self.token = secrets.token_urlsafe(32)
        self.port: int | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalScimServer is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalScimServer:
        """Spawn the server and wait until it serves authenticated requests (≈0.8 s, max 30 s)."""
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> None:
        """Start the process without waiting (lets a caller start other services meanwhile)."""
        if self._proc is not None:
            return
        exe = Path(sys.executable).parent / "scim2-server"
        if not exe.exists():
            raise RuntimeError(f"{exe} not found: scim2-server is not installed in this venv")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.base_dir / f"scim-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        args = [str(exe), "--hostname", "127.0.0.1", "--port", str(self.port), f"--bearer-token={self.token}"]
        if self.service_provider_config is not None:
            self._config_path = self.base_dir / f"scim-{self.port}-config.json"
            self._config_path.write_text(json.dumps(self.service_provider_config))
            args.append(f"--service-provider-config={self._config_path}")
        for option, docs in self.served.items():
            if docs is not None:
                path = self.base_dir / f"scim-{self.port}-{option}.json"
                path.write_text(json.dumps(docs))
                args.append(f"--{option}={path}")
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C goes to us, and stop() kills the group
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        atexit.register(self.stop)

    def wait_ready(self) -> None:
        """Block until ready; on failure stop the server and raise with the log tail."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.log_path is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            # /ServiceProviderConfig is public in scim2-server, so also prove the token on /ResourceTypes.
            if http_status(f"{self.base_url}/ServiceProviderConfig", self.token) == 200:
                status = http_status(f"{self.base_url}/ResourceTypes", self.token)
                if status == 200:
                    return
                raise RuntimeError(f"scim2-server refused its own bearer token (HTTP {status})")
            time.sleep(0.05)
        raise RuntimeError(
            f"scim2-server did not become ready on {self.base_url} within {STARTUP_TIMEOUT_S:.0f} s "
            f"(exit code {self._proc.poll()}). Log tail:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, wait (SIGKILL after 10 s), delete the log unless keep_log."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        stop_process_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
            if not self.keep_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)
        if self._config_path is not None:
            self._config_path.unlink(missing_ok=True)
            self._config_path = None

    def __enter__(self) -> LocalScimServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
