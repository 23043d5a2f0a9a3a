"""Accounts: register, log in (bearer token and browser cookie), log out, personal API tokens."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES, Conflict, Unauthorized
from api.routes import API_PREFIX
from api.schemas import NewApiToken, Registration, TokenOut, UserOut
from api.security import CSRF_COOKIE, SESSION_COOKIE, hash_password, new_token, token_hash
from api.throttle import Limits, Throttle, account_delay_s, client_address, limits
from core.models import ApiToken, User, utcnow
from core.settings import Settings

router = APIRouter(prefix=API_PREFIX, tags=["auth"], responses=ERROR_RESPONSES)


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
def register(body: Registration, request: Request, session: SessionDep, settings: SettingsDep) -> UserOut:
    throttle: Throttle = request.app.state.throttle
    signup, address = limits(settings).signup, client_address(request, settings.trusted_proxies)
    throttle.check(signup, address, "new accounts from your address")
    email = body.email.lower()
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise Conflict("an account with this email already exists")
    with throttle.hashing_slot():
        user = User(email=email, password_hash=hash_password(body.password))
    session.add(user)
    session.commit()
    throttle.add(signup, address)
    return UserOut.model_validate(user)


@router.post("/auth/login")
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, response: Response,
                session: SessionDep, settings: SettingsDep) -> TokenOut:
    """Guessing is refused per address and per (account, address) pair; an account itself is only slowed (its
    owner, from anywhere, still gets in). The wait is a sleep on the event loop, holding no thread; the counting,
    the database and the hash (in a capped slot) run in the thread pool."""
    attempt = SignIn(request.app.state.throttle, limits(settings), form.username.lower(),
                     client_address(request, settings.trusted_proxies))
    if delay := await run_in_threadpool(attempt.admit, settings):
        await asyncio.sleep(delay)
    max_age = settings.session_days * 86400
    token = await run_in_threadpool(attempt.authenticate, session, form.password, max_age)
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax",
                        secure=settings.cookie_secure)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), max_age=max_age, httponly=False, samesite="strict",
                        secure=settings.cookie_secure)
    return TokenOut(access_token=token)


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
        token = new_token("lbs")
        session.add(ApiToken(user_id=user.id, token_hash=token_hash(token), kind="session",
                             expires_at=utcnow() + timedelta(seconds=max_age_s)))
        session.commit()
        return token


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(user: CurrentUser, session: SessionDep) -> Response:
    session.execute(delete(ApiToken).where(ApiToken.id == user.token_id, ApiToken.user_id == user.id))
    session.commit()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/me")
async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.post("/me/tokens", status_code=status.HTTP_201_CREATED)
def create_api_token(body: NewApiToken, user: CurrentUser, session: SessionDep) -> dict[str, str]:
    token = new_token("lbp")
    expires = utcnow() + timedelta(days=body.days) if body.days else None
    row = ApiToken(user_id=user.id, token_hash=token_hash(token), kind="personal", name=body.name, expires_at=expires)
    session.add(row)
    session.commit()
    return {"id": row.id, "name": row.name, "token": token}
