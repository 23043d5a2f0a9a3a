"""Server-Sent Events for one job: woken by Redis notices when there is a Redis, by polling the database otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import ServerSentEvent
from sqlalchemy import bindparam, select

from core.db import read_rows, read_session_factory
from core.events import channel
from core.models import FINISHED, Epoch, Job
from core.settings import Settings

KEEPALIVE_S = 15.0  # the longest a lost Redis notice can delay an update
PROGRESS_KEYS = ("step", "total_steps", "loss", "lr", "eta_s")

Waiter = Callable[[], Awaitable[bool]]


_JOB_STATE = select(Job.status, Job.step, Job.total_steps, Job.loss, Job.lr, Job.eta_s, Job.error, Job.log_tail).where(
    Job.id == bindparam("job_id"))
_EPOCH_PREVIEWS = select(Epoch.n, Epoch.previews).where(Epoch.job_id == bindparam("job_id")).order_by(Epoch.n)


def _snapshot(settings: Settings, job_id: str) -> dict[str, Any]:
    """What a listener sees of the job; only these columns (not params or the chart history) on every notice."""
    with read_session_factory(settings.db_url)() as session:
        state = read_rows(session, _JOB_STATE, {"job_id": job_id}).one()._asdict()
        epochs = {n: len(previews) for n, previews in read_rows(session, _EPOCH_PREVIEWS, {"job_id": job_id})}
    return {**state, "log_tail": list(state["log_tail"]), "epochs": epochs}


def changes(last: dict[str, Any], now: dict[str, Any]) -> list[ServerSentEvent]:
    """The events that take a listener from snapshot `last` to `now` (`last` empty: everything so far)."""
    events = []
    if any(now[k] != last.get(k) for k in PROGRESS_KEYS):
        events.append(ServerSentEvent(event="progress", data={k: now[k] for k in PROGRESS_KEYS}))
    seen_epochs = last.get("epochs", {})
    for n, previews in now["epochs"].items():
        if seen_epochs.get(n) != previews:
            events.append(ServerSentEvent(event="epoch", data={"n": n, "previews": previews}))
    seen_log = last.get("log_tail", [])
    if now["log_tail"] != seen_log:
        # log_tail is a sliding window: send the lines after the last one this listener has
        fresh = now["log_tail"]
        if seen_log and seen_log[-1] in fresh:
            fresh = fresh[len(fresh) - fresh[::-1].index(seen_log[-1]):]
        events.append(ServerSentEvent(event="log", data={"lines": fresh}))
    if now["status"] != last.get("status"):
        events.append(ServerSentEvent(event="status", data={"status": now["status"], "error": now["error"]}))
    return events


@asynccontextmanager
async def _redis_waiter(redis_url: str, job_id: str) -> AsyncIterator[Waiter]:
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel(job_id))

    async def wait() -> bool:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE_S)
        while message is not None and await pubsub.get_message(ignore_subscribe_messages=True, timeout=0):
            pass  # a burst of notices needs one re-read
        return message is not None

    try:
        yield wait
    finally:
        await pubsub.aclose()
        await client.aclose()


@asynccontextmanager
async def _polling_waiter(interval_s: float) -> AsyncIterator[Waiter]:
    async def wait() -> bool:
        await asyncio.sleep(interval_s)
        return True

    yield wait


async def job_stream(settings: Settings, job_id: str, request: Request,
                     poll_s: float) -> AsyncIterator[ServerSentEvent]:
    """`progress`, `epoch` (per epoch, again when its previews arrive), `log`, `status`; ends with the job.
    FastAPI's EventSourceResponse frames them and sends its keep-alive comment on a quiet stream."""
    waiter = _redis_waiter(settings.redis_url, job_id) if settings.redis_url else _polling_waiter(poll_s)
    async with waiter as wait:  # subscribed before the first read, so no change falls in between
        last: dict[str, Any] = {}
        while True:
            now = await run_in_threadpool(_snapshot, settings, job_id)
            for event in changes(last, now):
                yield event
            last = now
            if now["status"] in FINISHED or await request.is_disconnected():
                return
            await wait()
