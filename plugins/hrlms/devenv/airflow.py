"""A real Airflow on 127.0.0.1: api-server + scheduler + dag-processor + triggerer, as separate processes.

`make airflow-ui` and the tests that need the real scheduler (events posted through the REST API, hrlms_hr_events)
start it. Never `airflow standalone` (its log servers bind 0.0.0.0). Needs ~830 MB and ~12 s to become healthy.

With ``celery_workers`` it runs Airflow's CeleryExecutor instead (`make airflow-ui CELERY=1`, tests/celery,
bench/bench_celery.py; see :func:`celery_airflow`): a Redis broker (hrlms.devenv.redis), the metadata DB and the
Celery result backend on Postgres (Celery refuses SQLite), and each worker a separate ``airflow celery worker``
process with queues and a name of its own (``--skip-serve-logs``: no log server on 0.0.0.0).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import requests

from hrlms.devenv.scim import http_status

HEALTH_TIMEOUT_S = 120.0
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@dataclass(frozen=True)
class CeleryWorker:
    """One ``airflow celery worker`` process: its name (the Celery node ``<name>@<host>`` and the hostname its
    task instances record), the queues it consumes and how many tasks it runs at once."""

    name: str
    queues: tuple[str, ...] = ("default", "warehouse", "lms")
    concurrency: int = 1


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the local Celery workers: the worker's name (HRLMS_WORKER_HOSTNAME), so the
    task instances of two workers on one machine show which ran them, as two machines would."""
    from airflow.utils.net import getfqdn

    return os.environ.get("HRLMS_WORKER_HOSTNAME") or getfqdn()


class LocalAirflow:
    """Start the Airflow processes with `env` (a LocalStack's environment: AIRFLOW_HOME, the metadata DB, the
    warehouse and LMS connections); ``with LocalAirflow(...) as af:`` stops them (SIGTERM, then SIGKILL).
    ``celery_workers``: also start these Celery workers (`env` must configure the CeleryExecutor)."""

    def __init__(self, env: dict[str, str], *, port: int, all_admins: bool = False, triggerer: bool = True,
                 extra_env: dict[str, str] | None = None, celery_workers: Sequence[CeleryWorker] = ()) -> None:
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
        self.own_env: dict[str, dict[str, str]] = {}
        for worker in celery_workers:
            name = f"worker-{worker.name}"
            self.commands[name] = [airflow, "celery", "worker", "--celery-hostname", f"{worker.name}@%h",
                                   "--queues", ",".join(worker.queues), "--concurrency", str(worker.concurrency),
                                   "--skip-serve-logs", "--without-gossip", "--without-mingle"]
            self.own_env[name] = {"HRLMS_WORKER_HOSTNAME": worker.name,
                                  "AIRFLOW__CORE__HOSTNAME_CALLABLE": "hrlms.devenv.airflow.worker_hostname"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self) -> float:
        """Start every process and wait until the API answers healthy; returns the seconds it took."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.commands:
            self.spawn(name)
        started = time.monotonic()
        while http_status(f"{self.base_url}/api/v2/monitor/health") != 200:
            dead = self.dead()
            if dead or time.monotonic() - started > HEALTH_TIMEOUT_S:
                self.stop()
                raise RuntimeError(f"Airflow did not become healthy ({dead or 'timeout'}); logs in {self.log_dir}")
            time.sleep(0.5)
        return time.monotonic() - started

    def spawn(self, name: str) -> None:
        """Start process `name` (again: a killed worker restarted, as a supervisor would)."""
        log = open(self.log_dir / f"devenv-{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(self.commands[name], env={**self.env, **self.own_env.get(name, {})},
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def kill(self, name: str) -> None:
        """SIGKILL process `name` and everything it started, as a lost machine would lose them: its whole session
        (Airflow's task supervisor puts each task process in a process group of its own, not a session)."""
        proc = self.procs[name]
        kill_session(proc.pid)
        proc.wait()

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
            kill_session(proc.pid)      # task processes left in process groups of their own
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def session_members(sid: int) -> list[int]:
    """The processes of session `sid` (Linux /proc; field 6 of /proc/<pid>/stat)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid:
                found.append(int(proc.name))
    return found


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (its leader included)."""
    for pid in {sid, *session_members(sid)}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
    from hrlms.devenv.stack import LocalStack

    stack = LocalStack(airflow_home=airflow_home).start()      # WAREHOUSE_URL / HRLMS_LMS_URL set: used as given
    stack.ensure_airflow_db()
    env = stack.child_env()
    with LocalAirflow(env, port=free_port(), triggerer=False) as af:
        token = af.token()
        af.unpause_when_parsed(token, "hrlms_hr_events")
        yield af, token, af.asset_id(token, "hrlms://hr/worker-changes")


def celery_env(metadata_url: str, broker_url: str) -> dict[str, str]:
    """Airflow settings of the CeleryExecutor: the metadata DB and Celery's result backend on the Postgres database
    `metadata_url` (a libpq URL), the broker `broker_url` (Redis)."""
    parts = urlsplit(metadata_url)
    tail = urlunsplit(("", parts.netloc, parts.path, parts.query, ""))
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2:{tail}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql:{tail}",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
    }


@contextmanager
def metadata_database(admin_url: str) -> Iterator[str]:
    """A database of its own on the warehouse's Postgres server for Airflow's metadata (dropped afterwards):
    its libpq URL."""
    import psycopg

    name = f"airflow_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@contextmanager
def celery_airflow(airflow_home: Path, workers: Sequence[CeleryWorker], *, port: int | None = None,
                   all_admins: bool = False, extra_env: dict[str, str] | None = None,
                   triggerer: bool = False) -> Iterator[LocalAirflow]:
    """Airflow on the CeleryExecutor, on the warehouse and LMS the environment names (WAREHOUSE_URL, HRLMS_LMS_URL
    set: used as given; else started, and stopped afterwards): a Redis broker, the metadata DB on the warehouse's
    Postgres server (a database of its own, migrated), the api-server, scheduler and dag-processor, and `workers`.
    Everything on 127.0.0.1; everything stopped and the metadata database dropped on exit."""
    from hrlms.devenv.redis import LocalRedis
    from hrlms.devenv.stack import LocalStack, migrate_airflow_db

    with LocalStack(airflow_home=airflow_home) as stack, LocalRedis(airflow_home) as redis, \
            metadata_database(stack.warehouse_url or "") as metadata_url:
        env = stack.child_env() | celery_env(metadata_url, redis.url) | (extra_env or {})
        migrate_airflow_db(env)
        with LocalAirflow(env, port=port or free_port(), all_admins=all_admins, triggerer=triggerer,
                          celery_workers=workers) as af:
            yield af


__all__ = ["HEALTH_TIMEOUT_S", "CeleryWorker", "LocalAirflow", "celery_airflow", "celery_env", "free_port",
           "hr_events_airflow", "kill_session", "metadata_database", "session_members", "worker_hostname"]
