"""CLI: ``python -m hrlms.devenv run [--airflow-db] [--lrs] -- CMD...`` and ``python -m hrlms.devenv airflow-ui``.

Why a wrapper process: `make demo` / `make test` need Postgres, a SCIM server and Airflow settings,
and those services must be stopped whatever happens to CMD (failure, Ctrl-C, SIGTERM from CI).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

from hrlms.devenv.scim import http_status
from hrlms.devenv.stack import LocalStack

HEALTH_TIMEOUT_S = 120.0


def _exit_code(returncode: int) -> int:
    """Shell convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    """Before CMD runs, SIGTERM/SIGHUP unwind the `with` blocks so the services are stopped."""
    raise SystemExit(128 + signum)


def cmd_run(command: list[str], airflow_db: bool, lrs: bool = False) -> int:
    """Run ``command`` inside the stack and return its exit code.

    Ctrl-C at a terminal reaches CMD directly (same process group), so the first SIGINT is not
    forwarded (pytest would see two); a second SIGINT sends SIGTERM.  SIGTERM/SIGHUP are forwarded.
    """
    if not command:
        print("usage: python -m hrlms.devenv run [--airflow-db] [--lrs] -- CMD [ARGS...]", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    with LocalStack(lrs=lrs) as stack:
        if airflow_db:
            stack.ensure_airflow_db()
        try:
            proc = subprocess.Popen(command)
        except OSError as err:
            print(f"cannot run {command[0]!r}: {err}", file=sys.stderr)
            return 127
        interrupts = 0

        def forward(signum: int, _frame: FrameType | None) -> None:
            nonlocal interrupts
            if proc.poll() is not None:
                return
            if signum == signal.SIGINT:
                interrupts += 1
                if interrupts >= 2:
                    proc.terminate()
            else:
                proc.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        returncode = proc.wait()
    return _exit_code(returncode)


class _Stop(Exception):
    """Raised by the signal handler to leave the airflow-ui wait loop."""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_airflow_ui(port: int, all_admins: bool) -> int:
    """api-server (127.0.0.1) + scheduler + dag-processor + triggerer; never `airflow standalone`,
    which starts log servers on 0.0.0.0.  Needs ~830 MB and ~12 s to become healthy."""
    if not _port_is_free(port):
        print(f"port 127.0.0.1:{port} is in use; pass --port", file=sys.stderr)
        return 2

    def stop_handler(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_handler)
    airflow = str(Path(sys.executable).parent / "airflow")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[IO[bytes]] = []
    try:
        with LocalStack(lrs=True) as stack:
            stack.ensure_airflow_db()
            base = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": base,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
            }
            if all_admins:
                env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
            else:
                env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin"
            commands = {
                "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
                "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
                "dag-processor": [airflow, "dag-processor"],
                "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
            }
            log_dir = stack.airflow_home / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            for name, argv in commands.items():
                log = open(log_dir / f"devenv-{name}.log", "wb")  # noqa: SIM115 - closed below
                logs.append(log)
                procs[name] = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            started = time.monotonic()
            while http_status(f"{base}/api/v2/monitor/health") != 200:
                dead = [n for n, p in procs.items() if p.poll() is not None]
                if dead or time.monotonic() - started > HEALTH_TIMEOUT_S:
                    print(f"Airflow did not become healthy ({dead or 'timeout'}); logs in {log_dir}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            print(f"Airflow UI: {base}  (healthy after {time.monotonic() - started:.0f} s; logs in {log_dir})")
            if not all_admins:
                pw_file = stack.airflow_home / "simple_auth_manager_passwords.json.generated"
                try:
                    pw_file.chmod(0o600)  # Airflow writes it world-readable
                    print(f"login: admin / {json.loads(pw_file.read_text())['admin']}  (from {pw_file})")
                except (OSError, ValueError, KeyError):
                    print(f"login: admin, password in {pw_file}")
            print(f"warehouse: {stack.warehouse_url.rsplit('@', 1)[-1] if stack.warehouse_url else '?'}, "
                  f"LMS: {stack.lms_url}.  Ctrl-C to stop.", flush=True)  # fmt: skip
            while True:
                dead = [n for n, p in procs.items() if p.poll() is not None]
                if dead:
                    print(f"{', '.join(dead)} exited; stopping (logs in {log_dir})", file=sys.stderr)
                    return 1
                time.sleep(1)
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        _stop_all(procs)
        for log in logs:
            log.close()


def _stop_all(procs: dict[str, subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process group, then SIGKILL what is left after ``timeout``."""
    for proc in procs.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hrlms.devenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run CMD with local Postgres + SCIM server + Airflow settings")
    run.add_argument("--airflow-db", action="store_true", help="migrate the local Airflow metadata DB first")
    run.add_argument("--lrs", action="store_true", help="also start a Ralph LRS (xAPI) on 127.0.0.1")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    ui = sub.add_parser("airflow-ui", help="local Airflow UI on 127.0.0.1 (Ctrl-C to stop)")
    ui.add_argument("--port", type=int, default=8080)
    ui.add_argument("--all-admins", action="store_true", help="no login: everyone is admin")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return cmd_run(cmd, args.airflow_db, args.lrs)
        return cmd_airflow_ui(args.port, args.all_admins)
    except KeyboardInterrupt:  # Ctrl-C while services were starting; they are stopped already
        return 130


# The package check keeps Airflow's plugin loader (which execs files as "__main__") from running us.
if __name__ == "__main__" and __package__ == "hrlms.devenv":
    sys.exit(main())
