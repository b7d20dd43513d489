"""The one storage layer: engines for SQLite (default) and PostgreSQL, and Alembic upgrades.

Used by the offline inventory and by the platform store alike.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from fleetpki.errors import FleetPKIError

SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def create_engine(url: str, *, sqlite_cache_kib: int | None = None, **kwargs: Any) -> sa.Engine:
    """An engine; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE for writers.

    ``sqlite_cache_kib`` raises SQLite's page cache (2 MiB by default) for each connection.

    BEGIN IMMEDIATE takes the write lock at the start of a write transaction, so concurrent
    processes queue instead of failing with "database is locked" half-way through. Reads go
    through ``reader(engine)``, whose transactions are DEFERRED and never take that lock.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)
    engine = sa.create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}, **kwargs
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if sqlite_cache_kib is not None:
            cursor.execute(f"PRAGMA cache_size=-{int(sqlite_cache_kib)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def reader(engine: sa.Engine) -> sa.Engine:
    """The same engine and pool for read-only work: on SQLite, a WAL reader that takes no lock.

    Use ``engine.begin()`` for anything that writes, ``reader(engine).connect()`` for reads.
    """
    return engine.execution_options(sqlite_begin="DEFERRED")


def upgrade(engine: sa.Engine, script_location: Path, head: str) -> None:
    """Bring the schema to ``head`` with Alembic, skipping Alembic when already there.

    The check is one SELECT, so opening an up-to-date store costs next to nothing.
    """
    try:
        with reader(engine).connect() as connection:
            current = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        if current == head:
            return
    except sa.exc.OperationalError:
        pass
    except sa.exc.ProgrammingError:
        pass
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except sa.exc.SQLAlchemyError as exc:
        raise FleetPKIError(f"cannot prepare the database: {short_db_error(exc)}") from None


def short_db_error(exc: BaseException) -> str:
    """One line from a database error, without SQL text or parameters."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
