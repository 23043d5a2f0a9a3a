"""Service-wide endpoints: health, Prometheus metrics, base models, presets, signed local-file downloads."""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import PurePosixPath

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text

from api.deps import SessionDep, SettingsDep, StorageDep
from api.errors import ERROR_RESPONSES, Forbidden, NotFound, Unauthorized
from api.param_catalog import catalog, families
from api.routes import API_PREFIX
from core.models import Job
from core.storage import LocalStorage, StorageError
from trainer.job.presets import FAMILIES, THEMES, preset_values
from trainer.networks.spec import NETWORK_TYPES

router = APIRouter(prefix=API_PREFIX, tags=["system"], responses=ERROR_RESPONSES)
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics")
def metrics(session: SessionDep, settings: SettingsDep, request: Request) -> Response:
    """Prometheus metrics: with METRICS_TOKEN set, only for `Authorization: Bearer <that token>`; with
    METRICS_PUBLIC, for anyone; otherwise (the embedded mode: production refuses to start so) for this machine."""
    if settings.metrics_token:
        if not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {settings.metrics_token}"):
            raise Unauthorized("metrics need the metrics token",
                               headers={"WWW-Authenticate": "Bearer"})
    elif not settings.metrics_public and not _loopback(request.client.host if request.client else ""):
        raise Forbidden("metrics are served to this machine only; set "
                        "LORABAKE_METRICS_TOKEN to read them from elsewhere")
    registry = CollectorRegistry()
    jobs = Gauge("lorabake_jobs", "Jobs by status", ["status"], registry=registry)
    for job_status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        jobs.labels(status=job_status).set(count)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/base-models")
def base_models(settings: SettingsDep) -> list[dict[str, object]]:
    """The base models offered; `train_overrides` are what the server sets over every preset for that model (pro mode
    starts from them too, so basic and pro count the same steps for the same settings)."""
    return [{"name": m.name, "family": m.family, "resolution": m.resolution, "train_overrides": m.train_overrides}
            for m in settings.models()]


@router.get("/presets")
async def presets() -> list[dict[str, object]]:
    return [{"theme": theme, "family": family, "params": preset_values(theme, family)}
            for theme in THEMES for family in FAMILIES]


@router.get("/families")
async def model_families(settings: SettingsDep, every: bool = False) -> list[dict[str, object]]:
    """The families of this server's base models (the first base model's first): name, label, training size, crop
    sizes. `every=true`: every family lorabake knows."""
    return families(None if every else [m.family for m in settings.models()])


@router.get("/params")
async def params() -> list[dict[str, object]]:
    """Every parameter of pro mode, grouped, with its type, bounds, default and what it really does."""
    return catalog()


@router.get("/network-types")
async def network_types() -> list[dict[str, object]]:
    """Pro mode's plain choice of network type, as the network_module and network_args sd-scripts users write."""
    return [dict(t) for t in NETWORK_TYPES]


@router.get("/files/{key:path}")
def signed_file(key: str, exp: int, name: str, sig: str, storage: StorageDep) -> FileResponse:
    """A signed link's file, with Range requests (a paused or cut download resumes)."""
    if not isinstance(storage, LocalStorage) or not storage.verify(key, exp, name, sig):
        raise Forbidden("link is invalid or has expired")
    try:
        path = storage.path(key)
    except StorageError:
        raise NotFound("file not found") from None
    if not path.is_file():
        raise NotFound("file not found")
    media_type = MEDIA_TYPES.get(PurePosixPath(key).suffix)
    return FileResponse(path, media_type=media_type or "application/octet-stream",
                        filename=None if media_type else name, headers={"Cache-Control": "private, max-age=300"})


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
