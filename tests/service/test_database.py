"""Schema from migrations only, on SQLite and PostgreSQL; job transitions as conditional updates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from core import jobs
from core.db import engine_for, migrate, session_factory
from core.models import Base, Dataset, Job, JobStatus, User, utcnow


def make_job(session, status: JobStatus = JobStatus.queued, **values) -> Job:
    user = User(email=f"u{utcnow().timestamp()}@x.io", password_hash="h")
    session.add(user)
    session.flush()
    dataset = Dataset(owner_id=user.id, name="d")
    session.add(dataset)
    session.flush()
    job = Job(owner_id=user.id, dataset_id=dataset.id, name="j", base_model="tiny", status=status,
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


def test_heartbeat_reports_cancel_and_stale_jobs_are_found(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session)
        jobs.claim(session, job.id, "w")
        assert jobs.heartbeat(session, job.id, step=3) is False
        job.cancel_requested = True
        session.commit()
        assert jobs.heartbeat(session, job.id) is True
        assert jobs.stale_running(session, 60) == []
        assert jobs.stale_running(session, 60, now=utcnow() + timedelta(minutes=5)) == [job.id]


def test_queue_position_counts_older_queued_jobs(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        first = make_job(session)
        second = make_job(session)
        assert jobs.queue_position(session, first) == 1
        assert jobs.queue_position(session, second) == 2
        jobs.claim(session, first.id, "w")
        session.refresh(second)
        assert jobs.queue_position(session, second) == 1
