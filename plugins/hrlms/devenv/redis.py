"""A local Redis on 127.0.0.1: the Celery broker of the local CeleryExecutor stack (tests, `make airflow-ui
CELERY=1`, the Celery benchmark).

Why Redis: it is the broker of Airflow's official docker-compose CeleryExecutor setup, and Debian's
``redis-server`` package runs here without Docker (``make test`` / ``make airflow-ui`` install it when missing,
as root, like docker-compose). Throwaway: no persistence (``--save ''``, no AOF), a random password
(``--requirepass``; Celery's broker URL carries it), protected mode, bound to 127.0.0.1 on a free port.
The password is visible in the local process list, acceptable for a throwaway loopback server.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from hrlms.devenv import LOCAL_DIR, free_port, stop_process_group, tail

STARTUP_TIMEOUT_S = 20.0


def redis_server_binary() -> str:
    """The ``redis-server`` executable, or a RuntimeError saying how to get it."""
    exe = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if exe is None:
        raise RuntimeError("redis-server not found: install Debian's package (apt-get install -y --no-install-recommends "
                           "redis-server; `make test` and `make airflow-ui CELERY=1` do it when run as root)")
    return exe


def redis_available() -> bool:
    """Whether ``redis-server`` is installed (the CeleryExecutor tests are skipped without it)."""
    try:
        redis_server_binary()
    except RuntimeError:
        return False
    return True


class LocalRedis:
    """``with LocalRedis() as redis:`` — ``redis.url`` is the broker URL (``redis://:<password>@127.0.0.1:<port>/0``)."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = Path(base_dir) if base_dir else LOCAL_DIR
        self.password = secrets.token_urlsafe(24)
        self.port: int | None = None
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalRedis is not started")
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        exe = redis_server_binary()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix="redis-", dir=self.base_dir))
        self.port = free_port()
        self.log_path = self.data_dir / "redis.log"
        config = self.data_dir / "redis.conf"   # the password in a 0600 file, not on the command line
        config.touch(mode=0o600)
        config.write_text(f"requirepass {self.password}\n")
        self._proc = subprocess.Popen(
            [exe, str(config), "--bind", "127.0.0.1", "--port", str(self.port), "--protected-mode", "yes",
             "--save", "", "--appendonly", "no", "--dir", str(self.data_dir), "--logfile", str(self.log_path),
             "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = tail(self.log_path)
                self.stop()
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}. Log tail:\n{log}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        """True when the server answers an authenticated PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port or 0), timeout=1) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and len(reply) < 200:
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    reply += chunk
                return b"+OK" in reply and b"+PONG" in reply
        except OSError:
            return False

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        stop_process_group(proc)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["LocalRedis", "redis_available", "redis_server_binary"]
