"""Jobs as requests change them: assessed, created (stored, then sent, then marked sent), listed with their place
in the queue, continued, deleted. The states themselves move in core/jobs.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, bindparam, delete, func, select
from sqlalchemy.orm import Session

from api.deps import Page, not_found
from api.errors import Conflict, Invalid, TooMany, not_enough_credits
from api.schemas import ContinueIn, JobIn, JobOut, JobSummary, RetrainIn
from api.services.datasets import selected_images
from api.services.workers import idle_capacities, training_capacities
from api.training import CONTINUE_KEYS, FAMILY_KEYS, Assessment, assess, estimated_seconds, place
from core import credits, keys, screening
from core import jobs as transitions
from core.db import read_rows
from core.estimates import RunShape
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
from core.placement import Capacity, Need, waiting_for
from core.queue import TRAIN_TASK, send
from core.settings import Settings
from core.storage import Storage
from trainer.networks.spec import NetworkSpec, network_type_of


def _dataset_for(body: JobIn, user_id: str, session: Session) -> tuple[Dataset, list[Image], dict[str, str]]:
    """The dataset, the images a job trains on, and those screening keeps out (with why)."""
    dataset = session.get(Dataset, body.dataset_id)
    if dataset is None or dataset.owner_id != user_id:
        raise not_found("dataset")
    left_out = screening.untrainable_images(session, dataset.id)
    return dataset, [i for i in selected_images(session, dataset, None) if i.id not in left_out], left_out


def assess_job(body: JobIn, user_id: str, session: Session, settings: Settings,
            service: dict[str, Any] | None = None) -> Assessment:
    dataset, images, left_out = _dataset_for(body, user_id, session)
    result = assess(settings.model_named(body.base_model), body.base_model, body.mode, body.preset, body.params,
                    dataset, images, body.sample_prompts, body.repeats, service)
    place(result, training_capacities(session, settings), settings.max_gpus_per_job,
          transitions.limits_of(session, user_id, settings).max_running)
    if left_out:
        said = (f"{len(left_out)} image(s) are left out until the site's screening allows them (held for review, "
                "refused, or not screened yet); the workbench says why for each")
        result.warnings.append({"field": "dataset_id", "message": said, "plain": said})
    return result


def next_off_peak(now: datetime, start_hour: int) -> datetime:
    start = now.replace(hour=start_hour, minute=0, second=0, microsecond=0)
    return start if start > now else start + timedelta(days=1)


def enqueue(request: Request, session: Session, job_id: str) -> None:
    """The job is stored first; if the broker is down now, the reconciler's outbox sends its message later."""
    transitions.deliver(session, job_id, lambda job: send(request.app.state.celery, TRAIN_TASK, job))


def room_to_wait(session: Session, user_id: str, settings: Settings) -> None:
    """429 when the user already has as many jobs waiting (queued or scheduled) as they may."""
    waiting = transitions.owner_load(session, user_id).waiting
    most = transitions.limits_of(session, user_id, settings).max_waiting
    if waiting >= most:
        raise TooMany(f"you have {waiting} jobs waiting to start, as many as you may ({most}): cancel one or let "
                      "one start first")


def epoch_price(settings: Settings, result: Assessment) -> int:
    """One epoch's price in credits for an assessed job (0 when free or not assessable)."""
    if result.plan is None or result.config is None or result.model is None:
        return 0
    return credits.epoch_price(settings, RunShape.of(result.model.family, result.config), result.plan.steps_per_epoch)


def hold_price(session: Session, settings: Settings, job: Job, epochs: int, note: str) -> None:
    """Holds `epochs` epochs of the job at its epoch price (after this month's grant); 402 with the price and the
    balance when they are more than the user has. The caller commits, or rolls back on the refusal."""
    credits.grant_monthly(session, settings, job.owner_id)
    try:
        credits.hold(session, job.owner_id, job.id, job.epoch_price * epochs, note)
    except credits.NotEnoughCredits as exc:
        session.rollback()
        raise not_enough_credits(exc) from None


