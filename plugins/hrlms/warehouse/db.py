"""Connections to the warehouse.

The URL comes from `WAREHOUSE_URL` or, inside Airflow, the `hrlms_warehouse` connection; it is never
logged (`redact` strips the password for messages).
"""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import psycopg

WAREHOUSE_CONN_ID = "hrlms_warehouse"


def warehouse_url() -> str:
    url = os.environ.get("WAREHOUSE_URL")
    if url:
        return url
    try:
        from airflow.sdk import Connection

        conn = Connection.get(WAREHOUSE_CONN_ID)
    except Exception as exc:  # no Airflow, or no such connection
        raise RuntimeError(
            f"No warehouse configured: set WAREHOUSE_URL or the Airflow connection '{WAREHOUSE_CONN_ID}'"
        ) from exc
    return conn.get_uri().replace("postgres://", "postgresql://", 1)


def sqlalchemy_url(url: str | None = None) -> str:
    """The same URL for SQLAlchemy users (GX): psycopg 3 driver."""
    url = url or warehouse_url()
    scheme, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    """Autocommit connection: every write happens inside an explicit `conn.transaction()` block."""
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(url or warehouse_url(), **kwargs)


def bootstrap(conn: psycopg.Connection) -> None:
    """Create the schemas/tables the Python tasks own (idempotent)."""
    # schema.sql (HR side, sync, dq, audit) first, then schema_*.sql (e.g. schema_lms.sql) in name order.
    pkg = resources.files("hrlms.warehouse")
    extra = sorted(p.name for p in pkg.iterdir() if p.name.startswith("schema_") and p.name.endswith(".sql"))
    sql = "\n".join(pkg.joinpath(name).read_text() for name in ["schema.sql", *extra])
    digest = hashlib.sha256(sql.encode()).hexdigest()
    # Already at this schema: no DDL at all. Every stage calls bootstrap, and an ALTER TABLE takes an
    # ACCESS EXCLUSIVE lock even when it changes nothing — parallel apply shards claiming ops in
    # sync.ops would deadlock with a shard that is bootstrapping.
    if conn.execute("select to_regclass('hrlms_util.schema_state') is not null").fetchone()[0] and \
            conn.execute("select exists (select 1 from hrlms_util.schema_state where digest = %s)",
                         (digest,)).fetchone()[0]:
        return
    with conn.transaction():
        # Serialise concurrent bootstraps (two tasks starting at once).
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.bootstrap'))")
        conn.execute(sql)
        conn.execute("create table if not exists hrlms_util.schema_state (digest text primary key, "
                      "applied_at timestamptz not null default now())")
        conn.execute("insert into hrlms_util.schema_state (digest) values (%s) on conflict do nothing", (digest,))
