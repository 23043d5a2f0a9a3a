"""What a user sets for themselves and the limits they train under: the webhook told when a job ends, and how many
jobs may train and wait at once."""

from __future__ import annotations

import secrets

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, Conflict
from api.routes import API_PREFIX
from api.schemas import Limits, WebhookIn, WebhookOut, WebhookTest
from api.services.accounts import set_webhook
from core.jobs import owner_load
from core.models import User
from core.webhooks import ANNOUNCED, Announcement, DeliveryError, RefusedTarget, post

router = APIRouter(prefix=API_PREFIX, tags=["account"], responses=ERROR_RESPONSES)
EVENTS = [f"job.{state}" for state in ANNOUNCED]


def _webhook(user: User) -> WebhookOut:
    return WebhookOut(url=user.webhook_url, secret=user.webhook_secret, events=EVENTS)


@router.get("/me/webhook")
def get_webhook(user: CurrentUser, session: SessionDep) -> WebhookOut:
    return _webhook(session.get(User, user.id))


@router.put("/me/webhook")
def put_webhook(body: WebhookIn, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> WebhookOut:
    """Sets (or with url null, removes) the webhook; the signing secret is made on first use and on request."""
    row = set_webhook(session, user.id, body, settings)
    return _webhook(row)


@router.post("/me/webhook/test")
def test_webhook(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> WebhookTest:
    """Posts a `ping` event now, signed like the real ones, and says how the receiver answered."""
    row = session.get(User, user.id)
    if not row.webhook_url:
        raise Conflict("set a webhook URL first")
    url, secret = row.webhook_url, row.webhook_secret or ""
    session.close()  # the receiver may take seconds: no pooled connection is held meanwhile
    ping = Announcement(secrets.token_hex(16), "ping", b'{"event": "ping"}')
    try:
        code = post(url, secret, ping, settings.webhook_private_allowed)
    except (RefusedTarget, DeliveryError) as exc:
        return WebhookTest(delivered=False, message=str(exc))
    return WebhookTest(delivered=True, message=f"the receiver answered HTTP {code}")


@router.get("/me/limits")
def limits(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Limits:
    load = owner_load(session, user.id)
    return Limits(running=load.running, max_running=settings.max_running_jobs_per_user, waiting=load.waiting,
                  max_waiting=settings.max_waiting_jobs_per_user)
