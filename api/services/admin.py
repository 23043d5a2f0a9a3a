"""The operator's console: every user (search, suspend and restore, credits and limits), every user's jobs (cancel,
re-queue, why one waits), the workers and the queues, and the audit log. Every change is written to the audit log
in its own transaction."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import Request
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.admin_schemas import LimitsIn, TopUp
from api.deps import Page, not_found
from api.errors import Conflict, Invalid
from api.services.jobs import enqueue, live_fields
from api.services.workers import idle_capacities, live_workers
from core import audit, credits, roles
from core import jobs as lifecycle
from core.events import notices_for
from core.models import AuditEntry, Job, JobStatus, User, aware, utcnow
from core.queue import TRAIN_QUEUE, queue_lengths
from core.settings import Settings

REQUEUABLE = (JobStatus.failed, JobStatus.interrupted)


def _user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise not_found("user")
    return user


def users(session: Session, settings: Settings, query: str, page: Page) -> list[dict[str, Any]]:
    """Accounts whose email contains `query` (all when empty), oldest first, with their jobs running and waiting."""
    statement = select(User).order_by(User.created_at, User.id)
    if query.strip():
        statement = statement.where(User.email.contains(query.strip().lower(), autoescape=True))
    rows = list(session.scalars(page.of(statement)))
    loads = Counter[tuple[str, str]]()
    for owner, status, count in session.execute(
            select(Job.owner_id, Job.status, func.count()).where(
                Job.owner_id.in_([u.id for u in rows]),
                Job.status.in_([JobStatus.running, JobStatus.queued, JobStatus.scheduled]))
            .group_by(Job.owner_id, Job.status)):
        loads[owner, "running" if status == JobStatus.running else "waiting"] += count
    return [{**_columns(settings, u), "running": loads[u.id, "running"], "waiting": loads[u.id, "waiting"]}
            for u in rows]


def _columns(settings: Settings, user: User) -> dict[str, Any]:
    """The account as the console shows it: no password hash, and the credits as the user sees them (this month's
    grant included)."""
    shown = {column.key: getattr(user, column.key) for column in User.__table__.c if column.key != "password_hash"}
    return {**shown, "credits": credits.with_grant(settings, user.credits, user.granted_month)}


def user_view(session: Session, settings: Settings, user_id: str) -> dict[str, Any]:
    user = _user(session, user_id)
    load = lifecycle.owner_load(session, user_id)
    return {**_columns(settings, user), "running": load.running, "waiting": load.waiting}


def suspend(session: Session, admin: audit.Actor, user_id: str, reason: str, settings: Settings) -> None:
    if user_id == admin.id:
        raise Conflict("you cannot suspend your own account")
    _user(session, user_id)
    done = roles.suspend(session, user_id, reason, admin)
    if done is None:
        raise Conflict("the account is suspended already")
    session.commit()
    notices = notices_for(settings.redis_url)
    for job_id in done.canceled + done.stopping:
        notices.changed(job_id)


def restore(session: Session, admin: audit.Actor, user_id: str, reason: str) -> None:
    _user(session, user_id)
    if not roles.restore(session, user_id, reason, admin):
        raise Conflict("the account is not suspended")
    session.commit()


def top_up(session: Session, settings: Settings, admin: audit.Actor, user_id: str, body: TopUp) -> None:
    _user(session, user_id)
    credits.grant_monthly(session, settings, user_id)  # a deduction counts what the user sees as theirs
    try:
        new = credits.top_up(session, user_id, body.amount, f"{admin.email}: {body.reason}")
    except credits.NotEnoughCredits as exc:
        session.rollback()
        raise Invalid("the balance cannot go below zero", [{"field": "amount", "message": str(exc)}]) from None
    audit.record(session, admin, "credits.top_up", "user", user_id, body.reason, amount=body.amount, balance=new)
    session.commit()


def set_limits(session: Session, admin: audit.Actor, user_id: str, body: LimitsIn) -> None:
    user = _user(session, user_id)
    user.max_running_jobs, user.max_waiting_jobs = body.max_running_jobs, body.max_waiting_jobs
    audit.record(session, admin, "user.limits", "user", user_id, body.reason, max_running_jobs=body.max_running_jobs,
                 max_waiting_jobs=body.max_waiting_jobs)
    session.commit()


def jobs(session: Session, settings: Settings, status: str | None, query: str, page: Page) -> list[dict[str, Any]]:
    """Every user's jobs, newest first (by status, by owner email or job name), each waiting one with why."""
    statement = (select(Job, User.email).join(User, User.id == Job.owner_id)
                 .order_by(Job.created_at.desc(), Job.id))
    if status:
        statement = statement.where(Job.status == status)
    if query.strip():
        needle = query.strip()
        statement = statement.where(or_(User.email.contains(needle.lower(), autoescape=True),
                                        Job.name.contains(needle, autoescape=True)))
    rows = session.execute(page.of(statement)).all()
    slots = lifecycle.queue_slots(session) if any(job.status == JobStatus.queued for job, _ in rows) else {}
    trainers = any(TRAIN_QUEUE in w.queues for w in live_workers(session, settings))
    idle = idle_capacities(session, settings) if slots else []
    out = []
    for job, email in rows:
        fields = {column.key: getattr(job, column.key) for column in Job.__table__.c}
        live = live_fields(job, session, slots, idle)
        out.append({**fields, **live, "owner_email": email, "waiting_because": live.get("waiting_for")
                    or waiting_because(session, settings, job, slots.get(job.id), trainers)})
    return out


