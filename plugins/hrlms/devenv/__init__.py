"""Local throwaway services (Postgres, SCIM server, Airflow) for `make demo` and `make test`.

Everything binds to 127.0.0.1 only and lives under ``<repo>/.local`` so that a developer machine
or CI runner needs no Docker and no system services.  Entry points: :class:`hrlms.devenv.stack.LocalStack`
and ``python -m hrlms.devenv``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

#: Repository root: plugins/hrlms/devenv/__init__.py -> parents[3].
REPO_ROOT: Path = Path(__file__).resolve().parents[3]
#: Git-ignored directory for data dirs, logs and the local Airflow home.
LOCAL_DIR: Path = REPO_ROOT / ".local"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host``.

    The OS picks it (bind to port 0); the tiny race until the service binds it is acceptable for
    local tooling, and callers retry on a bind failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file (empty string if missing), for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM a service started with ``start_new_session=True`` (its whole process group), wait,
    SIGKILL after ``timeout`` seconds. A process that already ended is left alone."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
