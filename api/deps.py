"""FastAPI dependencies: settings, DB session, storage, the current user and owned-object loaders."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from api.errors import Forbidden, NotFound, Unauthorized, Unavailable
from api.security import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, token_hash
from core import tasks
from core.audit import Actor
from core.db import read_rows
from core.models import ApiToken, Dataset, Job, Role, TaskRow, User, aware, utcnow
from core.queue import send
from core.settings import Settings
from core.storage import Storage

# Built once: on a hot path, building the statement costs as much as running it. Columns, not the ORM entity:
# loading an entity into the session costs more than the query itself.
TOKEN_LOOKUP = (select(User.id, User.email, User.created_at, User.role, User.suspended_reason,
                       ApiToken.id.label("token_id"), ApiToken.expires_at)
                .join(ApiToken, ApiToken.user_id == User.id).where(ApiToken.token_hash == bindparam("token_hash")))
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_db(request: Request) -> Iterator[Session]:
    # Sync, so FastAPI opens and closes it in the thread pool: closing hands the connection back with a ROLLBACK,
    # a round trip to the database that must not run on the event loop.
    state = request.app.state
    with (state.read_sessions if request.method in SAFE_METHODS else state.sessions)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


StorageDep = Annotated[Storage, Depends(get_storage)]

DEFAULT_PAGE, LARGEST_PAGE = 100, 1000  # a page may hold a whole dataset (MAX_IMAGES_PER_DATASET is 1000)


@dataclass(frozen=True, slots=True)
class Page:
    """Which slice of a list a request asks for: `limit` items after the first `offset`. A page shorter than
    `limit` is the last one."""

    limit: int
    offset: int

    def of(self, query: Select[Any]) -> Select[Any]:
        return query.limit(self.limit).offset(self.offset)

    def slice(self, items: list[Any]) -> list[Any]:
        return items[self.offset:self.offset + self.limit]


async def get_page(limit: Annotated[int, Query(ge=1, le=LARGEST_PAGE, description="items per page")] = DEFAULT_PAGE,
                   offset: Annotated[int, Query(ge=0, description="items to skip")] = 0) -> Page:
    return Page(limit, offset)


PageDep = Annotated[Page, Depends(get_page)]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: the account, and the token it came with (so that logging out ends just that one)."""

    id: str
    email: str
    created_at: datetime
    token_id: str
    role: str = Role.user

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.email)


Owned = TypeVar("Owned")  # a table with an owner_id column


def not_found(what: str) -> NotFound:
    """The answer for a missing object and for another user's object alike, so that ids reveal nothing."""
    return NotFound(f"{what} not found")


def owned(session: Session, table: type[Owned], row_id: str, user_id: str, what: str) -> Owned:
    """The user's row of `table` by id; 404 (`what` not found) when it is missing or someone else's."""
    row = session.get(table, row_id)
    if row is None or row.owner_id != user_id:
        raise not_found(what)
    return row


def _unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": "Bearer"})


# Everything that queries the database is sync (`def`): FastAPI runs it in the thread pool, so a slow query or a
# database that hangs never holds up the event loop, which keeps serving streams, health checks and other requests.
def request_token(request: Request, bearer: Annotated[str | None, Depends(oauth2)]) -> str:
    """The token a request came with: its bearer token, or the browser's session cookie (with the CSRF header
    for anything but a read)."""
    token = bearer
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
        if token and request.method not in SAFE_METHODS:
            sent, expected = request.headers.get(CSRF_HEADER, ""), request.cookies.get(CSRF_COOKIE, "")
            if not expected or not secrets.compare_digest(sent, expected):
                raise Forbidden("missing or wrong CSRF token (X-CSRF-Token header)")
    if not token:
        raise _unauthorized("not signed in")
    return token


RequestToken = Annotated[str, Depends(request_token)]


def get_current_user(session: SessionDep, token: RequestToken) -> Caller:
    row = read_rows(session, TOKEN_LOOKUP, {"token_hash": token_hash(token)}).first()
    if row is None or (row.expires_at is not None and aware(row.expires_at) < utcnow()):
        raise _unauthorized("invalid or expired token")
    if row.suspended_reason is not None:
        raise Forbidden(suspended_message(row.suspended_reason))
    return Caller(row.id, row.email, row.created_at, row.token_id, row.role)


def suspended_message(reason: str) -> str:
    return f"this account is suspended: {reason}"


CurrentUser = Annotated[Caller, Depends(get_current_user)]


def get_optional_user(request: Request, session: SessionDep,
                      bearer: Annotated[str | None, Depends(oauth2)]) -> Caller | None:
    """The caller when signed in, None for a visitor (pages that visitors may read too)."""
    try:
        return get_current_user(session, request_token(request, bearer))
    except Unauthorized:
        return None


MaybeUser = Annotated[Caller | None, Depends(get_optional_user)]


def get_admin(user: MaybeUser) -> Caller:
    """An admin; anyone else, visitors included, is told the page does not exist (404), as with other users'
    objects."""
    if user is None or user.role != Role.admin:
        raise NotFound("not found")
    return user


AdminUser = Annotated[Caller, Depends(get_admin)]


def owned_dataset(dataset_id: str, session: SessionDep, user: CurrentUser) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != user.id:
        raise not_found("dataset")
    return dataset


def owned_job(job_id: str, session: SessionDep, user: CurrentUser) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.owner_id != user.id:
        raise not_found("job")
    return job


OwnedDataset = Annotated[Dataset, Depends(owned_dataset)]
OwnedJob = Annotated[Job, Depends(owned_job)]


QUEUE_DOWN = "the task queue is not reachable right now; nothing was started, try again in a moment"


def dispatch_task(request: Request, session: Session, row: TaskRow, task: str) -> None:
    """Send a stored task's message; when the broker is down the row ends `failed` with the reason (nothing is left
    waiting for a message that never came) and the caller gets a 503 saying so."""
    if send(request.app.state.celery, task, row.id):
        return
    tasks.unsent(session, type(row), row.id, QUEUE_DOWN)
    session.commit()
    raise Unavailable(QUEUE_DOWN, headers={"Retry-After": "30"})