def waiting_because(session: Session, settings: Settings, job: Job, slot: lifecycle.QueueSlot | None,
                    trainers: bool) -> str | None:
    """Why a job that has not started has not, in words; None for one that started or ended."""
    if job.status == JobStatus.scheduled:
        return f"scheduled: it is queued at {job.start_after:%Y-%m-%d %H:%M} UTC"
    if job.status == JobStatus.interrupted:
        return f"interrupted ({job.error}); the reconciler puts it back in the queue"
    if job.status != JobStatus.queued:
        return None
    if not trainers:
        return "no worker that trains is running (none has reported in the last " \
               f"{settings.heartbeat_timeout_s:.0f} s)"
    load, most = lifecycle.owner_load(session, job.owner_id), lifecycle.limits_of(session, job.owner_id, settings)
    if load.running >= most.max_running:
        return f"its owner already has {load.running} jobs training, as many as they may ({most.max_running})"
    if slot is not None and slot.position > 1:
        return f"{slot.position - 1} jobs are ahead of it in the fair order; every training worker is busy"
    return "next in line: it starts when a training worker is free"


def cancel_job(session: Session, admin: audit.Actor, job_id: str, reason: str, settings: Settings) -> None:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job")
    outcome = lifecycle.cancel(session, job_id)
    if outcome == "finished":
        session.rollback()
        raise Conflict(f"the job is {job.status} already")
    audit.record(session, admin, "job.cancel", "job", job_id, reason, outcome=outcome, owner=job.owner_id)
    session.commit()
    notices_for(settings.redis_url).changed(job_id)


def requeue_job(session: Session, admin: audit.Actor, job_id: str, reason: str, request: Request) -> None:
    """A failed or interrupted job goes back to the queue and resumes from its last stored epoch. What its owner
    already paid stays paid; the epochs it trains now are on the house (the job holds nothing any more)."""
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job")
    if not lifecycle.transition(session, job_id, REQUEUABLE, JobStatus.queued, queued_at=utcnow(), sent_at=None,
                                finished_at=None, error=None, cancel_requested=False, eta_s=None):
        session.rollback()
        raise Conflict(f"only a failed or interrupted job can be re-queued; this one is {job.status}")
    audit.record(session, admin, "job.requeue", "job", job_id, reason, owner=job.owner_id)
    session.commit()
    enqueue(request, session, job_id)


def workers(session: Session, settings: Settings, request: Request) -> dict[str, Any]:
    """Each worker heard from lately, its GPUs and the jobs it trains now, the queue lengths and job counts."""
    running = session.execute(select(Job.id, Job.worker).where(Job.status == JobStatus.running)).all()
    now = utcnow()
    listed = [{"name": w.name, "queues": w.queues, "gpus": w.gpus, "started_at": w.started_at,
               "heartbeat_age_s": round((now - aware(w.heartbeat_at)).total_seconds(), 1),
               "jobs": [job_id for job_id, name in running if name == w.name]}
              for w in live_workers(session, settings)]
    queued = session.scalar(select(func.count()).where(Job.status == JobStatus.queued)) or 0
    return {"workers": listed, "queues": queue_lengths(request.app.state.celery), "jobs_queued": queued,
            "jobs_running": len(running)}


def audit_log(session: Session, page: Page, target_id: str | None) -> list[AuditEntry]:
    statement = select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id)
    if target_id:
        statement = statement.where(AuditEntry.target_id == target_id)
    return list(session.scalars(page.of(statement)))
