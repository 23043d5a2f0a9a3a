"""Webhooks: a user's URL is told, with a signed POST, when one of their jobs succeeds or fails.

The body is JSON; `X-Lorabake-Signature: sha256=<hex>` is the HMAC-SHA256, with the user's webhook secret, of
`<X-Lorabake-Timestamp>.<body>`, so a receiver can check both who sent it and that it is fresh. Every try of one
announcement carries the same `X-Lorabake-Delivery` id, so a receiver that saw it already can ignore the repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import Job, JobStatus, User, utcnow

ANNOUNCED = (JobStatus.succeeded, JobStatus.failed)
TIMEOUT_S = 10.0
QUEUED = "queued"
# A job that ended longer ago than this when its owner set a webhook is not announced after the fact.
RECENT = timedelta(hours=1)


class DeliveryError(Exception):
    """The receiver could not be reached or did not answer 2xx: worth another try."""


class RefusedTarget(ValueError):
    """The URL points where the server must not send (a private address in production): never retried."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True)
class Announcement:
    delivery_id: str
    event: str
    body: bytes


def announcement(job: Job) -> Announcement:
    event = f"job.{job.status}"
    finished = job.finished_at.isoformat() if isinstance(job.finished_at, datetime) else None
    payload = {"event": event, "job": {"id": job.id, "name": job.name, "status": str(job.status),
                                       "base_model": job.base_model, "epochs": job.epochs_total,
                                       "error": job.error, "finished_at": finished, "page": f"/#/jobs/{job.id}"}}
    # one id per job end: a continued job that ends again is a new announcement
    delivery = hashlib.sha256(f"{job.id}:{job.attempt}:{job.status}".encode()).hexdigest()[:32]
    return Announcement(delivery, event, json.dumps(payload, sort_keys=True).encode())


def check_target(url: str, allow_private: bool) -> None:
    """Raises RefusedTarget for anything but http(s), and (unless allowed) for hosts that resolve to loopback,
    private, link-local or reserved addresses: a server's webhook must not become a way into its own network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget("the webhook URL must be an http:// or https:// address")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise DeliveryError(f"the webhook host {parts.hostname} could not be resolved") from exc
    for *_, address in infos:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global:
            raise RefusedTarget(f"the webhook host {parts.hostname} is a private address ({ip}); this server "
                                "only sends to public ones")


def take_due(session: Session) -> list[str]:
    """Ended jobs whose owner has a webhook and that nobody announced yet, each marked queued by one conditional
    statement, so the worker (right after an attempt) and the API's reconciler never announce one twice. The caller
    commits, then sends them."""
    due = session.scalars(select(Job.id).join(User, User.id == Job.owner_id).where(
        Job.status.in_(ANNOUNCED), Job.webhook_status.is_(None), User.webhook_url.is_not(None),
        Job.finished_at > utcnow() - RECENT))
    taken = []
    for job_id in list(due):
        moved = session.execute(update(Job).where(Job.id == job_id, Job.webhook_status.is_(None))
                                .values(webhook_status=QUEUED))
        if moved.rowcount:
            taken.append(job_id)
    return taken


def release(session: Session, job_id: str) -> None:
    """Undoes take_due for a job whose announcement could not be queued: the next pass takes it again."""
    session.execute(update(Job).where(Job.id == job_id, Job.webhook_status == QUEUED).values(webhook_status=None))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the 3xx it is: following it could lead to an address check_target refused."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url: str, secret: str, message: Announcement, allow_private: bool, timeout_s: float = TIMEOUT_S) -> int:
    """One try at a target check_target accepts; the receiver's status code when 2xx, DeliveryError otherwise."""
    check_target(url, allow_private)
    timestamp = str(int(time.time()))
    request = urllib.request.Request(url, data=message.body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "lorabake-webhook/1",
        "X-Lorabake-Event": message.event, "X-Lorabake-Delivery": message.delivery_id,
        "X-Lorabake-Timestamp": timestamp, "X-Lorabake-Signature": sign(secret, timestamp, message.body)})
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"the receiver answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"the receiver could not be reached: {_unreachable(url, getattr(exc, 'reason', exc))}"
                            ) from exc


def _unreachable(url: str, reason: object) -> str:
    """Why a connection failed, in words rather than an errno."""
    host = urlsplit(url).hostname
    if isinstance(reason, socket.gaierror):
        return f"no host is called {host} (its name could not be found)"
    if isinstance(reason, ConnectionRefusedError):
        return f"nothing accepts connections at {host} on that port"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"{host} did not answer within {TIMEOUT_S:g} s"
    return str(reason)


def skip_ended_before(session: Session, owner_id: str) -> int:
    """A webhook announces what ends after it is set: the owner's ended jobs nobody announced are marked so."""
    return session.execute(update(Job).where(Job.owner_id == owner_id, Job.status.in_(ANNOUNCED),
                                             Job.webhook_status.is_(None))
                           .values(webhook_status="not announced: it ended before the webhook was set")).rowcount
