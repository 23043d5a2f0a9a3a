"""The FastAPI application: routers under /api/v1, migrations at start, the web workbench at /."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import install as install_errors
from api.reconciler import Reconciler
from api.routes import all_routes
from api.throttle import Throttle
from core.db import migrate, read_session_factory, session_factory
from core.queue import make_celery
from core.settings import Settings, get_settings
from core.storage import S3Storage, storage_for
from trainer.families import FAMILIES

log = logging.getLogger(__name__)
WEB = Path(__file__).resolve().parent.parent / "web"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    reconciler = None
    if app.state.settings.reconcile_in_api:
        reconciler = Reconciler(app.state.settings, app.state.celery, app.state.storage)
        reconciler.start()
    # What exists at start-up (modules, routes, settings, pools) lives as long as the process. Frozen, it is left out
    # of the cyclic collector's full passes, which would otherwise scan ~150k objects (60 ms here) in the middle of
    # a request now and then: the largest part of the read p99 (docs/benchmarks.md).
    gc.freeze()
    yield
    gc.unfreeze()  # an app made and shut down inside a longer-lived process (tests) leaves nothing pinned
    if reconciler is not None:
        reconciler.stop()


class NoSniff:
    """Every answer says `X-Content-Type-Options: nosniff`: browsers must not guess types (an upload served as an image
    is never run as a page). Plain ASGI, so it costs a list append per response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or get_settings()
    unknown = sorted({m.family for m in settings.models()} - set(FAMILIES))
    if unknown:
        raise RuntimeError(f"BASE_MODELS: unknown model family {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(FAMILIES)}")
    if run_migrations:
        migrate(settings.db_url)
    app = FastAPI(title="lorabake", version="0.1.0", openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs",
                  lifespan=_lifespan)
    app.state.settings = settings
    app.state.sessions = session_factory(settings.db_url)
    app.state.read_sessions = read_session_factory(settings.db_url)
    storage = storage_for(settings)
    if isinstance(storage, S3Storage):
        storage.ensure_bucket()
    app.state.storage = storage
    app.state.celery = make_celery(settings)
    app.state.throttle = Throttle(settings.redis_url)
    app.state.sse_interval_s = 1.0

    # FastAPI 0.165 keeps an included router nested and walks every level, route by route, on each request: up to
    # 0.12 ms per request here (docs/benchmarks.md). The routers carry the /api/v1 prefix, so their routes go
    # straight onto the app's own router instead, ordered by their paths.
    app.router.routes.extend(all_routes())

    install_errors(app)
    app.add_middleware(NoSniff)
    if (WEB / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=WEB, html=True), name="web")
    return app
