"""A local Ralph LRS (Learning Record Store) standing in for the LMS's xAPI endpoint.

Why Ralph: it is a real xAPI 1.0.3 LRS (statements resource, Basic auth, ``more`` paging), so the
pull in :mod:`hrlms.learning.xapi` is exercised against the protocol rather than a mock.

Why its own venv: ``ralph-malph[lrs]==5.1.0`` pins cachetools and fastapi versions that conflict
with Airflow's, so it cannot live in the project venv.  :func:`ensure_venv` creates
``<repo>/.local/ralph-venv`` (or ``$HRLMS_RALPH_VENV``) from the fully pinned
``ralph-requirements.txt`` the first time (≈ 20 s) and records the requirements' hash in a stamp
file, so later starts skip pip entirely.

Why a wrapper: Ralph 5.1.0's ``fs`` backend has two defects (every POST after the first fails;
``verb``/``activity`` filters never match); ``ralph_app.py`` corrects both in memory and is what
uvicorn serves.  Its docstring documents the patches and the quirks that remain.

Security: the server binds 127.0.0.1; the credentials are random per start; the password is never
on a command line, in an environment variable or in a file — only its bcrypt hash is, in the auth
file (mode 0600), and it is hashed by a child process that reads it on stdin.  Ralph logs request
lines and usernames, never the Authorization header.  The process gets a minimal environment and
runs in its instance directory, so no ``RALPH_*``/``SENTRY_*`` variable or ``.env`` of the
developer's shell leaks into it, and it sees none of our secrets (e.g. ``WAREHOUSE_URL``).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from hrlms.devenv import LOCAL_DIR, free_port, stop_process_group, tail
from hrlms.locks import file_lock

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "ralph-requirements.txt"
APP_SCRIPT = HERE / "ralph_app.py"
VENV_ENV_VAR = "HRLMS_RALPH_VENV"
STAMP_NAME = ".hrlms-requirements.sha256"
STARTUP_TIMEOUT_S = 60.0
#: The xAPI agent recorded as ``authority`` on every statement stored through this LRS.
AUTHORITY_AGENT = {"objectType": "Agent", "account": {"homePage": "https://hrlms.local/lrs", "name": "hrlms"}}


def default_venv_dir() -> Path:
    """``$HRLMS_RALPH_VENV`` or ``<repo>/.local/ralph-venv``."""
    return Path(os.environ.get(VENV_ENV_VAR) or LOCAL_DIR / "ralph-venv")


def requirements_digest() -> str:
    """Hash of the pinned requirements and the interpreter's version: either change means rebuild."""
    data = REQUIREMENTS.read_bytes() + f"\npython {sys.version_info[:2]}".encode()
    return hashlib.sha256(data).hexdigest()


def ensure_venv(venv_dir: Path | None = None) -> Path:
    """Return the Python of Ralph's venv, (re)building the venv if its stamp does not match.

    Idempotent and cheap when up to date (one file read).  A stale venv is cleared and rebuilt
    rather than upgraded in place, so it always equals ``ralph-requirements.txt`` exactly.
    """
    venv_dir = Path(venv_dir) if venv_dir else default_venv_dir()
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / STAMP_NAME
    digest = requirements_digest()

    def up_to_date() -> bool:
        return python.exists() and stamp.exists() and stamp.read_text().strip() == digest

    if up_to_date():
        return python
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    # so two processes starting Ralph at once build the venv once
    with file_lock(venv_dir.parent / f".{venv_dir.name}.lock"):
        if not up_to_date():  # another process may have built it while we waited
            _build_venv(venv_dir)
            stamp.write_text(digest + "\n")
    return python


