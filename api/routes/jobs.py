"""Training jobs: estimate, create (now or in the off-peak window), list, status, live events, cancel, retrain,
continue, delete. Each route parses, calls one function of api/services/jobs.py and shapes the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import CurrentUser, OwnedJob, PageDep, SessionDep, SettingsDep, StorageDep
from api.errors import ERROR_RESPONSES
from api.live import job_stream
from api.routes import API_PREFIX
from api.schemas import ContinueIn, Estimate, JobIn, JobOut, JobSummary, MemoryOut, RetrainIn
from api.services import jobs as service
from api.training import EMPTY_PLAN, estimated_seconds
from core import credits
from core.models import utcnow

router = APIRouter(prefix=API_PREFIX, tags=["jobs"], responses=ERROR_RESPONSES)


@router.post("/jobs/estimate")
def estimate(body: JobIn, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Estimate:
    result = service.assess_job(body, user.id, session, settings)
    plan = result.plan or EMPTY_PLAN
    config = result.config
    epoch_price = service.epoch_price(settings, result)
    memory = result.memory
    return Estimate(steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs, total_steps=plan.total_steps,
                    train_images=result.train_images, train_samples=plan.train_samples, reg_samples=plan.reg_samples,
                    batch_size=config.train_batch_size if config else 1,
                    gradient_accumulation_steps=config.gradient_accumulation_steps if config else 1,
                    gpus=config.gpus if config else 1,
                    tonight_starts_at=service.next_off_peak(utcnow(), settings.off_peak_start_hour),
                    estimated_seconds=estimated_seconds(session, result), epoch_price=epoch_price,
                    price=epoch_price * plan.epochs, balance=credits.spendable(session, settings, user.id),
                    memory=memory and MemoryOut(total_gib=round(memory.total, 1), measured=memory.measured,
                                                parts={k: round(v, 2) for k, v in memory.parts.items()},
                                                summary=result.memory_summary),
                    warnings=result.warnings,
                    errors=result.errors)


@router.post("/jobs", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def create_job(body: JobIn, request: Request, user: CurrentUser, session: SessionDep,
               settings: SettingsDep) -> dict[str, Any]:
    job = service.create_job(body, user.id, session, settings, request)
    return service.job_view(session, settings, job.id, user.id)


@router.get("/jobs", response_model=list[JobSummary])
def list_jobs(user: CurrentUser, session: SessionDep, settings: SettingsDep, page: PageDep) -> list[dict[str, Any]]:
    return service.job_summaries(session, settings, user.id, page)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return service.job_view(session, settings, job_id, user.id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    service.cancel_job(session, job, settings)
    return service.job_view(session, settings, job.id, job.owner_id)


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(job: OwnedJob, session: SessionDep, storage: StorageDep) -> Response:
    """A finished job with its epochs, previews, sweeps and stored state; published models of it must go first."""
    service.delete_job(session, storage, job)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/jobs/{job_id}/retrain", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def retrain(job: OwnedJob, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep,
            changes: RetrainIn | None = None) -> dict[str, Any]:
    """A new job (pro mode) from this one's parameters, with the given changes."""
    new = service.retrain_job(session, job, changes or RetrainIn(), settings, request)
    return service.job_view(session, settings, new.id, user.id)


@router.post("/jobs/{job_id}/continue", response_model=JobOut)
def continue_training(job: OwnedJob, body: ContinueIn, request: Request, user: CurrentUser, session: SessionDep,
                      settings: SettingsDep) -> dict[str, Any]:
    """Train a finished job further from its stored state: the epochs keep their numbers, the optimizer its moments."""
    service.continue_job(session, job, body, settings, request)
    return service.job_view(session, settings, job.id, user.id)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(job: OwnedJob, session: SessionDep, settings: SettingsDep,
                     request: Request) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `progress`, `epoch`, `log` and `status` as they happen; the stream ends with the job."""
    session.close()  # the stream may last hours: it must not hold a pooled connection
    async for event in job_stream(settings, job.id, request, request.app.state.sse_interval_s):
        yield event
