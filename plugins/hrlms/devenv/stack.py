"""The local stack for `make demo` / `make test`: warehouse + LMS + Airflow settings as env vars.

Why env vars: the DAGs, dbt profiles, GX and the tests all read ``WAREHOUSE_URL``,
``HRLMS_LMS_URL``/``HRLMS_LMS_TOKEN`` and Airflow connections (``AIRFLOW_CONN_*``), so the same code
runs against these throwaway services, docker-compose, or production without changes.  Services
that are already given (``WAREHOUSE_URL``, ``HRLMS_LMS_URL`` set) are used as they are.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from contextlib import closing
from importlib.metadata import version as dist_version
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from hrlms.devenv import LOCAL_DIR, REPO_ROOT
from hrlms.devenv.postgres import LocalPostgres
from hrlms.devenv.ralph import LocalRalph
from hrlms.devenv.scim import LocalScimServer

#: Removed from the environment inside the stack: unit-test mode changes Airflow's behaviour
#: (e.g. config defaults), and the demo must behave like a real deployment.
UNSET_VARS: tuple[str, ...] = ("AIRFLOW__CORE__UNIT_TEST_MODE",)
_SECRETS_FILE = ".devenv-secrets.json"
_MIGRATED_MARKER = ".devenv-migrated.json"
# Airflow pools the DAGs use: name -> [slots, description] (docker-compose's airflow-init creates the same).
AIRFLOW_POOLS = {"hrlms_lms": [4, "LMS (SCIM) apply tasks"]}


def airflow_conn_uri(warehouse_url: str) -> str:
    """Airflow connection URI for a SQLAlchemy/libpq URL: scheme forced to ``postgresql://``.

    (``postgresql+psycopg://`` is a SQLAlchemy dialect name Airflow would not understand;
    Airflow maps ``postgresql`` to conn_type ``postgres``.)
    """
    parts = urlsplit(warehouse_url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


def _load_or_create_secrets(airflow_home: Path) -> dict[str, str]:
    """JWT/session secrets kept in AIRFLOW_HOME (0600) so every Airflow process of this home agrees."""
    path = airflow_home / _SECRETS_FILE
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("jwt_secret") and data.get("api_secret_key"):
            return {k: str(v) for k, v in data.items()}
    except (OSError, ValueError):
        pass
    data = {"jwt_secret": secrets.token_urlsafe(48), "api_secret_key": secrets.token_urlsafe(32)}
    airflow_home.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the metadata DB and secrets
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
    return data


class LocalStack:
    """Start the warehouse and the LMS unless given; expose everything as environment variables.

    ``with LocalStack() as stack:`` applies :meth:`env` to ``os.environ`` (restored on exit) and
    stops what it started.
    """

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        airflow_home: Path | None = None,
        repo_root: Path = REPO_ROOT,
        plugins_folder: Path | None = None,
        lrs: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir) if base_dir else LOCAL_DIR
        self.repo_root = repo_root
        self.airflow_home = Path(airflow_home) if airflow_home else self.base_dir / "airflow"
        #: Airflow plugins folder (see env()); override with <repo>/plugins once it has a .airflowignore.
        self.plugins_folder = Path(plugins_folder) if plugins_folder else self.airflow_home / "plugins"
        self.postgres: LocalPostgres | None = None
        self.scim: LocalScimServer | None = None
        self.want_lrs = lrs
        self.ralph: LocalRalph | None = None
        self.lrs: tuple[str, str, str] | None = None   # (url, username, password) of the LRS
        self.warehouse_url: str | None = None
        self.lms_url: str | None = None
        self.lms_token: str | None = None
        self._saved_env: dict[str, str | None] | None = None

    def start(self) -> LocalStack:
        """Start Postgres unless WAREHOUSE_URL is set, the SCIM server unless HRLMS_LMS_URL is set, and
        (with ``lrs=True``) a Ralph LRS unless HRLMS_LRS_URL is set."""
        try:
            if self.want_lrs:
                if os.environ.get("HRLMS_LRS_URL"):
                    self.lrs = (os.environ["HRLMS_LRS_URL"].rstrip("/"), os.environ.get("HRLMS_LRS_USERNAME", ""),
                                os.environ.get("HRLMS_LRS_PASSWORD", ""))
                else:
                    self.ralph = LocalRalph(self.base_dir / "lrs", max_page_size=1000)
                    self.ralph.spawn()
            preset_lms = os.environ.get("HRLMS_LMS_URL")
            if preset_lms:
                self.lms_url = preset_lms.rstrip("/")
                self.lms_token = os.environ.get("HRLMS_LMS_TOKEN", "")
            else:
                self.scim = LocalScimServer(self.base_dir)
                self.scim.spawn()  # boots while Postgres runs initdb
            preset_wh = os.environ.get("WAREHOUSE_URL")
            if preset_wh:
                self.warehouse_url = preset_wh
            else:
                self.postgres = LocalPostgres(self.base_dir).start()
                self.warehouse_url = self.postgres.url
            if self.scim is not None:
                self.scim.wait_ready()
                self.lms_url, self.lms_token = self.scim.base_url, self.scim.token
            if self.ralph is not None:
                self.ralph.wait_ready()
                self.lrs = (self.ralph.base_url, self.ralph.username, self.ralph.password)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the services this stack started (never the preset ones)."""
        if self.ralph is not None:
            self.ralph.stop()
            self.ralph = None
        if self.scim is not None:
            self.scim.stop()
            self.scim = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def env(self) -> dict[str, str]:
        """Environment for the project's code, dbt, GX and Airflow (project-local SQLite metadata DB)."""
        if self.warehouse_url is None or self.lms_url is None:
            raise RuntimeError("LocalStack is not started")
        plugins = str(self.repo_root / "plugins")
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != plugins]
        pythonpath = os.pathsep.join([plugins, *rest])
        sec = _load_or_create_secrets(self.airflow_home)
        self.plugins_folder.mkdir(parents=True, exist_ok=True)
        lrs_env = {}
        if self.lrs is not None:
            url, user, password = self.lrs
            lrs_env = {"HRLMS_LRS_URL": url, "HRLMS_LRS_USERNAME": user, "HRLMS_LRS_PASSWORD": password,
                       "AIRFLOW_CONN_HRLMS_LRS": json.dumps(
                           {"conn_type": "http", "host": url, "login": user, "password": password})}
        return lrs_env | {
            "WAREHOUSE_URL": self.warehouse_url,
            "HRLMS_LMS_URL": self.lms_url,
            "HRLMS_LMS_TOKEN": self.lms_token or "",
            "AIRFLOW_CONN_HRLMS_WAREHOUSE": airflow_conn_uri(self.warehouse_url),
            "AIRFLOW_CONN_HRLMS_LMS": json.dumps(
                {"conn_type": "http", "host": self.lms_url, "password": self.lms_token or ""}
            ),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo_root / "dags"),
            # Not <repo>/plugins: Airflow's plugin loader imports *every* .py file there under its bare
            # stem as a top-level module (hrlms/sources/http.py -> sys.modules["http"], dbt.py ->
            # sys.modules["dbt"], devenv/__main__.py -> "__main__"), breaking stdlib/dbt imports.
            # We have no AirflowPlugin classes; hrlms is importable through PYTHONPATH instead.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # as docker-compose.yaml: an idle scheduler looks for new runs and finished tasks every 0.25 s, not 1 s
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home}/airflow.db",
            "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": sec["api_secret_key"],
            # INFO: dag.test() prints task logs (and why a task failed) at INFO; WARNING would hide them.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": pythonpath,
            "GX_ANALYTICS_ENABLED": "False",
            "DO_NOT_TRACK": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        }

    def ensure_airflow_db(self) -> None:
        """``airflow db migrate`` (~3.5 s) unless this AIRFLOW_HOME's DB is already at this version."""
        db = self.airflow_home / "airflow.db"
        marker = self.airflow_home / _MIGRATED_MARKER
        current = _alembic_revision(db)
        af_version = dist_version("apache-airflow")
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            done = {}
        if current and done == {"airflow": af_version, "revision": current, "pools": AIRFLOW_POOLS}:
            return
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        migrate_airflow_db(self.child_env())
        marker.write_text(json.dumps({"airflow": af_version, "revision": _alembic_revision(db),
                                      "pools": AIRFLOW_POOLS}))

    def child_env(self) -> dict[str, str]:
        """The environment of a process run in this stack (Airflow, its CLI): ours without UNSET_VARS, plus env()."""
        return {k: v for k, v in os.environ.items() if k not in UNSET_VARS} | self.env()

    def __enter__(self) -> LocalStack:
        self.start()
        try:
            env = self.env()
        except BaseException:
            self.stop()
            raise
        self._saved_env = {k: os.environ.get(k) for k in [*env, *UNSET_VARS]}
        for key in UNSET_VARS:
            os.environ.pop(key, None)
        os.environ.update(env)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            for key, old in (self._saved_env or {}).items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
            self._saved_env = None


def migrate_airflow_db(env: dict[str, str]) -> None:
    """``airflow db migrate`` and the pools the DAGs use, on the metadata DB `env` names."""
    airflow = Path(sys.executable).parent / "airflow"
    commands = [["db", "migrate"]] + [["pools", "set", name, str(slots), about]
                                      for name, (slots, about) in AIRFLOW_POOLS.items()]
    for args in commands:
        proc = subprocess.run([str(airflow), *args], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise RuntimeError(f"airflow {' '.join(args[:2])} failed ({proc.returncode}):\n{out}")


def _alembic_revision(db: Path) -> str | None:
    """Alembic head stored in the SQLite metadata DB, or None when missing/unmigrated."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None
    except sqlite3.Error:
        return None
