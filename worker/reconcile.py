"""Periodic repairs: lost workers' jobs become interrupted and are re-queued (up to a cap); due scheduled jobs start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from core.db import session_factory
from core.events import notices_for
from core.jobs import stale_running, transition
from core.models import Job, JobStatus, utcnow
from core.settings import Settings


@dataclass
class Repairs:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


def reconcile(settings: Settings, send_train: Callable[[str], None]) -> Repairs:
    repairs = Repairs()
    with session_factory(settings.db_url)() as session:
        for job_id in stale_running(session, settings.heartbeat_timeout_s):
            if not transition(session, job_id, JobStatus.running, JobStatus.interrupted):
                continue
            job = session.get(Job, job_id)
            session.refresh(job)
            if job.attempt >= settings.max_attempts:
                transition(session, job_id, JobStatus.interrupted, JobStatus.failed, finished_at=utcnow(),
                           error=f"the worker was lost {job.attempt} times; giving up")
                repairs.failed.append(job_id)
            elif transition(session, job_id, JobStatus.interrupted, JobStatus.queued, queued_at=utcnow()):
                send_train(job_id)
                repairs.requeued.append(job_id)
        due = session.scalars(select(Job.id).where(Job.status == JobStatus.scheduled, Job.start_after <= utcnow()))
        for job_id in list(due):
            if transition(session, job_id, JobStatus.scheduled, JobStatus.queued, queued_at=utcnow()):
                send_train(job_id)
                repairs.started.append(job_id)
    notices = notices_for(settings.redis_url)
    for job_id in repairs.requeued + repairs.failed + repairs.started:
        notices.changed(job_id)
    return repairs
