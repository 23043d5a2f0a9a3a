"""Training jobs: estimate, create (now or in the off-peak window), list, status, live events, cancel, retrain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, bindparam, func, select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, OwnedJob, SessionDep, SettingsDep, StorageDep, not_found
from api.live import job_stream
from api.routes import API_PREFIX
from api.routes.datasets import selected_images
from api.schemas import ContinueIn, Estimate, JobIn, JobOut, JobSummary, RetrainIn
from api.training import CONTINUE_KEYS, EMPTY_PLAN, FAMILY_KEYS, Assessment, assess, estimated_seconds
from core import jobs as transitions
from core import keys
from core.db import read_rows
from core.events import notices_for
from core.models import (
    FINISHED,
    Conversion,
    Dataset,
    Epoch,
    Generation,
    Image,
    Job,
    JobStatus,
    PublishedModel,
    Sweep,
    utcnow,
)
from core.queue import TRAIN_TASK, send
from core.settings import Settings
from trainer.networks.spec import NetworkSpec, network_type_of

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])


def _dataset_for(body: JobIn, user_id: str, session: Session) -> tuple[Dataset, list[Image]]:
    dataset = session.get(Dataset, body.dataset_id)
    if dataset is None or dataset.owner_id != user_id:
        raise not_found("dataset")
    return dataset, selected_images(session, dataset, None)


def _assess(body: JobIn, user_id: str, session: Session, settings: Settings,
            service: dict[str, Any] | None = None) -> Assessment:
    dataset, images = _dataset_for(body, user_id, session)
    return assess(settings.model_named(body.base_model), body.base_model, body.mode, body.preset, body.params,
                  dataset, images, body.sample_prompts, body.repeats, service)


@router.post("/jobs/estimate")
def estimate(body: JobIn, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Estimate:
    result = _assess(body, user.id, session, settings)
    plan = result.plan or EMPTY_PLAN
    config = result.config
    return Estimate(steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs, total_steps=plan.total_steps,
                    train_images=result.train_images, train_samples=plan.train_samples, reg_samples=plan.reg_samples,
                    batch_size=config.train_batch_size if config else 1,
                    gradient_accumulation_steps=config.gradient_accumulation_steps if config else 1,
                    tonight_starts_at=next_off_peak(utcnow(), settings.off_peak_start_hour),
                    estimated_seconds=estimated_seconds(session, result), warnings=result.warnings,
                    errors=result.errors)


def next_off_peak(now: datetime, start_hour: int) -> datetime:
    start = now.replace(hour=start_hour, minute=0, second=0, microsecond=0)
    return start if start > now else start + timedelta(days=1)


def enqueue(request: Request, session: Session, job_id: str) -> None:
    """The job is stored first; if the broker is down now, the reconciler's outbox sends its message later."""
    if send(request.app.state.celery, TRAIN_TASK, job_id):
        transitions.mark_sent(session, job_id)
        session.commit()


def _room_to_wait(session: Session, user_id: str, settings: Settings) -> None:
    """429 when the user already has as many jobs waiting (queued or scheduled) as one user may."""
    waiting = transitions.owner_load(session, user_id).waiting
    if waiting >= settings.max_waiting_jobs_per_user:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"you have {waiting} jobs waiting to start, as many as one user may "
                            f"({settings.max_waiting_jobs_per_user}): cancel one or let one start first")


