"""A real Airflow on 127.0.0.1: api-server + scheduler + dag-processor + triggerer, as separate processes.

`make airflow-ui` and the tests that need the real scheduler (events posted through the REST API, hrlms_hr_events)
start it. Never `airflow standalone` (its log servers bind 0.0.0.0). Needs ~830 MB and ~12 s to become healthy.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests

from hrlms.devenv.scim import http_status

HEALTH_TIMEOUT_S = 120.0
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class LocalAirflow:
    """Start the Airflow processes with `env` (a LocalStack's environment: AIRFLOW_HOME, the metadata DB, the
    warehouse and LMS connections); ``with LocalAirflow(...) as af:`` stops them (SIGTERM, then SIGKILL)."""

    def __init__(self, env: dict[str, str], *, port: int, all_admins: bool = False, triggerer: bool = True,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.airflow_home = Path(env["AIRFLOW_HOME"])
        self.log_dir = self.airflow_home / "logs"
        self.all_admins = all_admins
        self.env = {
            **env,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
            **({"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"} if all_admins
               else {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin"}),
            **(extra_env or {}),
        }
        airflow = str(Path(sys.executable).parent / "airflow")
        self.commands = {
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
        }
        if triggerer:
            self.commands["triggerer"] = [airflow, "triggerer", "--skip-serve-logs"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self) -> float:
        """Start every process and wait until the API answers healthy; returns the seconds it took."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, argv in self.commands.items():
            log = open(self.log_dir / f"devenv-{name}.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.procs[name] = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        while http_status(f"{self.base_url}/api/v2/monitor/health") != 200:
            dead = self.dead()
            if dead or time.monotonic() - started > HEALTH_TIMEOUT_S:
                self.stop()
                raise RuntimeError(f"Airflow did not become healthy ({dead or 'timeout'}); logs in {self.log_dir}")
            time.sleep(0.5)
        return time.monotonic() - started

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def admin_password(self) -> str | None:
        """The generated password of user admin (the file is made private: Airflow writes it world-readable)."""
        pw_file = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        try:
            pw_file.chmod(0o600)
            return json.loads(pw_file.read_text())["admin"]
        except (OSError, ValueError, KeyError):
            return None

    def token(self) -> str:
        """A JWT for the REST API (POST /auth/token as admin), as an HR relay would get one."""
        resp = requests.post(f"{self.base_url}/auth/token", json={"username": "admin", "password": self.admin_password()},
                             timeout=30)
        resp.raise_for_status()
        return resp.json()["access_token"]

    def api(self, method: str, path: str, token: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.base_url}/api/v2{path}", headers={"Authorization": f"Bearer {token}"},
                                timeout=30, **kw)

    def unpause_when_parsed(self, token: str, dag_id: str, timeout: float = 120.0) -> None:
        """Wait until the dag-processor has registered `dag_id`, then unpause it (new DAGs start paused)."""
        deadline = time.monotonic() + timeout
        while self.api("GET", f"/dags/{dag_id}", token).status_code != 200:
            if time.monotonic() > deadline or self.dead():
                raise RuntimeError(f"{dag_id} was not parsed within {timeout:.0f} s (logs in {self.log_dir})")
            time.sleep(0.5)
        self.api("PATCH", f"/dags/{dag_id}", token, json={"is_paused": False}).raise_for_status()

    def asset_id(self, token: str, uri: str) -> int:
        """The id of the asset `uri` (what POST /api/v2/assets/events takes)."""
        assets = self.api("GET", "/assets", token, params={"uri_pattern": uri.rsplit("/", 1)[-1]}).json()["assets"]
        return next(a["id"] for a in assets if a["uri"] == uri)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process group, then SIGKILL what is left after ``timeout``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def hr_events_airflow(airflow_home: Path) -> Iterator[tuple[LocalAirflow, str, int]]:
    """An Airflow of its own (metadata DB and logs under `airflow_home`) on the warehouse and LMS the environment
    names, with hrlms_hr_events unpaused: (the Airflow, a token, the id of the HR events asset). The tests and
    bench/bench_events.py post events to it."""
    from hrlms.devenv.stack import UNSET_VARS, LocalStack

    stack = LocalStack(airflow_home=airflow_home).start()      # WAREHOUSE_URL / HRLMS_LMS_URL set: used as given
    stack.ensure_airflow_db()
    env = {k: v for k, v in os.environ.items() if k not in UNSET_VARS} | stack.env()
    with LocalAirflow(env, port=free_port(), triggerer=False) as af:
        token = af.token()
        af.unpause_when_parsed(token, "hrlms_hr_events")
        yield af, token, af.asset_id(token, "hrlms://hr/worker-changes")


__all__ = ["HEALTH_TIMEOUT_S", "LocalAirflow", "free_port", "hr_events_airflow"]
