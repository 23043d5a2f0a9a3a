"""The job state machine. Every transition is one conditional UPDATE: zero rows means someone else moved it first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from core.db import read_rows
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


@dataclass(frozen=True)
class QueueSlot:
    """Where a queued job stands: its 1-based place and the estimated seconds until it starts and until it ends."""

    position: int
    starts_in_s: float | None
    ends_in_s: float | None


# Only the columns the queue needs: whole rows would drag each job's params, log and chart history along. One
# statement for both kinds: the queue is read on every job list, and a statement costs more than its few rows.
_ACTIVE = (select(Job.id, Job.owner_id, Job.status, Job.step, Job.total_steps, Job.eta_s, Job.estimated_s)
           .where(Job.status.in_([JobStatus.running, JobStatus.queued])).order_by(Job.queued_at, Job.id))


def _running_and_queued(session: Session) -> tuple[list[Row], list[Row]]:
    """Running jobs, and queued ones oldest first."""
    running: list[Row] = []
    queued: list[Row] = []
    for row in read_rows(session, _ACTIVE):
        (running if row.status == JobStatus.running else queued).append(row)
    return running, queued


def _fair(running: Sequence[Row], queued: Sequence[Row]) -> list[str]:
    """Round robin over owners, oldest first within an owner; an owner's running jobs count as turns taken."""
    turns = Counter(row.owner_id for row in running)
    keyed: list[tuple[int, int, str]] = []
    for arrival, row in enumerate(queued):
        keyed.append((turns[row.owner_id], arrival, row.id))
        turns[row.owner_id] += 1
    return [job_id for *_, job_id in sorted(keyed)]


def fair_order(session: Session) -> list[str]:
    """Queued job ids in the order workers take them, so one user's ten jobs cannot hold every GPU while another
    user's single job waits behind them."""
    return _fair(*_running_and_queued(session))


def claim_next(session: Session, worker: str) -> str | None:
    """Claims the fairest queued job; None when nothing is queued (every job already has its worker)."""
    for job_id in fair_order(session):
        if claim(session, job_id, worker):
            return job_id
    return None


def _remaining_s(job: Row) -> float | None:
    if job.eta_s is not None:
        return job.eta_s
    if job.estimated_s is None:
        return None
    done = job.step / job.total_steps if job.total_steps else 0.0
    return job.estimated_s * (1.0 - done)


def queue_slots(session: Session) -> dict[str, QueueSlot]:
    """Every queued job's place and ETA, simulating the queue on as many workers as are busy now (at least one).

    A job whose duration is unknown makes the times of the jobs behind it unknown too; places stay exact.
    """
    running, queued = _running_and_queued(session)
    estimates = {row.id: row.estimated_s for row in queued}
    free_at: list[float | None] = [_remaining_s(row) for row in running] or [0.0]
    slots: dict[str, QueueSlot] = {}
    for position, job_id in enumerate(_fair(running, queued), start=1):
        known = [t for t in free_at if t is not None]
        start = min(known) if len(known) == len(free_at) else None
        duration = estimates[job_id]
        end = start + duration if start is not None and duration is not None else None
        slots[job_id] = QueueSlot(position, start, end)
        free_at[free_at.index(start) if start is not None else 0] = end
    return slots


def queue_slot(session: Session, job: Job | Row) -> QueueSlot | None:
    """The job's place in the queue; None when it is not waiting."""
    if job.status != JobStatus.queued:
        return None
    return queue_slots(session).get(job.id)
