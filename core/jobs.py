"""The job lifecycle, owned here: every transition and composite move (claim, beat, fence, finish, cancel,
requeue-or-fail) is one conditional UPDATE: zero rows means someone else moved it first. A worker's writes carry its
attempt number as a fencing token, so an attempt that froze and came back cannot touch a job a newer attempt runs.
Nothing here commits: the caller owns the transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Row, String, and_, case, cast, or_, select, update
from sqlalchemy.orm import Session

from core import credits
from core.db import read_rows
from core.models import Job, JobStatus, User, utcnow
from core.placement import Capacity, Need
from core.settings import Settings

ALLOWED: dict[JobStatus, set[JobStatus]] = {
    JobStatus.draft: {JobStatus.queued, JobStatus.scheduled, JobStatus.canceled},
    JobStatus.scheduled: {JobStatus.queued, JobStatus.canceled},
    JobStatus.queued: {JobStatus.running, JobStatus.canceled},
    # running → queued / failed: a lost worker's job, re-queued (or given up) in one statement by requeue_lost
    JobStatus.running: {JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.interrupted,
                        JobStatus.queued},
    JobStatus.interrupted: {JobStatus.queued, JobStatus.failed, JobStatus.canceled},
    # succeeded / canceled → queued: "continue training" from the stored state, as a new attempt
    JobStatus.succeeded: {JobStatus.queued},
    JobStatus.failed: {JobStatus.queued},  # an admin's re-queue (api/services/admin.py): it resumes
    JobStatus.canceled: {JobStatus.queued},
}
CONTINUABLE = (JobStatus.succeeded, JobStatus.canceled)
WAITING = (JobStatus.draft, JobStatus.scheduled, JobStatus.queued, JobStatus.interrupted)


def _update(session: Session, job_id: str, where: list, values: dict, returning: tuple = ()) -> Row | None:
    statement = update(Job).where(Job.id == job_id, *where).values(**values)
    if returning:
        return session.execute(statement.returning(*returning).execution_options(synchronize_session=False)).first()
    result = session.execute(statement.execution_options(synchronize_session=False))
    return result if result.rowcount == 1 else None


def transition(session: Session, job_id: str, source: JobStatus | Iterable[JobStatus], target: JobStatus, *,
               attempt: int | None = None, **values: object) -> bool:
    """Move job_id from one of `source` to `target` (and set values) if it is still there — and, with `attempt`,
    still in that attempt (the fencing token of a worker's writes). True if it moved. The caller commits."""
    sources = [source] if isinstance(source, JobStatus) else list(source)
    for s in sources:
        if target not in ALLOWED[s]:
            raise ValueError(f"transition {s} → {target} is not allowed")
    where = [Job.status.in_([str(s) for s in sources])]
    if attempt is not None:
        where.append(Job.attempt == attempt)
    return _update(session, job_id, where, {"status": str(target), **values}) is not None


def claim(session: Session, job_id: str, worker: str) -> bool:
    """queued → running with attempt + 1; False means another worker has it."""
    now = utcnow()
    moved = _update(session, job_id, [Job.status == JobStatus.queued], {
        "status": str(JobStatus.running), "attempt": Job.attempt + 1, "started_at": now, "heartbeat_at": now,
        "worker": worker, "error": None})
    return moved is not None


@dataclass(frozen=True)
class Beat:
    mine: bool  # False: this attempt was superseded (or the job ended): stop, write nothing more
    cancel_requested: bool = False


def beat(session: Session, job_id: str, attempt: int, **progress: object) -> Beat:
    """An attempt's heartbeat (and progress), fenced by its attempt number."""
    row = _update(session, job_id, [Job.status == JobStatus.running, Job.attempt == attempt],
                  {"heartbeat_at": utcnow(), **progress}, returning=(Job.cancel_requested,))
    return Beat(True, bool(row.cancel_requested)) if row is not None else Beat(False)


def fence(session: Session, job_id: str, attempt: int) -> bool:
    """Inside the caller's transaction: True while `attempt` still owns the running job. The conditional UPDATE
    holds the job's row until commit, so no newer claim can slip in between this check and the caller's writes."""
    return _update(session, job_id, [Job.status == JobStatus.running, Job.attempt == attempt],
                   {"heartbeat_at": utcnow()}) is not None


def finish(session: Session, job_id: str, attempt: int, status: JobStatus, **values: object) -> bool:
    """running → succeeded / failed / canceled for this attempt only; the credits it held and did not use go
    back to its owner."""
    moved = transition(session, job_id, JobStatus.running, status, attempt=attempt, finished_at=utcnow(), **values)
    if moved:
        credits.release(session, job_id, f"job {status}")
    return moved


def reopen(session: Session, job_id: str, *, params: dict, total_steps: int, epochs_total: int,
           estimated_s: float | None, epoch_price: int) -> bool:
    """succeeded / canceled → queued with more epochs: the next attempt resumes from the stored state. False when
    the job is no longer in either state (or was continued by another request first)."""
    return transition(session, job_id, CONTINUABLE, JobStatus.queued, params=params, total_steps=total_steps,
                      epochs_total=epochs_total, estimated_s=estimated_s, epoch_price=epoch_price,
                      queued_at=utcnow(), sent_at=None,
                      finished_at=None, cancel_requested=False, error=None, eta_s=None, webhook_status=None)


CancelOutcome = Literal["canceled", "requested", "finished"]


def cancel(session: Session, job_id: str) -> CancelOutcome:
    """A waiting job is canceled at once; a running one is asked to stop (its worker keeps the finished epochs and
    ends it); a finished one stays as it is."""
    if transition(session, job_id, WAITING, JobStatus.canceled, finished_at=utcnow()):
        outcome: CancelOutcome = "canceled"
        credits.release(session, job_id, "job canceled before it started")
    elif _update(session, job_id, [Job.status == JobStatus.running], {"cancel_requested": True}) is not None:
        outcome = "requested"
    else:
        outcome = "finished"
    return outcome


def requeue(session: Session, job_id: str, attempt: int, max_attempts: int, reason: str) -> JobStatus | None:
    """This attempt could not go on through no fault of the job's settings (a process of a multi-GPU run died):
    back to the queue in its old place, sent again by the outbox, or failed after max_attempts. The status it got;
    None when the attempt no longer owns the job."""
    if attempt >= max_attempts:
        return JobStatus.failed if finish(session, job_id, attempt, JobStatus.failed,
                                          error=f"{reason}; giving up after {attempt} attempts") else None
    moved = transition(session, job_id, JobStatus.running, JobStatus.queued, attempt=attempt, worker=None,
                       sent_at=None, error=f"{reason}; it resumes from its last stored epoch")
    return JobStatus.queued if moved else None


@dataclass
class LostJobs:
    requeued: list[str]
    failed: list[str]


def requeue_lost(session: Session, timeout_s: float, max_attempts: int, now: datetime | None = None) -> LostJobs:
    """Running jobs whose heartbeat is older than the timeout go back to the queue — in their old place, since
    queued_at is kept — or fail after max_attempts; interrupted ones (a storage outage) always go back. Each in one
    conditional statement."""
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_s)
    lost = or_(and_(Job.status == JobStatus.running, Job.heartbeat_at < cutoff),
               Job.status == JobStatus.interrupted)
    candidates = list(session.scalars(select(Job.id).where(lost)))
    gives_up = and_(Job.status == JobStatus.running, Job.attempt >= max_attempts)  # interrupted jobs always resume
    out = LostJobs([], [])
    for job_id in candidates:
        row = _update(session, job_id, [lost], {
            "status": case((gives_up, str(JobStatus.failed)), else_=str(JobStatus.queued)),
            "finished_at": case((gives_up, utcnow()), else_=None),
            "error": case((gives_up, "the worker was lost " + cast(Job.attempt, String) + " times; giving up"),
                          else_=None),
            "worker": None,
        }, returning=(Job.status,))
        if row is None:
            continue
        if row.status == JobStatus.failed:
            out.failed.append(job_id)
            credits.release(session, job_id, "job failed")
        else:
            out.requeued.append(job_id)
    return out