def _build_venv(venv_dir: Path) -> None:
    """``python -m venv --clear`` + ``pip install -r ralph-requirements.txt``; pip's output → a log."""
    if venv_dir.exists() and any(venv_dir.iterdir()) and not (venv_dir / "pyvenv.cfg").exists():
        raise RuntimeError(f"{venv_dir} exists and is not a venv: refusing to clear it for Ralph")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv_dir)], check=True)
    log_path = venv_dir / "pip-install.log"
    with open(log_path, "wb") as log:
        result = subprocess.run(
            [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--no-input",
             "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise RuntimeError(f"Installing Ralph into {venv_dir} failed. Log tail:\n{tail(log_path)}")


def bcrypt_hash(python: Path, password: str) -> str:
    """bcrypt hash of ``password`` as ``ralph auth`` makes it, computed in Ralph's venv (which has
    bcrypt; ours does not) with the password passed on stdin, never on the command line."""
    code = "import bcrypt, sys; print(bcrypt.hashpw(sys.stdin.buffer.read(), bcrypt.gensalt()).decode())"
    out = subprocess.run(
        [str(python), "-I", "-c", code], input=password.encode(), capture_output=True, check=True
    )
    return out.stdout.decode().strip()


def basic_auth_status(url: str, username: str | None = None, password: str | None = None) -> int:
    """Status code of a GET with optional Basic credentials (0 when unreachable)."""
    headers = {}
    if username is not None and password is not None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


class LocalRalph:
    """Run the patched Ralph LRS (``fs`` backend) on 127.0.0.1; use as a context manager.

    Each start gets an instance directory ``<base_dir>/ralph-<port>`` holding the statements
    (``data/fs_lrs.jsonl``), the auth file, Ralph's history file and ``ralph.log``; it is deleted
    on stop unless ``keep_files``.  After :meth:`start`: ``base_url`` (``http://127.0.0.1:<port>``,
    the xAPI endpoint is ``/xAPI/statements``), ``username``, ``password``.
    """

    def __init__(self, base_dir: Path | None = None, *, venv_dir: Path | None = None, keep_files: bool = False,
                 max_page_size: int = 100) -> None:
        self.base_dir = Path(base_dir) if base_dir else LOCAL_DIR / "ralph"
        self.venv_dir = Path(venv_dir) if venv_dir else default_venv_dir()
        self.keep_files = keep_files
        #: Ralph's cap on statements per page (RUNSERVER_MAX_SEARCH_HITS_COUNT, default 100). Its fs backend
        #: re-reads the whole file for every page, so the demo raises it to keep pulls linear-ish.
        self.max_page_size = max_page_size
        self.username = f"hrlms-{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(24)
        self.port: int | None = None
        self.instance_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalRalph is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def log_path(self) -> Path:
        return self._dir() / "ralph.log"

    @property
    def auth_file(self) -> Path:
        return self._dir() / "auth.json"

    def _dir(self) -> Path:
        if self.instance_dir is None:
            raise RuntimeError("LocalRalph is not started")
        return self.instance_dir

    def start(self) -> LocalRalph:
        """Build the venv if needed, spawn Ralph and wait until it accepts our credentials (≈2 s)."""
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> None:
        """Start the process without waiting (lets a caller start other services meanwhile)."""
        if self._proc is not None:
            return
        python = ensure_venv(self.venv_dir)
        self.port = free_port()
        self.instance_dir = self.base_dir / f"ralph-{self.port}"
        self.instance_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_auth_file(python)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [str(python), "-I", "-u", str(APP_SCRIPT), "--port", str(self.port)],
            cwd=self.instance_dir,  # Ralph reads ./.env: never the repo's
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C goes to us, and stop() kills the group
        )
        atexit.register(self.stop)

    def _write_auth_file(self, python: Path) -> None:
        """Ralph's Basic-auth file, in the format ``ralph auth --write-to-disk`` produces."""
        users = [{
            "username": self.username,
            "hash": bcrypt_hash(python, self.password),
            "scopes": ["all"],
            "agent": AUTHORITY_AGENT,
        }]
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(users, fh)

    def _env(self) -> dict[str, str]:
        """Ralph's settings (names checked in ralph/conf.py and backends/*/fs.py of 5.1.0)."""
        instance = self._dir()
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME", str(instance)),
            "LANG": "C.UTF-8",
            "RALPH_APP_DIR": str(instance),
            "RALPH_AUTH_FILE": str(self.auth_file),
            "RALPH_HISTORY_FILE": str(instance / "history.json"),
            "RALPH_RUNSERVER_BACKEND": "fs",
            "RALPH_RUNSERVER_AUTH_BACKENDS": "basic",
            "RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH": str(self.data_dir),
            "RALPH_RUNSERVER_MAX_SEARCH_HITS_COUNT": str(self.max_page_size),
        }

    def wait_ready(self) -> None:
        """Block until ready; on failure stop the server and raise with the log tail."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            status = basic_auth_status(f"{self.base_url}/whoami", self.username, self.password)
            if status == 200:
                return
            if status != 0:
                raise RuntimeError(f"Ralph answered /whoami with HTTP {status} to its own credentials")
            time.sleep(0.1)
        raise RuntimeError(
            f"Ralph did not become ready on {self.base_url} within {STARTUP_TIMEOUT_S:.0f} s "
            f"(exit code {self._proc.poll()}). Log tail:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, wait (SIGKILL after 10 s), delete the instance dir unless kept."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        stop_process_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if not self.keep_files and self.instance_dir is not None:
            shutil.rmtree(self.instance_dir, ignore_errors=True)

    def __enter__(self) -> LocalRalph:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
