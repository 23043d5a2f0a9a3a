"""Training jobs: estimate, create (now or in the off-peak window), list, status, live events, cancel, retrain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, OwnedJob, SessionDep, SettingsDep
from api.schemas import Estimate, JobIn, JobOut, RetrainIn
from api.training import EMPTY_PLAN, Assessment, assess, estimated_seconds
from core import jobs as transitions
from core.db import session_factory
from core.models import FINISHED, Dataset, Image, Job, JobStatus, utcnow
from core.queue import TRAIN_TASK
from core.settings import Settings

router = APIRouter(tags=["jobs"])


def _dataset_for(body: JobIn, user_id: str, session: Session) -> tuple[Dataset, list[Image]]:
    dataset = session.get(Dataset, body.dataset_id)
    if dataset is None or dataset.owner_id != user_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dataset not found")
    return dataset, list(session.scalars(select(Image).where(Image.dataset_id == dataset.id)))


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
              total_steps=result.plan.total_steps, epochs_total=result.plan.epochs)
    session.add(job)
    session.commit()
    if not scheduled:
        enqueue(request, job.id)
    return job


def job_out(job: Job, session: Session, positions: dict[str, int] | None = None) -> JobOut:
    out = JobOut.model_validate(job)
    progress = 1.0 if job.status == JobStatus.succeeded else (job.step / job.total_steps if job.total_steps else 0.0)
    position = positions.get(job.id) if positions is not None else transitions.queue_position(session, job)
    return out.model_copy(update={"progress": round(progress, 4), "queue_position": position})


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
def create_job(body: JobIn, request: Request, user: CurrentUser, session: SessionDep,
               settings: SettingsDep) -> JobOut:
    return job_out(_create(body, user.id, session, settings, request), session)


@router.get("/jobs")
def list_jobs(user: CurrentUser, session: SessionDep) -> list[JobOut]:
    rows = session.scalars(select(Job).where(Job.owner_id == user.id).order_by(Job.created_at.desc()))
    positions = transitions.queue_positions(session)
    return [job_out(job, session, positions) for job in rows]


@router.get("/jobs/{job_id}")
def get_job(job: OwnedJob, session: SessionDep) -> JobOut:
    return job_out(job, session)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job: OwnedJob, session: SessionDep) -> JobOut:
    if job.status in FINISHED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job already {job.status}")
    waiting = [JobStatus.draft, JobStatus.scheduled, JobStatus.queued, JobStatus.interrupted]
    if not transitions.transition(session, job.id, waiting, JobStatus.canceled, finished_at=utcnow()):
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


def _snapshot(settings: Settings, job_id: str) -> dict[str, Any]:
    with session_factory(settings.db_url)() as session:
        job = session.get(Job, job_id)
        return {"status": job.status, "step": job.step, "total_steps": job.total_steps, "loss": job.loss,
                "lr": job.lr, "eta_s": job.eta_s, "epochs": [e.n for e in job.epochs], "error": job.error}


@router.get("/jobs/{job_id}/events")
async def job_events(job: OwnedJob, settings: SettingsDep, request: Request) -> StreamingResponse:
    """Server-Sent Events: `progress`, `epoch` (one per new epoch), `status`; ends when the job is finished."""
    interval = request.app.state.sse_interval_s

    async def stream() -> AsyncIterator[str]:
        last: dict[str, Any] = {}
        while not await request.is_disconnected():
            now = await run_in_threadpool(_snapshot, settings, job.id)
            if now["step"] != last.get("step"):
                progress = {k: now[k] for k in ("step", "total_steps", "loss", "lr", "eta_s")}
                yield f"event: progress\ndata: {json.dumps(progress)}\n\n"
            for n in now["epochs"]:
                if n not in last.get("epochs", []):
                    yield f"event: epoch\ndata: {json.dumps({'n': n})}\n\n"
            if now["status"] != last.get("status"):
                yield f"event: status\ndata: {json.dumps({'status': now['status'], 'error': now['error']})}\n\n"
            last = now
            if now["status"] in FINISHED:
                return
            await asyncio.sleep(interval)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
