"""Accounts: register, log in (bearer token and browser cookie), log out, personal API tokens."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import delete

from api.deps import CurrentUser, RequestToken, SessionDep, SettingsDep
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import NewApiToken, Registration, TokenOut, UserOut
from api.security import CSRF_COOKIE, SESSION_COOKIE, token_hash
from api.services.accounts import SignIn, create_account, personal_token
from api.throttle import client_address, limits
from core.models import ApiToken

router = APIRouter(prefix=API_PREFIX, tags=["auth"], responses=ERROR_RESPONSES)


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
def register(body: Registration, request: Request, session: SessionDep, settings: SettingsDep) -> UserOut:
    user = create_account(session, request.app.state.throttle, settings, body,
                          client_address(request, settings.trusted_proxies))
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


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(token: RequestToken, session: SessionDep) -> Response:
    """Ends the session or token the request came with (a suspended account may still sign out)."""
    session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash(token)))
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
    row, token = personal_token(session, user.id, body)
    return {"id": row.id, "name": row.name, "token": token}
