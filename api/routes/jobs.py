"""Training jobs: estimate, create (now or in the off-peak window), list, status, live events, cancel, retrain."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, OwnedJob, SessionDep, SettingsDep
from api.live import job_stream
from api.routes.datasets import selected_images
from api.schemas import Estimate, JobIn, JobOut, RetrainIn
from api.training import EMPTY_PLAN, Assessment, assess, estimated_seconds
from core import jobs as transitions
from core.events import notices_for
from core.models import FINISHED, Dataset, Image, Job, JobStatus, utcnow
from core.queue import TRAIN_TASK
from core.settings import Settings

router = APIRouter(tags=["jobs"])


def _dataset_for(body: JobIn, user_id: str, session: Session) -> tuple[Dataset, list[Image]]:
    dataset = session.get(Dataset, body.dataset_id)
    if dataset is None or dataset.owner_id != user_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dataset not found")
    return dataset, selected_images(session, dataset, None)


def _assess(body: JobIn, user_id: str, session: Session, settings: Settings) -> Assessment:
    dataset, images = _dataset_for(body, user_id, session)
    return assess(settings.model_named(body.base_model), body.base_model, body.mode, body.preset, body.params,
                  dataset, images, body.sample_prompts)


@router.post("/jobs/estimate")
def estimate(body: JobIn, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Estimate:
    result = _assess(body, user.id, session, settings)
    plan = result.plan or EMPTY_PLAN
    return Estimate(steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs, total_steps=plan.total_steps,
                    train_samples=plan.train_samples, reg_samples=plan.reg_samples,
                    estimated_seconds=estimated_seconds(result), warnings=result.warnings, errors=result.errors)


def next_off_peak(now: datetime, start_hour: int) -> datetime:
    start = now.replace(hour=start_hour, minute=0, second=0, microsecond=0)
    return start if start > now else start + timedelta(days=1)


def enqueue(request: Request, job_id: str) -> None:
    request.app.state.celery.send_task(TRAIN_TASK, args=[job_id])


def _create(body: JobIn, user_id: str, session: Session, settings: Settings, request: Request) -> Job:
    result = _assess(body, user_id, session, settings)
    if result.errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"message": "the parameters have problems",
                                                                     "errors": result.errors})
    start_after = body.start_after
    if start_after == "tonight":
        start_after = next_off_peak(utcnow(), settings.off_peak_start_hour)
    scheduled = isinstance(start_after, datetime) and start_after > utcnow()
    job = Job(owner_id=user_id, dataset_id=body.dataset_id, name=body.name, base_model=body.base_model,
              mode=body.mode, preset=body.preset, params=result.values, sample_prompts=body.sample_prompts,
              status=JobStatus.scheduled if scheduled else JobStatus.queued,
              start_after=start_after if scheduled else None, queued_at=None if scheduled else utcnow(),
              total_steps=result.plan.total_steps, epochs_total=result.plan.epochs,
              estimated_s=estimated_seconds(result) or None)
    session.add(job)
    session.commit()
    if not scheduled:
        enqueue(request, job.id)
    return job


def job_out(job: Job, session: Session, slots: dict[str, transitions.QueueSlot] | None = None) -> JobOut:
    out = JobOut.model_validate(job)
    progress = 1.0 if job.status == JobStatus.succeeded else (job.step / job.total_steps if job.total_steps else 0.0)
    update: dict[str, Any] = {"progress": round(progress, 4)}
    slot = slots.get(job.id) if slots is not None else transitions.queue_slot(session, job)
    if slot is not None:
        update.update(queue_position=slot.position, starts_in_s=slot.starts_in_s, eta_s=slot.ends_in_s)
    return out.model_copy(update=update)


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
def create_job(body: JobIn, request: Request, user: CurrentUser, session: SessionDep,
               settings: SettingsDep) -> JobOut:
    return job_out(_create(body, user.id, session, settings, request), session)


@router.get("/jobs")
async def list_jobs(user: CurrentUser, session: SessionDep) -> list[JobOut]:
    rows = session.scalars(select(Job).where(Job.owner_id == user.id).order_by(Job.created_at.desc()))
    slots = transitions.queue_slots(session)
    return [job_out(job, session, slots) for job in rows]


@router.get("/jobs/{job_id}")
async def get_job(job: OwnedJob, session: SessionDep) -> JobOut:
    return job_out(job, session)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> JobOut:
    if job.status in FINISHED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job already {job.status}")
    waiting = [JobStatus.draft, JobStatus.scheduled, JobStatus.queued, JobStatus.interrupted]
    if transitions.transition(session, job.id, waiting, JobStatus.canceled, finished_at=utcnow()):
        notices_for(settings.redis_url).changed(job.id)
    else:
        job.cancel_requested = True  # running: the worker stops at its next step and keeps finished epochs
        session.commit()
    session.refresh(job)
    return job_out(job, session)


@router.post("/jobs/{job_id}/retrain", status_code=status.HTTP_201_CREATED)
def retrain(job: OwnedJob, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep,
            changes: RetrainIn | None = None) -> JobOut:
    """A new job (pro mode) from this one's parameters, with the given changes."""
    changes = changes or RetrainIn()
    params = {k: v for k, v in job.params.items() if k not in ("v2", "sdxl", "v_parameterization")}
    params.update(changes.params)
    body = JobIn(dataset_id=job.dataset_id, base_model=changes.base_model or job.base_model,
                 name=changes.name or job.name, mode="pro", preset=None, params=params,
                 sample_prompts=job.sample_prompts if changes.sample_prompts is None else changes.sample_prompts,
                 start_after=changes.start_after)
    return job_out(_create(body, user.id, session, settings, request), session)


@router.get("/jobs/{job_id}/events")
async def job_events(job: OwnedJob, session: SessionDep, settings: SettingsDep, request: Request) -> StreamingResponse:
    """Server-Sent Events: `progress`, `epoch`, `log` and `status` as they happen; the stream ends with the job."""
    session.close()  # the stream may last hours: it must not hold a pooled connection
    return StreamingResponse(job_stream(settings, job.id, request, request.app.state.sse_interval_s),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