def _create(body: JobIn, user_id: str, session: Session, settings: Settings, request: Request) -> Job:
    _room_to_wait(session, user_id, settings)
    result = _assess(body, user_id, session, settings)
    if result.errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"message": "the parameters have problems",
                                                                     "errors": result.errors})
    if body.repeats is not None:  # the job runs with what the estimate counted
        dataset = session.get(Dataset, body.dataset_id)
        if dataset is not None:
            dataset.default_repeats = body.repeats
    start_after = body.start_after
    if start_after == "tonight":
        start_after = next_off_peak(utcnow(), settings.off_peak_start_hour)
    scheduled = isinstance(start_after, datetime) and start_after > utcnow()
    job = Job(owner_id=user_id, dataset_id=body.dataset_id, name=body.name, base_model=body.base_model,
              mode=body.mode, preset=body.preset, params=result.values, sample_prompts=body.sample_prompts,
              status=JobStatus.scheduled if scheduled else JobStatus.queued,
              start_after=start_after if scheduled else None, queued_at=None if scheduled else utcnow(),
              total_steps=result.plan.total_steps, epochs_total=result.plan.epochs,
              estimated_s=estimated_seconds(session, result))
    session.add(job)
    session.commit()
    if not scheduled:
        enqueue(request, session, job.id)
    return job


def _columns_for(view: type[BaseModel]) -> list[ColumnElement[Any]]:
    return [column for column in Job.__table__.c if column.key in view.model_fields]


# Answers about jobs select just the columns they show, as rows: loading entities into the session would cost more than
# the query. FastAPI validates the rows against the response model once, on the way out.
_OWN_JOBS = (select(*_columns_for(JobSummary)).where(Job.owner_id == bindparam("owner_id"))
             .order_by(Job.created_at.desc()))
_OWN_JOB = select(*_columns_for(JobOut)).where(Job.id == bindparam("job_id"), Job.owner_id == bindparam("owner_id"))


def _live_fields(job: Row[Any], session: Session,
                 slots: dict[str, transitions.QueueSlot] | None) -> dict[str, Any]:
    """Progress, and for a queued job its place and times in the queue (`slots`: the whole queue, read once)."""
    progress = 1.0 if job.status == JobStatus.succeeded else (job.step / job.total_steps if job.total_steps else 0.0)
    fields: dict[str, Any] = {"progress": round(progress, 4)}
    slot = slots.get(job.id) if slots is not None else transitions.queue_slot(session, job)
    if slot is not None:
        fields.update(queue_position=slot.position, starts_in_s=slot.starts_in_s, eta_s=slot.ends_in_s)
    return fields


def job_view(session: Session, job_id: str, owner_id: str) -> dict[str, Any]:
    """A job as its page shows it (a JobOut's fields, with progress and queue place); 404 when not the owner's."""
    row = read_rows(session, _OWN_JOB, {"job_id": job_id, "owner_id": owner_id}).first()
    if row is None:
        raise not_found("job")
    return {**row._asdict(), **_live_fields(row, session, None),
            "network_type": network_type_of(NetworkSpec.of_job(row.params))}