def create_job(body: JobIn, user_id: str, session: Session, settings: Settings, request: Request) -> Job:
    room_to_wait(session, user_id, settings)
    result = assess_job(body, user_id, session, settings)
    if result.errors:
        raise Invalid("the parameters have problems", result.errors)
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
              estimated_s=estimated_seconds(session, result), epoch_price=epoch_price(settings, result),
              gpus=result.need.gpus, memory_mib=result.need.memory_mib)
    session.add(job)
    session.flush()
    hold_price(session, settings, job, job.epochs_total, f"{job.name}: {job.epochs_total} epochs")
    session.commit()
    if not scheduled:
        enqueue(request, session, job.id)
    return job


def _columns_for(view: type[BaseModel]) -> list[ColumnElement[Any]]:
    return [column for column in Job.__table__.c if column.key in view.model_fields]


# Answers about jobs select just the columns they show, as rows: loading entities into the session would cost more than
# the query. FastAPI validates the rows against the response model once, on the way out.
_OWN_JOBS = (select(*_columns_for(JobSummary)).where(Job.owner_id == bindparam("owner_id"))
             .order_by(Job.created_at.desc(), Job.id))


_OWN_JOB = select(*_columns_for(JobOut)).where(Job.id == bindparam("job_id"), Job.owner_id == bindparam("owner_id"))


def live_fields(job: Row[Any] | Job, session: Session, slots: dict[str, transitions.QueueSlot] | None,
                idle: list[Capacity]) -> dict[str, Any]:
    """Progress, and for a queued job its place and times in the queue (`slots`: the whole queue, read once) and
    why no worker takes it when none fits it (`idle`: the idle training workers, read once)."""
    progress = 1.0 if job.status == JobStatus.succeeded else (job.step / job.total_steps if job.total_steps else 0.0)
    fields: dict[str, Any] = {"progress": round(progress, 4)}
    slot = slots.get(job.id) if slots is not None else transitions.queue_slot(session, job)
    if slot is not None:
        fields.update(queue_position=slot.position, starts_in_s=slot.starts_in_s, eta_s=slot.ends_in_s)
    if job.status == JobStatus.queued:
        fields["waiting_for"] = waiting_for(Need(job.gpus, job.memory_mib), idle)
    return fields


def job_view(session: Session, settings: Settings, job_id: str, owner_id: str) -> dict[str, Any]:
    """A job as its page shows it (a JobOut's fields, with progress and queue place); 404 when not the owner's."""
    row = read_rows(session, _OWN_JOB, {"job_id": job_id, "owner_id": owner_id}).first()
    if row is None:
        raise not_found("job")
    idle = idle_capacities(session, settings) if row.status == JobStatus.queued else []
    return {**row._asdict(), **live_fields(row, session, None, idle),
            "network_type": network_type_of(NetworkSpec.of_job(row.params))}


def job_summaries(session: Session, settings: Settings, owner_id: str, page: Page) -> list[dict[str, Any]]:
    """A page of the owner's jobs, newest first, with progress and (for queued ones) their place in the queue."""
    rows = read_rows(session, page.of(_OWN_JOBS), {"owner_id": owner_id}).all()
    waiting = any(row.status == JobStatus.queued for row in rows)
    slots = transitions.queue_slots(session) if waiting else {}
    idle = idle_capacities(session, settings) if waiting else []
    return [{**row._asdict(), **live_fields(row, session, slots, idle)} for row in rows]


def cancel_job(session: Session, job: Job, settings: Settings) -> None:
    """Cancels a waiting or running job; 409 when it had finished already."""
    outcome = transitions.cancel(session, job.id)
    session.commit()
    if outcome == "finished":
        session.refresh(job)
        raise Conflict(f"job already {job.status}")
    notices_for(settings.redis_url).changed(job.id)


