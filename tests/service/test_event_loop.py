"""Requests that wait on the database never hold up the event loop: with every authenticated request stuck behind a
table lock, /healthz still answers, about as fast as when the server is idle (a ratio, not a wall-clock limit)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
from sqlalchemy import create_engine, text

from core.db import fresh_database
from core.settings import Settings
from tests.service.conftest import LiveServer, register, wait_for

STUCK = 8  # requests held open at once (the thread pool has 40 threads)


def _health_s(client: httpx.Client) -> float:
    started = time.perf_counter()
    assert client.get("/api/v1/healthz").status_code == 200
    return time.perf_counter() - started


def _waiting_on_locks(engine) -> int:  # noqa: ANN001
    with engine.connect() as connection:  # a new transaction each time: pg_stat_activity is a per-transaction snapshot
        return connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND datname = current_database()")).scalar()


def test_health_answers_while_requests_wait_on_a_locked_table(tmp_path, service_urls):
    url = fresh_database(service_urls["postgres"])
    settings = Settings(var_dir=tmp_path / "var", database_url=url, reconcile_in_api=False)
    locker = create_engine(url)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        me = register(client, "loop@example.com")
        idle = statistics.median(_health_s(client) for _ in range(9))
        finished: list[int] = []
        with locker.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE"))

            def stuck() -> None:
                with httpx.Client(base_url=server.url, timeout=120) as own:
                    finished.append(own.get("/api/v1/jobs", headers=me).status_code)

            threads = [threading.Thread(target=stuck, daemon=True) for _ in range(STUCK)]
            for thread in threads:
                thread.start()
            wait_for(lambda: _waiting_on_locks(locker) >= STUCK, 60, "the requests to wait on the lock")
            busy = statistics.median(_health_s(client) for _ in range(9))
            assert not finished  # still held while /healthz answered
            transaction.rollback()
        for thread in threads:
            thread.join(timeout=60)
        assert finished == [200] * STUCK
    locker.dispose()
    assert busy / idle < 50, (busy, idle)
