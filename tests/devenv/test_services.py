"""The local services start, are private to 127.0.0.1, need their credentials, and leave nothing behind."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import psycopg
import pytest

from hrlms.devenv.postgres import LocalPostgres, warehouse_settings
from hrlms.devenv.redis import LocalRedis, redis_available
from hrlms.devenv.scim import LocalScimServer, http_status
from hrlms.devenv.stack import LocalStack


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port``, read from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def command_lines(program: str) -> str:
    """The command lines of the running processes of `program`, joined."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if program.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(found)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_postgres_starts_private_and_cleans_up(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path)
    with pg:
        assert pg.url.startswith("postgresql://hrlms:") and pg.url.endswith("/warehouse")
        assert "@127.0.0.1:" in pg.url
        port, data_dir = pg.port, pg.data_dir
        assert port is not None and data_dir.is_dir()
        with psycopg.connect(pg.url) as conn:
            db, listen, fsync = conn.execute(
                "SELECT current_database(), current_setting('listen_addresses'), current_setting('fsync')"
            ).fetchone()
            assert (db, listen, fsync) == ("warehouse", "127.0.0.1", "off")
            # the warehouse memory profile reached the server (pg_settings reports work_mem in kB)
            expected_work_mem_kb = int(warehouse_settings()["work_mem"].removesuffix("MB")) * 1024
            (work_mem_kb,) = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'work_mem'").fetchone()
            assert work_mem_kb == expected_work_mem_kb
        assert listening_addresses(port) == {"127.0.0.1"}
        wrong = pg.url.replace(pg.password, "not-the-password")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(wrong, connect_timeout=5).close()
    assert not port_open(port)
    assert not data_dir.exists()
    assert pg.instance_dir is None


@pytest.mark.skipif(not redis_available(), reason="redis-server not installed (make test installs it when run as root)")
def test_redis_is_private_needs_its_password_and_cleans_up(tmp_path: Path) -> None:
    with LocalRedis(tmp_path) as redis:
        port, data_dir = redis.port, redis.data_dir
        assert port is not None and data_dir is not None and data_dir.is_dir()
        assert redis.url.startswith("redis://:") and f"@127.0.0.1:{port}/0" in redis.url
        assert listening_addresses(port) == {"127.0.0.1"}
        assert redis.ping()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:     # no password: refused
            sock.sendall(b"PING\r\n")
            assert sock.recv(200).startswith(b"-NOAUTH")
        assert redis.password not in command_lines("redis-server")       # it is in a 0600 file, not argv
    assert not port_open(port)
    assert not data_dir.exists()


def test_scim_server_needs_its_token(tmp_path: Path) -> None:
    scim = LocalScimServer(tmp_path, keep_log=True)
    with scim:
        assert scim.base_url.startswith("http://127.0.0.1:") and not scim.base_url.endswith("/")
        assert scim.port is not None
        assert listening_addresses(scim.port) == {"127.0.0.1"}
        assert http_status(f"{scim.base_url}/ServiceProviderConfig", scim.token) == 200
        assert http_status(f"{scim.base_url}/Users", scim.token) == 200
        assert http_status(f"{scim.base_url}/Users") == 401
        assert http_status(f"{scim.base_url}/Users", "wrong-token") == 401
        port = scim.port
    assert not port_open(port)
    assert scim.log_path is not None
    assert scim.token not in scim.log_path.read_text()


def test_stack_with_preset_warehouse_starts_no_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    preset = "postgresql+psycopg://someone:s3cret@127.0.0.1:6543/elsewhere"
    monkeypatch.setenv("WAREHOUSE_URL", preset)
    monkeypatch.delenv("HRLMS_LMS_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    with LocalStack(base_dir=tmp_path) as stack:
        assert stack.postgres is None
        assert stack.scim is not None  # the LMS was not preset, so it is started
        assert not list(tmp_path.glob("pg-*"))
        assert os.environ["WAREHOUSE_URL"] == preset
        assert os.environ["AIRFLOW_CONN_HRLMS_WAREHOUSE"] == "postgresql://someone:s3cret@127.0.0.1:6543/elsewhere"
        lms = json.loads(os.environ["AIRFLOW_CONN_HRLMS_LMS"])
        assert lms == {"conn_type": "http", "host": stack.scim.base_url, "password": stack.scim.token}
        assert os.environ["HRLMS_LMS_TOKEN"] == stack.scim.token
        assert "AIRFLOW__CORE__UNIT_TEST_MODE" not in os.environ
        assert os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow/airflow.db"
        secrets_file = tmp_path / "airflow" / ".devenv-secrets.json"
        assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] == "True"  # restored
    assert "HRLMS_LMS_URL" not in os.environ


def test_stack_with_preset_services_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://a:b@127.0.0.1:1/w")
    monkeypatch.setenv("HRLMS_LMS_URL", "https://lms.example/scim/v2/")
    monkeypatch.setenv("HRLMS_LMS_TOKEN", "tok")
    with LocalStack(base_dir=tmp_path) as stack:
        assert stack.postgres is None and stack.scim is None
        assert json.loads(os.environ["AIRFLOW_CONN_HRLMS_LMS"])["host"] == "https://lms.example/scim/v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["airflow"]


def test_warehouse_settings_scale_with_memory_and_cap() -> None:
    small = warehouse_settings(512 * 1024 * 1024)
    big = warehouse_settings(24 * 1024**3)
    huge = warehouse_settings(256 * 1024**3)
    assert small["work_mem"] == "5MB" and small["shared_buffers"] == "128MB"  # never below the defaults
    assert big["work_mem"] == "256MB" and big["shared_buffers"] == "2048MB"
    # capped: more memory does not grow per-node work_mem or the buffer pool further
    assert (huge["work_mem"], huge["shared_buffers"]) == (big["work_mem"], big["shared_buffers"])
