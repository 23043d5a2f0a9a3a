"""Periodic repairs: lost workers' jobs go back to their place in the queue (or fail after MAX_ATTEMPTS), in one
statement each; due scheduled jobs start; queued jobs whose message never reached the broker are sent again; images
left waiting for screening (a queue that was down, a lost message) are sent to be screened again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from core.db import session_factory
from core.events import notices_for
from core.jobs import deliver, has_queued, requeue_lost, transition, undelivered
from core.models import Job, JobStatus, utcnow
from core.screening import stale_pending
from core.settings import Settings
from core.webhooks import release, take_due


@dataclass
class Repairs:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)
    rescreened: list[str] = field(default_factory=list)


def queued_jobs_left(settings: Settings) -> bool:
    with session_factory(settings.db_url)() as session:
        return has_queued(session)


def announce_ended(settings: Settings, send_announcement: Callable[[str], object]) -> list[str]:
    """Sends a webhook task for every ended job not announced yet; one the broker did not take is tried next pass."""
    sent = []
    with session_factory(settings.db_url)() as session:
        due = take_due(session)
        session.commit()
        for job_id in due:
            if send_announcement(job_id):
                sent.append(job_id)
            else:
                release(session, job_id)
                session.commit()
    return sent


def reconcile(settings: Settings, send_train: Callable[[str], object],
              send_announcement: Callable[[str], object] | None = None,
              send_screening: Callable[[str], object] | None = None) -> Repairs:
    """One pass. `send_train(job_id)` sends a train message and returns something true when the broker took it;
    `send_announcement(job_id)` likewise a webhook task for an ended job, `send_screening(screening_id)` a
    screening task for an image pending longer than RESEND_AFTER_S."""
    repairs = Repairs()
    with session_factory(settings.db_url)() as session:

        lost = requeue_lost(session, settings.heartbeat_timeout_s, settings.max_attempts)
        session.commit()
        repairs.requeued, repairs.failed = lost.requeued, lost.failed
        due = session.scalars(select(Job.id).where(Job.status == JobStatus.scheduled, Job.start_after <= utcnow()))
        for job_id in list(due):
            if transition(session, job_id, JobStatus.scheduled, JobStatus.queued, queued_at=utcnow()):
                session.commit()
                repairs.started.append(job_id)
        for job_id in repairs.requeued + repairs.started:
            deliver(session, job_id, send_train)
        delivered = set(repairs.requeued + repairs.started)
        repairs.resent = [job_id for job_id in undelivered(session, settings.resend_after_s)
                          if job_id not in delivered and deliver(session, job_id, send_train)]
        if send_screening is not None:
            repairs.rescreened = [screening_id for screening_id in stale_pending(session, settings.resend_after_s)
                                  if send_screening(screening_id)]
    if send_announcement is not None:
        repairs.announced = announce_ended(settings, send_announcement)
    notices = notices_for(settings.redis_url)
    for job_id in repairs.requeued + repairs.failed + repairs.started:
        notices.changed(job_id)
    return repairs
