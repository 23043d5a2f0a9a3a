"""Accounts: sign-up and sign-in (throttled, the hash in a capped slot), personal API tokens, the webhook."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import suspended_message
from api.errors import Conflict, Forbidden, Invalid, Unauthorized
from api.schemas import NewApiToken, Registration, WebhookIn
from api.security import hash_password, new_token, token_hash
from api.throttle import Limits, Throttle, account_delay_s, limits
from core.models import ApiToken, Role, User, utcnow
from core.settings import Settings
from core.webhooks import DeliveryError, RefusedTarget, check_target, skip_ended_before


def create_account(session: Session, throttle: Throttle, settings: Settings, body: Registration,
                   address: str) -> User:
    """A new account, within the sign-up limit of its client address; 409 when the email has one."""
    signup = limits(settings).signup
    throttle.check(signup, address, "new accounts from your address")
    email = body.email.lower()
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise Conflict("an account with this email already exists")
    with throttle.hashing_slot():
        user = User(email=email, password_hash=hash_password(body.password))
    if settings.mode == "embedded" and session.scalar(select(User.id).limit(1)) is None:
        user.role = Role.admin  # the install's own first account runs it; production grants on the server
    session.add(user)
    session.commit()
    throttle.add(signup, address)
    return user


def set_webhook(session: Session, user_id: str, body: WebhookIn, settings: Settings) -> User:
    """Sets (or with url null, removes) the webhook; the signing secret is made on first use and on request. A
    new URL is told only of jobs that end from now on."""
    row = session.get(User, user_id)
    url = (body.url or "").strip() or None
    if url is not None:
        try:
            check_target(url, settings.webhook_private_allowed)
        except (RefusedTarget, DeliveryError) as exc:
            raise Invalid("the webhook cannot be used", [{"field": "url", "message": str(exc)}]) from exc
    if url and url != row.webhook_url:
        skip_ended_before(session, user_id)
    row.webhook_url = url
    if body.new_secret or (url and not row.webhook_secret):
        row.webhook_secret = secrets.token_hex(24)
    session.commit()
    return row


def personal_token(session: Session, user_id: str, body: NewApiToken) -> tuple[ApiToken, str]:
    """A named API token (shown once) that lasts `days`, or until revoked."""
    token = new_token("lbp")
    expires = utcnow() + timedelta(days=body.days) if body.days else None
    row = ApiToken(user_id=user_id, token_hash=token_hash(token), kind="personal", name=body.name, expires_at=expires)
    session.add(row)
    session.commit()
    return row, token


@dataclass(frozen=True)
class SignIn:
    """One sign-in attempt's blocking parts (Redis counters, the database, the hash), each run off the event loop."""

    throttle: Throttle
    limit: Limits
    email: str
    address: str

    @property
    def pair(self) -> str:
        return f"{self.email} {self.address}"

    def admit(self, settings: Settings) -> float:
        """Refuses an address or pair past its limit (429); else how long this account's sign-ins wait now."""
        self.throttle.check(self.limit.address, self.address, "sign-in attempts from your address")
        self.throttle.check(self.limit.pair, self.pair, "wrong passwords for this account from your address")
        return account_delay_s(self.throttle.count(self.limit.account, self.email), settings)

    def authenticate(self, session: Session, password: str, max_age_s: int) -> str:
        """A new session token for the right password; a 401 (counted) for a wrong one."""
        self.throttle.add(self.limit.address, self.address)
        user = session.scalar(select(User).where(User.email == self.email))
        if not self.throttle.verify(password, user.password_hash if user else None) or user is None:
            self.throttle.add(self.limit.pair, self.pair)
            self.throttle.add(self.limit.account, self.email)
            raise Unauthorized("wrong email or password")
        self.throttle.clear(self.limit.pair, self.pair)
        if user.suspended_reason is not None:  # said only to whoever knows the password
            raise Forbidden(suspended_message(user.suspended_reason))
        token = new_token("lbs")
        session.add(ApiToken(user_id=user.id, token_hash=token_hash(token), kind="session",
                             expires_at=utcnow() + timedelta(seconds=max_age_s)))
        session.commit()
        return token
