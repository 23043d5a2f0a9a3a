"""What a user sets for themselves and the limits they train under: the webhook told when a job ends, how many jobs
may train and wait at once, and their credits."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from sqlalchemy import select

from api.account_schemas import CreditMoveOut, CreditsOut
from api.deps import CurrentUser, PageDep, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, Conflict
from api.routes import API_PREFIX
from api.schemas import Limits, WebhookIn, WebhookOut, WebhookTest
from api.services.accounts import set_webhook
from core import credits
from core.jobs import limits_of, owner_load
from core.models import CreditMove, User
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
    load, most = owner_load(session, user.id), limits_of(session, user.id, settings)
    return Limits(running=load.running, max_running=most.max_running, waiting=load.waiting,
                  max_waiting=most.max_waiting)


@router.get("/me/credits")
def my_credits(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> CreditsOut:
    return CreditsOut(balance=credits.spendable(session, settings, user.id), held=credits.held(session, user.id),
                      monthly_grant=settings.monthly_credits, priced=credits.priced(settings))


@router.get("/me/credits/moves", response_model=list[CreditMoveOut])
def my_credit_moves(user: CurrentUser, session: SessionDep, page: PageDep) -> list[CreditMove]:
    """Every move of your credits, newest first."""
    return list(session.scalars(page.of(select(CreditMove).where(CreditMove.user_id == user.id)
                                        .order_by(CreditMove.created_at.desc(), CreditMove.id.desc()))))
