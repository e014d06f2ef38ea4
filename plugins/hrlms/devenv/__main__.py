"""CLI: ``python -m hrlms.devenv run [--airflow-db] [--lrs] -- CMD...`` and ``python -m hrlms.devenv airflow-ui``.

Why a wrapper process: `make demo` / `make test` need Postgres, a SCIM server and Airflow settings,
and those services must be stopped whatever happens to CMD (failure, Ctrl-C, SIGTERM from CI).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from types import FrameType

from hrlms.devenv.airflow import CeleryWorker, LocalAirflow, celery_airflow
from hrlms.devenv.stack import LocalStack


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


def cmd_airflow_ui(port: int, all_admins: bool, celery_workers: int = 0) -> int:
    """api-server (127.0.0.1) + scheduler + dag-processor + triggerer (hrlms.devenv.airflow); never
    `airflow standalone`, which starts log servers on 0.0.0.0.  Needs ~830 MB and ~12 s to become healthy.
    ``celery_workers`` > 0: the CeleryExecutor with that many workers (each on the default, warehouse and lms
    queues), a Redis broker and the metadata DB on the local Postgres."""
    if not _port_is_free(port):
        print(f"port 127.0.0.1:{port} is in use; pass --port", file=sys.stderr)
        return 2

    def stop_handler(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_handler)
    af: LocalAirflow | None = None
    try:
        with LocalStack(lrs=True) as stack, ExitStack() as services:
            if celery_workers:
                workers = [CeleryWorker(f"w{i}", concurrency=2) for i in range(1, celery_workers + 1)]
                started = time.monotonic()
                try:
                    af = services.enter_context(celery_airflow(stack.airflow_home, workers, port=port,
                                                               all_admins=all_admins, triggerer=True))
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 1
                took = time.monotonic() - started
            else:
                stack.ensure_airflow_db()
                af = LocalAirflow(dict(os.environ), port=port, all_admins=all_admins)
                try:
                    took = af.start()
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 1
            executor = (f"CeleryExecutor, {celery_workers} worker(s) on queues default, warehouse, lms"
                        if celery_workers else "LocalExecutor")
            print(f"Airflow UI: {af.base_url}  ({executor}; healthy after {took:.0f} s; logs in {af.log_dir})")
            if not all_admins:
                pw = af.admin_password()
                print(f"login: admin / {pw}" if pw else "login: admin, password in "
                      f"{stack.airflow_home / 'simple_auth_manager_passwords.json.generated'}")
            print(f"warehouse: {stack.warehouse_url.rsplit('@', 1)[-1] if stack.warehouse_url else '?'}, "
                  f"LMS: {stack.lms_url}.  HR events: docs/events.md.  Ctrl-C to stop.", flush=True)
            while True:
                dead = af.dead()
                if dead:
                    print(f"{', '.join(dead)} exited; stopping (logs in {af.log_dir})", file=sys.stderr)
                    return 1
                time.sleep(1)
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        if af is not None:
            af.stop()


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
    ui.add_argument("--celery-workers", type=int, default=0, metavar="N",
                    help="CeleryExecutor with N workers (Redis broker, metadata DB on Postgres); 0 = LocalExecutor")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return cmd_run(cmd, args.airflow_db, args.lrs)
        return cmd_airflow_ui(args.port, args.all_admins, args.celery_workers)
    except KeyboardInterrupt:  # Ctrl-C while services were starting; they are stopped already
        return 130


# The package check keeps Airflow's plugin loader (which execs files as "__main__") from running us.
if __name__ == "__main__" and __package__ == "hrlms.devenv":
    sys.exit(main())
