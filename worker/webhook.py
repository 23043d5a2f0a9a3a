"""Delivering one job's end to its owner's webhook (see core.webhooks); the Celery task retries what fails here."""

from __future__ import annotations

import logging

from core.db import session_factory
from core.models import Job, User
from core.settings import Settings
from core.webhooks import ANNOUNCED, DeliveryError, RefusedTarget, announcement, post

log = logging.getLogger(__name__)


def _record(settings: Settings, job_id: str, text: str) -> None:
    with session_factory(settings.db_url)() as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.webhook_status = text[:300]
            session.commit()


def deliver(settings: Settings, job_id: str, try_no: int, last_try: bool) -> str:
    """One try. Returns what happened; raises DeliveryError when another try may succeed (and is left)."""
    with session_factory(settings.db_url)() as session:
        job = session.get(Job, job_id)
        owner = session.get(User, job.owner_id) if job is not None else None
        if job is None or owner is None or job.status not in ANNOUNCED or not owner.webhook_url:
            return "nothing to announce"
        url, secret, message = owner.webhook_url, owner.webhook_secret or "", announcement(job)
    try:
        code = post(url, secret, message, settings.webhook_private_allowed)
    except RefusedTarget as exc:
        _record(settings, job_id, f"not sent: {exc}")
        return "refused"
    except DeliveryError as exc:
        log.warning("webhook for job %s, try %d: %s", job_id, try_no, exc)
        if last_try:
            _record(settings, job_id, f"gave up after {try_no} tries: {exc}")
            return "gave up"
        _record(settings, job_id, f"try {try_no} failed: {exc}; trying again")
        raise
    _record(settings, job_id, f"delivered: HTTP {code}" + (f" (try {try_no})" if try_no > 1 else ""))
    return "delivered"
