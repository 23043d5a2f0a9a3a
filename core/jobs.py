"""The job state machine. Every transition is one conditional UPDATE: zero rows means someone else moved it first."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.models import Job, JobStatus, utcnow

ALLOWED: dict[JobStatus, set[JobStatus]] = {
    JobStatus.draft: {JobStatus.queued, JobStatus.scheduled, JobStatus.canceled},
    JobStatus.scheduled: {JobStatus.queued, JobStatus.canceled},
    JobStatus.queued: {JobStatus.running, JobStatus.canceled},
    JobStatus.running: {JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.interrupted},
    JobStatus.interrupted: {JobStatus.queued, JobStatus.failed, JobStatus.canceled},
    JobStatus.succeeded: set(),
    JobStatus.failed: set(),
    JobStatus.canceled: set(),
}


def transition(session: Session, job_id: str, source: JobStatus | Iterable[JobStatus], target: JobStatus,
               **values: object) -> bool:
    """Move job_id from one of `source` to `target` (and set values) if it is still there; True if it moved."""
    sources = [source] if isinstance(source, JobStatus) else list(source)
    for s in sources:
        if target not in ALLOWED[s]:
            raise ValueError(f"transition {s} → {target} is not allowed")
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_([str(s) for s in sources]))
        .values(status=str(target), **values).execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def claim(session: Session, job_id: str, worker: str) -> bool:
    """queued → running with attempt + 1; False means a duplicate delivery (another worker has it)."""
    now = utcnow()
    return transition(session, job_id, JobStatus.queued, JobStatus.running, attempt=Job.attempt + 1,
                      started_at=now, heartbeat_at=now, worker=worker, error=None)


def heartbeat(session: Session, job_id: str, **progress: object) -> bool:
    """Refreshes the heartbeat while running; returns whether a cancel was requested."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running)
                    .values(heartbeat_at=utcnow(), **progress).execution_options(synchronize_session=False))
    session.commit()
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def stale_running(session: Session, timeout_s: float, now: datetime | None = None) -> list[str]:
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_s)
    rows = session.scalars(select(Job.id).where(Job.status == JobStatus.running, Job.heartbeat_at < cutoff))
    return list(rows)


def queue_positions(session: Session) -> dict[str, int]:
    """Every queued job's 1-based place, in one query (for lists)."""
    rows = session.scalars(select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.queued_at, Job.id))
    return {job_id: place for place, job_id in enumerate(rows, start=1)}


def queue_position(session: Session, job: Job) -> int | None:
    """1-based place among queued jobs (oldest first); None when the job is not waiting."""
    if job.status != JobStatus.queued or job.queued_at is None:
        return None
    ahead = session.scalar(select(func.count()).select_from(Job).where(
        Job.status == JobStatus.queued, Job.queued_at < job.queued_at))
    return int(ahead or 0) + 1
