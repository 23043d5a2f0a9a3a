"""Periodic repairs: lost workers' jobs go back to their place in the queue (or fail after MAX_ATTEMPTS), in one
statement each; due scheduled jobs start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from core.db import session_factory
from core.events import notices_for
from core.jobs import requeue_lost, transition
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
        lost = requeue_lost(session, settings.heartbeat_timeout_s, settings.max_attempts)
        repairs.requeued, repairs.failed = lost.requeued, lost.failed
        for job_id in lost.requeued:
            send_train(job_id)
        due = session.scalars(select(Job.id).where(Job.status == JobStatus.scheduled, Job.start_after <= utcnow()))
        for job_id in list(due):
            if transition(session, job_id, JobStatus.scheduled, JobStatus.queued, queued_at=utcnow()):
                session.commit()
                send_train(job_id)
                repairs.started.append(job_id)
    notices = notices_for(settings.redis_url)
    for job_id in repairs.requeued + repairs.failed + repairs.started:
        notices.changed(job_id)
    return repairs
