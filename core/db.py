"""Engine, sessions and migrations for the one database api and worker share."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, its folder created; None for other databases."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        sqlite_file(url)
        # Kept connections save the open + pragmas on every request. No hard limit (overflow -1): a request holds its
        # connection until its cleanup gets a worker thread, so a bounded pool smaller than the number of requests in
        # flight can deadlock under load.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=16,
                               max_overflow=-1)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record) -> None:  # noqa: ANN001 - DB-API connection
            cursor = conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        with engine.connect() as conn:  # WAL is stored in the file: set once, not on every connection
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        _fresh_pool_after_fork(engine)
        return engine
    engine = create_engine(url, pool_size=20, max_overflow=100)
    _ping_when_idle(engine)
    _fresh_pool_after_fork(engine)
    return engine


def _fresh_pool_after_fork(engine: Engine) -> None:
    """A forked process (a Celery pool child) must not share its parent's pooled connections, which the parent's
    threads (heartbeats, the worker's presence) keep using: the child starts with an empty pool of its own."""
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))


IDLE_PING_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Makes sure a pooled connection still works before handing it out, but only when it has sat idle for
    IDLE_PING_S: pinging on every checkout (pool_pre_ping) cost a fifth of a short request on PostgreSQL, and a busy
    API reuses its connections within milliseconds. One the server dropped (a restart) is replaced, not reported."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record) -> None:  # noqa: ANN001 - DB-API connection, pool record
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:  # noqa: ANN001
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc  # the pool retries with a new one


def read_rows(session: Session, statement: Executable, params: dict[str, Any] | None = None) -> CursorResult[Any]:
    """Runs a read of plain columns on the session's own connection (same transaction), skipping the ORM's work per
    statement: about 30 µs, more than a small indexed query costs (docs/benchmarks.md)."""
    return session.connection().execute(statement, params)


@lru_cache(maxsize=8)
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def fresh_database(admin_url: str) -> str:
    """A new, empty PostgreSQL database on the server of `admin_url`, for a test or a benchmark run; its URL."""
    name = f"lb_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@lru_cache(maxsize=8)
def read_session_factory(url: str) -> sessionmaker[Session]:
    """Sessions for requests that only read, on the same pool in autocommit mode. On PostgreSQL a one-query request
    otherwise makes three round trips (BEGIN, the query, ROLLBACK); each statement has its own snapshot under READ
    COMMITTED anyway, so nothing a reader sees changes. SQLite begins no transaction for a read, and switching its
    isolation level costs PRAGMAs at every checkout, so it keeps the plain sessions."""
    if not url.startswith("postgresql"):
        return session_factory(url)
    return sessionmaker(engine_for(url).execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


MIGRATION_LOCK_ID = 0x6C6F7261  # PostgreSQL advisory-lock key: "lora"


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """One migrating process at a time: several API processes start together on a fresh database."""
    database = sqlite_file(url)
    if database is not None:
        with database.with_name(database.name + ".migrate-lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
    elif url.startswith("postgresql"):
        with engine_for(url).connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_ID})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_ID})
                conn.commit()
    else:
        yield


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (the only way tables are created)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    with _migration_lock(url):
        command.upgrade(config, "head")