def delete_job(session: Session, storage: Storage, job: Job) -> None:
    """A finished job with its epochs, previews, sweeps and stored state, in one conditional delete (a job that
    started again or got published meanwhile stays); then its files."""
    prefixes = [keys.job_prefix(job.owner_id, job.id), *(keys.sweep_prefix(job.owner_id, s) for s in
                session.scalars(select(Sweep.id).where(Sweep.job_id == job.id)))]
    files = [key for keys_ in session.scalars(select(Generation.image_keys).where(Generation.job_id == job.id))
             for key in keys_]
    files += [key for key in session.scalars(select(Conversion.file_key).where(Conversion.job_id == job.id)) if key]
    published = select(PublishedModel.id).where(PublishedModel.job_id == job.id).exists()
    gone = session.execute(delete(Job).where(Job.id == job.id, Job.status.in_(FINISHED), ~published)
                           .execution_options(synchronize_session=False)).rowcount
    session.commit()
    if not gone:
        session.refresh(job)
        if job.status not in FINISHED:
            raise Conflict(f"the job is {job.status}: cancel it first")
        raise Conflict("a published model comes from this job: unpublish it first")
    for prefix in prefixes:
        storage.delete_prefix(prefix)
    for key in files:
        storage.delete(key)


def retrain_job(session: Session, job: Job, changes: RetrainIn, settings: Settings, request: Request) -> Job:
    """A new job (pro mode) from this one's parameters, with the given changes."""
    params = {k: v for k, v in job.params.items() if k not in FAMILY_KEYS | CONTINUE_KEYS}
    params.update(changes.params)
    body = JobIn(dataset_id=job.dataset_id, base_model=changes.base_model or job.base_model,
                 name=changes.name or job.name, mode="pro", preset=None, params=params,
                 sample_prompts=job.sample_prompts if changes.sample_prompts is None else changes.sample_prompts,
                 start_after=changes.start_after, repeats=changes.repeats)
    return create_job(body, job.owner_id, session, settings, request)


def continue_job(session: Session, job: Job, body: ContinueIn, settings: Settings, request: Request) -> None:
    """Trains a finished job further from its stored state: the epochs keep their numbers, the optimizer its
    moments. 409 when it cannot continue, 422 when the longer run has problems."""
    if job.status not in transitions.CONTINUABLE:
        raise Conflict(f"only a succeeded or canceled job can continue; this one is "
                       f"{job.status}")
    if not job.state_key:
        raise Conflict("no epoch of this job was stored, so there is no state to "
                       "continue from: retrain it instead")
    room_to_wait(session, job.owner_id, settings)
    stored = session.scalar(select(func.max(Epoch.n)).where(Epoch.job_id == job.id)) or 0
    steps_done = stored * (job.total_steps // max(job.epochs_total, 1))  # where the stored state was taken
    params = {k: v for k, v in job.params.items() if k not in FAMILY_KEYS | CONTINUE_KEYS}
    params["max_train_epochs"] = stored + body.epochs
    plan = JobIn(dataset_id=job.dataset_id, base_model=job.base_model, name=job.name, mode="pro", preset=None,
                 params=params, sample_prompts=job.sample_prompts)
    restart = {"lr_restart_step": steps_done} if body.schedule == "restart" else {}
    result = assess_job(plan, job.owner_id, session, settings, service=restart)
    if result.errors:
        raise Invalid("the job cannot continue as asked", result.errors)
    done = min(steps_done, result.plan.total_steps)
    whole = estimated_seconds(session, result)
    left = whole * (1 - done / result.plan.total_steps) if whole is not None else None
    if not transitions.reopen(session, job.id, params=result.values, total_steps=result.plan.total_steps,
                              epochs_total=result.plan.epochs, estimated_s=left,
                              epoch_price=epoch_price(settings, result)):
        raise Conflict("the job changed meanwhile; reload it")
    session.refresh(job)
    hold_price(session, settings, job, result.plan.epochs - job.charged_epochs,
               f"{job.name}: {body.epochs} more epochs")
    session.commit()
    enqueue(request, session, job.id)
    notices_for(settings.redis_url).changed(job.id)