@router.post("/jobs", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def create_job(body: JobIn, request: Request, user: CurrentUser, session: SessionDep,
               settings: SettingsDep) -> dict[str, Any]:
    return job_view(session, _create(body, user.id, session, settings, request).id, user.id)


@router.get("/jobs", response_model=list[JobSummary])
def list_jobs(user: CurrentUser, session: SessionDep) -> list[dict[str, Any]]:
    rows = read_rows(session, _OWN_JOBS, {"owner_id": user.id}).all()
    waiting = any(row.status == JobStatus.queued for row in rows)
    slots = transitions.queue_slots(session) if waiting else {}
    return [{**row._asdict(), **_live_fields(row, session, slots)} for row in rows]


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return job_view(session, job_id, user.id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    outcome = transitions.cancel(session, job.id)
    session.commit()
    if outcome == "finished":
        session.refresh(job)
        raise HTTPException(status.HTTP_409_CONFLICT, f"job already {job.status}")
    notices_for(settings.redis_url).changed(job.id)
    return job_view(session, job.id, job.owner_id)


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(job: OwnedJob, session: SessionDep, storage: StorageDep) -> Response:
    """A finished job with its epochs, previews, sweeps and stored state; published models of it must go first."""
    if job.status not in FINISHED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the job is {job.status}: cancel it first")
    if session.scalar(select(PublishedModel.id).where(PublishedModel.job_id == job.id)):
        raise HTTPException(status.HTTP_409_CONFLICT, "a published model comes from this job: unpublish it first")
    prefixes = [keys.job_prefix(job.owner_id, job.id), *(keys.sweep_prefix(job.owner_id, s) for s in
                session.scalars(select(Sweep.id).where(Sweep.job_id == job.id)))]
    files = [key for keys_ in session.scalars(select(Generation.image_keys).where(Generation.job_id == job.id))
             for key in keys_]
    files += [key for key in session.scalars(select(Conversion.file_key).where(Conversion.job_id == job.id)) if key]
    session.delete(job)
    session.commit()
    for prefix in prefixes:
        storage.delete_prefix(prefix)
    for key in files:
        storage.delete(key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/jobs/{job_id}/retrain", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def retrain(job: OwnedJob, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep,
            changes: RetrainIn | None = None) -> dict[str, Any]:
    """A new job (pro mode) from this one's parameters, with the given changes."""
    changes = changes or RetrainIn()
    params = {k: v for k, v in job.params.items() if k not in FAMILY_KEYS | CONTINUE_KEYS}
    params.update(changes.params)
    body = JobIn(dataset_id=job.dataset_id, base_model=changes.base_model or job.base_model,
                 name=changes.name or job.name, mode="pro", preset=None, params=params,
                 sample_prompts=job.sample_prompts if changes.sample_prompts is None else changes.sample_prompts,
                 start_after=changes.start_after, repeats=changes.repeats)
    return job_view(session, _create(body, user.id, session, settings, request).id, user.id)


@router.post("/jobs/{job_id}/continue", response_model=JobOut)
def continue_training(job: OwnedJob, body: ContinueIn, request: Request, user: CurrentUser, session: SessionDep,
                      settings: SettingsDep) -> dict[str, Any]:
    """Train a finished job further from its stored state: the epochs keep their numbers, the optimizer its moments."""
    if job.status not in transitions.CONTINUABLE:
        raise HTTPException(status.HTTP_409_CONFLICT, f"only a succeeded or canceled job can continue; this one is "
                                                      f"{job.status}")
    if not job.state_key:
        raise HTTPException(status.HTTP_409_CONFLICT, "no epoch of this job was stored, so there is no state to "
                                                      "continue from: retrain it instead")
    _room_to_wait(session, user.id, settings)
    stored = session.scalar(select(func.max(Epoch.n)).where(Epoch.job_id == job.id)) or 0
    steps_done = stored * (job.total_steps // max(job.epochs_total, 1))  # where the stored state was taken
    params = {k: v for k, v in job.params.items() if k not in FAMILY_KEYS | CONTINUE_KEYS}
    params["max_train_epochs"] = stored + body.epochs
    plan = JobIn(dataset_id=job.dataset_id, base_model=job.base_model, name=job.name, mode="pro", preset=None,
                 params=params, sample_prompts=job.sample_prompts)
    restart = {"lr_restart_step": steps_done} if body.schedule == "restart" else {}
    result = _assess(plan, user.id, session, settings, service=restart)
    if result.errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"message": "the job cannot continue as asked",
                                                                     "errors": result.errors})
    done = min(steps_done, result.plan.total_steps)
    whole = estimated_seconds(session, result)
    left = whole * (1 - done / result.plan.total_steps) if whole is not None else None
    if not transitions.reopen(session, job.id, params=result.values, total_steps=result.plan.total_steps,
                              epochs_total=result.plan.epochs, estimated_s=left):
        raise HTTPException(status.HTTP_409_CONFLICT, "the job changed meanwhile; reload it")
    session.commit()
    enqueue(request, session, job.id)
    notices_for(settings.redis_url).changed(job.id)
    return job_view(session, job.id, user.id)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(job: OwnedJob, session: SessionDep, settings: SettingsDep,
                     request: Request) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `progress`, `epoch`, `log` and `status` as they happen; the stream ends with the job."""
    session.close()  # the stream may last hours: it must not hold a pooled connection
    async for event in job_stream(settings, job.id, request, request.app.state.sse_interval_s):
        yield event