def undelivered(session: Session, resend_after_s: float, now: datetime | None = None) -> list[str]:
    """Queued jobs whose train message never reached the broker, or long enough ago that it may have been lost: the
    outbox the reconciler sends again from (a message too many finds nothing to do; one too few strands a job)."""
    cutoff = (now or utcnow()) - timedelta(seconds=resend_after_s)
    rows = session.scalars(select(Job.id).where(Job.status == JobStatus.queued,
                                                or_(Job.sent_at.is_(None), Job.sent_at < cutoff)))
    return list(rows)


def mark_sent(session: Session, job_id: str) -> None:
    _update(session, job_id, [], {"sent_at": utcnow()})


def deliver(session: Session, job_id: str, send_train: Callable[[str], object]) -> bool:
    """Sends a stored job's train message and, when the broker took it, marks it sent (committed). Used by job
    creation and by the reconciler's outbox, which resends what was never marked."""
    if not send_train(job_id):
        return False
    mark_sent(session, job_id)
    session.commit()
    return True


@dataclass(frozen=True)
class QueueSlot:
    """Where a queued job stands: its 1-based place and the estimated seconds until it starts and until it ends."""

    position: int
    starts_in_s: float | None
    ends_in_s: float | None


# Only the columns the queue needs: whole rows would drag each job's params, log and chart history along. One
# statement for both kinds: the queue is read on every job list, and a statement costs more than its few rows.
_ACTIVE = (select(Job.id, Job.owner_id, Job.status, Job.step, Job.total_steps, Job.eta_s, Job.estimated_s, Job.gpus,
                  Job.memory_mib)
           .where(Job.status.in_([JobStatus.running, JobStatus.queued])).order_by(Job.queued_at, Job.id))


