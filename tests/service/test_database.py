"""Schema from migrations only, on SQLite and PostgreSQL; job transitions as conditional updates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

import core.db
from core import jobs
from core.db import engine_for, fresh_database, migrate, read_session_factory, session_factory
from core.models import Base, Dataset, Job, JobStatus, User, utcnow


def make_job(session, status: JobStatus = JobStatus.queued, owner: User | None = None, **values) -> Job:
    if owner is None:
        owner = User(email=f"u{utcnow().timestamp()}@x.io", password_hash="h")
        session.add(owner)
        session.flush()
    dataset = Dataset(owner_id=owner.id, name="d")
    session.add(dataset)
    session.flush()
    job = Job(owner_id=owner.id, dataset_id=dataset.id, name="j", base_model="tiny", status=status,
              queued_at=utcnow(), **values)
    session.add(job)
    session.commit()
    return job


def test_migrations_create_exactly_the_models_schema(db_url):
    migrate(db_url)
    migrate(db_url)  # a second run is a no-op
    with engine_for(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert {"users", "api_tokens", "datasets", "images", "jobs", "epochs", "published_models",
            "generations"} <= tables


def test_only_one_worker_can_claim_a_job(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session)
        assert jobs.claim(session, job.id, "w1")
        assert not jobs.claim(session, job.id, "w2")
        session.refresh(job)
        assert (job.status, job.attempt, job.worker) == (JobStatus.running, 1, "w1")


def test_transitions_outside_the_state_machine_are_refused(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session, JobStatus.succeeded)
        with pytest.raises(ValueError, match="not allowed"):
            jobs.transition(session, job.id, JobStatus.succeeded, JobStatus.running)
        assert not jobs.transition(session, job.id, JobStatus.queued, JobStatus.canceled)


def test_heartbeat_reports_cancel_and_lost_jobs_go_back_to_their_place_in_the_queue(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session)
        later = make_job(session)
        jobs.claim(session, job.id, "w")
        assert jobs.beat(session, job.id, 1, step=3) == jobs.Beat(mine=True, cancel_requested=False)
        assert jobs.cancel(session, job.id) == "requested"
        assert jobs.beat(session, job.id, 1) == jobs.Beat(mine=True, cancel_requested=True)
        assert jobs.requeue_lost(session, 60, 3) == jobs.LostJobs([], [])
        assert jobs.requeue_lost(session, 60, 3, now=utcnow() + timedelta(minutes=5)) == jobs.LostJobs([job.id], [])
        session.refresh(job)
        assert (job.status, job.attempt, job.worker) == (JobStatus.queued, 1, None)
        assert jobs.fair_order(session) == [job.id, later.id]  # not sent to the back


def test_a_job_lost_max_attempts_times_fails_with_the_reason(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session, attempt=2)
        jobs.claim(session, job.id, "w")
        lost = jobs.requeue_lost(session, 60, 3, now=utcnow() + timedelta(minutes=5))
        assert lost == jobs.LostJobs([], [job.id])
        session.refresh(job)
        assert job.status == JobStatus.failed and job.error == "the worker was lost 3 times; giving up"
        assert job.finished_at is not None


def test_a_superseded_attempt_cannot_beat_fence_or_finish(db_url):
    """A worker frozen past the timeout (attempt 1) comes back while attempt 2 runs: none of its writes land."""
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session)
        jobs.claim(session, job.id, "frozen")
        jobs.requeue_lost(session, 60, 3, now=utcnow() + timedelta(minutes=5))
        assert jobs.claim(session, job.id, "second")
        session.commit()  # the caller owns the transaction
        assert jobs.beat(session, job.id, 1, step=99) == jobs.Beat(mine=False)
        assert not jobs.fence(session, job.id, 1)
        session.rollback()
        assert not jobs.finish(session, job.id, 1, JobStatus.succeeded)
        assert jobs.fence(session, job.id, 2)
        session.commit()
        assert jobs.finish(session, job.id, 2, JobStatus.succeeded, step=4)
        session.refresh(job)
        assert (job.status, job.attempt, job.worker, job.step) == (JobStatus.succeeded, 2, "second", 4)


def test_cancel_stops_waiting_jobs_at_once_asks_running_ones_and_leaves_finished_ones(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        waiting, running, done = make_job(session), make_job(session), make_job(session, JobStatus.succeeded)
        jobs.claim(session, running.id, "w")
        assert [jobs.cancel(session, j.id) for j in (waiting, running, done)] == ["canceled", "requested", "finished"]
        for job in (waiting, running, done):
            session.refresh(job)
        assert (waiting.status, running.status, running.cancel_requested, done.status) == (
            JobStatus.canceled, JobStatus.running, True, JobStatus.succeeded)


def test_queue_position_counts_older_queued_jobs(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        first = make_job(session)
        second = make_job(session)
        assert jobs.queue_slot(session, first).position == 1
        assert jobs.queue_slot(session, second).position == 2
        assert jobs.claim_next(session, "w") == first.id
        session.refresh(first)
        assert jobs.queue_slot(session, first) is None
        assert jobs.queue_slot(session, second).position == 1


def test_the_queue_takes_owners_in_turn_counting_their_running_jobs(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        busy = make_job(session)
        owner = session.get(User, busy.owner_id)
        a1, a2, a3 = (make_job(session, owner=owner) for _ in range(3))
        b1 = make_job(session)
        assert jobs.fair_order(session) == [busy.id, b1.id, a1.id, a2.id, a3.id]
        assert jobs.claim_next(session, "w") == busy.id
        # busy's owner now has a running job: b1 goes first, then the owner's queued jobs oldest first
        assert jobs.fair_order(session) == [b1.id, a1.id, a2.id, a3.id]
        assert [jobs.claim_next(session, "w") for _ in range(5)] == [b1.id, a1.id, a2.id, a3.id, None]


def test_a_two_gpu_job_counts_as_two_turns_in_the_fair_order_and_against_the_limit(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        wide = make_job(session, gpus=2)
        owner = session.get(User, wide.owner_id)
        small = make_job(session, owner=owner)
        other_1 = make_job(session)
        other_2 = make_job(session, owner=session.get(User, other_1.owner_id))
        assert jobs.claim_next(session, "w", max_running_per_owner=2) == wide.id
        # the owner uses 2 GPUs: both of the other owner's jobs come before the owner's next one
        assert jobs.fair_order(session) == [other_1.id, other_2.id, small.id]
        assert jobs.owner_load(session, owner.id).running == 2
        assert [jobs.claim_next(session, "w", max_running_per_owner=2) for _ in range(3)] == [
            other_1.id, other_2.id, None]  # small waits: its owner is at 2 GPUs of 2


def test_queued_jobs_get_an_eta_from_the_jobs_ahead_of_them(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        running = make_job(session, estimated_s=400.0)
        jobs.claim_next(session, "w")
        jobs.beat(session, running.id, 1, step=3, total_steps=4, eta_s=100.0)
        first = make_job(session, estimated_s=50.0)
        second = make_job(session, estimated_s=30.0)
        slots = jobs.queue_slots(session)
        assert slots[first.id] == jobs.QueueSlot(1, 100.0, 150.0)
        assert slots[second.id] == jobs.QueueSlot(2, 150.0, 180.0)
        unknown = make_job(session)  # no estimate: its own end and everything behind it is unknown
        behind = make_job(session, estimated_s=10.0)
        slots = jobs.queue_slots(session)
        assert slots[unknown.id] == jobs.QueueSlot(3, 180.0, None)
        assert slots[behind.id] == jobs.QueueSlot(4, None, None)


def _migrate_after(barrier, url: str, failures) -> None:  # noqa: ANN001 - multiprocessing objects
    barrier.wait()
    try:
        migrate(url)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        failures.put(repr(exc))


def test_processes_starting_together_migrate_one_at_a_time(db_url):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_migrate_after, args=(barrier, db_url, failures)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert failures.empty(), failures.get()  # without the lock: "table users already exists"
    with engine_for(db_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_connection_the_server_dropped_is_replaced_after_idling_not_reported(service_urls, monkeypatch):
    url = fresh_database(service_urls["postgres"])
    admin = create_engine(service_urls["postgres"], isolation_level="AUTOCOMMIT")

    def drop_pooled_connection() -> None:
        with engine_for(url).connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

    drop_pooled_connection()
    monkeypatch.setattr(core.db, "IDLE_PING_S", 3600.0)  # used again at once: handed out without a check
    with pytest.raises(OperationalError), engine_for(url).connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    drop_pooled_connection()
    monkeypatch.setattr(core.db, "IDLE_PING_S", 0.0)  # idle long enough: checked, and replaced
    with read_session_factory(url)() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    admin.dispose()


def test_an_older_sqlite_install_keeps_its_rows_when_migrations_rebuild_its_tables(tmp_path):
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    config = Config()
    config.set_main_option("script_location", str(core.db.MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, "0010")  # before the migrations that rebuild users and jobs (their CHECKs)
    with engine_for(url).begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, password_hash, created_at) "
                          "VALUES ('u1', 'a@b.c', 'h', '2026-01-01')"))
        conn.execute(text("INSERT INTO api_tokens (id, user_id, token_hash, kind, name, created_at) "
                          "VALUES ('t1', 'u1', 'x', 'session', '', '2026-01-01')"))
        conn.execute(text("INSERT INTO datasets (id, owner_id, name, description, default_repeats, created_at) "
                          "VALUES ('d1', 'u1', 'd', '', 10, '2026-01-01')"))
    migrate(url)
    with engine_for(url).connect() as conn:
        assert [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("users", "api_tokens",
                                                                                    "datasets")] == [1, 1, 1]
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1  # and the pool's connections enforce them