def _running_and_queued(session: Session) -> tuple[list[Row], list[Row]]:
    """Running jobs, and queued ones oldest first."""
    running: list[Row] = []
    queued: list[Row] = []
    for row in read_rows(session, _ACTIVE):
        (running if row.status == JobStatus.running else queued).append(row)
    return running, queued


def _gpus_by_owner(rows: Iterable[Row]) -> Counter[str]:
    """GPUs in use per owner: a job on N GPUs counts as N turns, in the fair order and against the limits."""
    taken: Counter[str] = Counter()
    for row in rows:
        taken[row.owner_id] += row.gpus
    return taken


def _fair(running: Sequence[Row], queued: Sequence[Row]) -> list[str]:
    """Round robin over owners, oldest first within an owner; an owner's running jobs count as turns taken."""
    turns = _gpus_by_owner(running)
    keyed: list[tuple[int, int, str]] = []
    for arrival, row in enumerate(queued):
        keyed.append((turns[row.owner_id], arrival, row.id))
        turns[row.owner_id] += row.gpus
    return [job_id for *_, job_id in sorted(keyed)]


def fair_order(session: Session) -> list[str]:
    """Queued job ids in the order workers take them, so one user's ten jobs cannot hold every GPU while another
    user's single job waits behind them."""
    return _fair(*_running_and_queued(session))


def claim_next(session: Session, worker: str, max_running_per_owner: int | None = None,
               capacity: Capacity | None = None) -> str | None:
    """Claims the fairest queued job that fits `capacity` (the worker's GPUs now; None: any), passing over owners who
    already use as many GPUs as they may (their own limit, else `max_running_per_owner`); None when nothing can be
    taken. The caller commits. A job passed over because it does not fit goes back to the outbox (sent_at = None):
    its train message was this turn, and the reconciler sends it again for a worker it fits."""
    running, queued = _running_and_queued(session)
    busy = _gpus_by_owner(running)
    rows = {row.id: row for row in queued}
    own: dict[str, int] = {}
    if queued:
        own = {row.id: row.max_running_jobs for row in session.execute(select(User.id, User.max_running_jobs).where(
            User.id.in_({row.owner_id for row in queued}), User.max_running_jobs.is_not(None)))}
    too_large = []
    for job_id in _fair(running, queued):
        row = rows[job_id]
        most = own.get(row.owner_id, max_running_per_owner)
        if most is not None and busy[row.owner_id] + row.gpus > most:
            continue
        if capacity is not None and not capacity.fits_now(Need(row.gpus, row.memory_mib)):
            too_large.append(job_id)
            continue
        if claim(session, job_id, worker):
            return job_id
    if too_large:
        session.execute(update(Job).where(Job.id.in_(too_large), Job.status == JobStatus.queued).values(sent_at=None)
                        .execution_options(synchronize_session=False))
    return None


def has_queued(session: Session) -> bool:
    return session.scalar(select(Job.id).where(Job.status == JobStatus.queued).limit(1)) is not None


@dataclass(frozen=True)
class OwnerLoad:
    running: int
    waiting: int  # queued or scheduled


@dataclass(frozen=True)
class OwnerLimits:
    max_running: int
    max_waiting: int


def limits_of(session: Session, owner_id: str, settings: Settings) -> OwnerLimits:
    """The user's own limits where an admin set them, else the site's."""
    row = session.execute(select(User.max_running_jobs, User.max_waiting_jobs).where(User.id == owner_id)).first()
    running, waiting = row if row is not None else (None, None)
    return OwnerLimits(running or settings.max_running_jobs_per_user, waiting or settings.max_waiting_jobs_per_user)


def owner_load(session: Session, owner_id: str) -> OwnerLoad:
    """Running counts GPUs (a 2-GPU job is 2), waiting counts jobs."""
    counts: Counter[str] = Counter()
    for status, gpus in session.execute(select(Job.status, Job.gpus).where(
            Job.owner_id == owner_id, Job.status.in_([JobStatus.running, JobStatus.queued, JobStatus.scheduled]))):
        counts[status] += gpus if status == JobStatus.running else 1
    return OwnerLoad(counts[JobStatus.running], counts[JobStatus.queued] + counts[JobStatus.scheduled])


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
