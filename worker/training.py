"""One training attempt of a job, from claim to final status. Called by the Celery task; testable without Celery."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from core import screening
from core.db import session_factory
from core.estimates import RunShape, record
from core.events import notices_for
from core.jobs import claim_next, finish, requeue, transition
from core.kohya_layout import held_out
from core.models import Dataset, Epoch, Image, Job, JobStatus
from core.placement import Capacity
from core.settings import Settings
from core.storage import Storage
from core.storage_retry import StorageUnavailable
from worker.materialise import materialise
from worker.presence import owned_gpus
from worker.runner import AttemptSuperseded, Heartbeat, ServiceCallbacks

if TYPE_CHECKING:
    from trainer.job.config import TrainConfig
    from trainer.training.loop import TrainResult

log = logging.getLogger(__name__)


def train_config_values(job: Job, settings: Settings, data_dir: Path, reg_dir: Path | None, out_dir: Path,
                        resume: Path | None, validation_dir: Path | None = None, masks_dir: Path | None = None) -> dict:
    model = settings.offered_model(job.base_model)
    values = dict(job.params)
    values.update(pretrained_model_name_or_path=model.location, train_data_dir=str(data_dir),
                  reg_data_dir=str(reg_dir) if reg_dir else None, output_dir=str(out_dir), output_name=job.name,
                  sample_prompts=list(job.sample_prompts) or None, save_state=True, save_model_as="safetensors",
                  resume=str(resume) if resume else None,
                  validation_data_dir=str(validation_dir) if validation_dir else None,
                  conditioning_data_dir=str(masks_dir) if masks_dir else None)
    return values


def download_state(storage: Storage, prefix: str, target: Path) -> Path:
    for key in storage.list_keys(prefix):
        storage.download_to(key, target / key.removeprefix(prefix))
    return target


def run_training(settings: Settings, storage: Storage, trigger_id: str, worker: str) -> str:
    """Runs one attempt of the fairest queued job; returns its final status, or "idle" when nothing is queued.

    A train message is a turn on a GPU rather than a claim on one job: it was sent when `trigger_id` was queued, but
    the worker takes whichever queued job is next in the fair order. Every queued job has sent one message, so each
    still gets its turn; messages left over (duplicate deliveries, canceled jobs) find nothing to do.
    """
    from trainer.families import FAMILIES
    from trainer.job.config import ConfigError, TrainConfig, build_config
    from trainer.training.ranks import RankLost, train_processes

    factory = session_factory(settings.db_url)
    with factory() as session:
        job_id = claim_next(session, worker, settings.max_running_jobs_per_user, Capacity.of(owned_gpus(settings)))
        session.commit()
        if job_id is None:
            log.info("train message for job %s: nothing queued that fits this worker (a duplicate delivery, a "
                     "canceled job, or one that needs other GPUs); skipping", trigger_id)
            return "idle"
        job = session.get(Job, job_id)
        dataset = session.get(Dataset, job.dataset_id)
        left_out = screening.untrainable_images(session, dataset.id)  # held, refused or not screened yet
        images = [i for i in session.scalars(select(Image).where(Image.dataset_id == dataset.id))
                  if i.id not in left_out]
    started = time.monotonic()
    scratch = settings.scratch.resolve() / job_id / f"attempt-{job.attempt}"
    notices = notices_for(settings.redis_url)
    notices.changed(job_id)
    attempt = job.attempt
    beat = Heartbeat(settings.db_url, job_id, attempt, settings.heartbeat_s, notices)
    beat.start()
    callbacks = ServiceCallbacks(settings, job, storage, beat)
    try:
        callbacks.on_log(f"attempt {job.attempt} on {worker}, in process {os.getpid()}")
        if left_out:
            callbacks.on_log(f"{len(left_out)} image(s) left out: not allowed by the site's screening (yet)")
        seed = job.params.get("seed", TrainConfig.model_fields["seed"].default)
        held = held_out(images, job.params.get("validation_split") or 0.0, seed)
        reads = FAMILIES[job.params["model_family"]].captions
        data = materialise(dataset, images, storage, scratch / "dataset", job.name, held, reads,
                           with_masks=bool(job.params.get("masked_loss")))
        resume = download_state(storage, job.state_key, scratch / "resume") if job.state_key else None
        cfg = build_config(train_config_values(job, settings, data.train_dir, data.reg_dir, scratch / "out", resume,
                                               data.validation_dir, data.masks_dir))
        result = train_processes(cfg, callbacks)
        if beat.lost.is_set():
            raise AttemptSuperseded(f"job {job_id}: attempt {attempt} was superseded")
        with factory() as session:
            if result.stopped:
                return _end(session, job_id, attempt, JobStatus.canceled)
            stored = set(session.scalars(select(Epoch.n).where(Epoch.job_id == job_id)))
            missing = sorted(set(callbacks.saved_epochs) - stored)
            # a crash after the last epoch resumes with nothing left to train: its epochs are all stored already
            if missing or (result.final_path is None and result.epochs not in stored):
                raise RuntimeError(f"training ended but epochs {missing or 'final'} were not stored")
            if resume is None and callbacks.step_intervals:  # a whole run from the start: a measurement
                _measured(session, job, cfg, result, callbacks, started)
            return _end(session, job_id, attempt, JobStatus.succeeded, step=result.steps)
    except StorageUnavailable as exc:  # not the job's fault: it resumes from its last stored epoch
        callbacks.on_log(f"interrupted: {exc}; the job goes back to the queue and resumes")
        with factory() as session:
            moved = transition(session, job_id, JobStatus.running, JobStatus.interrupted, attempt=attempt,
                               error=f"{exc}; it resumes from its last stored epoch")
            session.commit()
        return JobStatus.interrupted if moved else "superseded"
    except RankLost as exc:  # like a lost worker: the job resumes from its last stored epoch
        callbacks.on_log(f"interrupted: {exc}")
        with factory() as session:
            moved = requeue(session, job_id, attempt, settings.max_attempts, str(exc))
            session.commit()
        return moved or "superseded"
    except AttemptSuperseded:
        log.warning("job %s: attempt %s was superseded by a newer one; it wrote nothing more", job_id, attempt)
        return "superseded"
    except ConfigError as exc:
        return _fail(factory, job_id, attempt, "invalid parameters: " + "; ".join(exc.messages), callbacks)
    except Exception as exc:  # stored readably for the user; the traceback goes to the worker log
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        return _fail(factory, job_id, attempt, user_message(exc), callbacks)
    finally:
        beat.stop()
        notices.changed(job_id)
        remove_scratch(scratch)


def _measured(session, job: Job, cfg: TrainConfig, result: TrainResult,  # noqa: ANN001
              callbacks: ServiceCallbacks, started: float) -> None:
    """What this run teaches the estimator: the median step (epoch ends are the rare long intervals), the time
    before the first step, and the rest as the epochs' ends."""
    step_s = statistics.median(callbacks.step_intervals)
    setup_s = max(0.0, (callbacks.first_step_at or started) - started - step_s)
    record(session, RunShape.of(job.params["model_family"], cfg), result.steps, result.epochs, setup_s, step_s,
           time.monotonic() - started)


def remove_scratch(scratch: Path) -> None:
    """Removes this attempt's own folder, and the job's folder only once no other attempt has one there: a newer
    attempt of the same job on this machine may be training from its own folder beside it."""
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(OSError):
        scratch.parent.rmdir()


def user_message(exc: Exception) -> str:
    """What the job page says: the exception in words, but never a storage endpoint, bucket or key."""
    if type(exc).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3")):
        return f"the file storage refused an operation ({type(exc).__name__}); see the worker log"
    return f"{type(exc).__name__}: {exc}"


def _end(session, job_id: str, attempt: int, status: JobStatus, **values: object) -> str:  # noqa: ANN001
    """This attempt's final status, if it still owns the job."""
    moved = finish(session, job_id, attempt, status, **values)
    session.commit()
    if moved:
        return status
    log.warning("job %s: attempt %s ended as %s, but a newer attempt owns the job", job_id, attempt, status)
    return "superseded"


def _fail(factory, job_id: str, attempt: int, message: str, callbacks: ServiceCallbacks) -> str:  # noqa: ANN001
    callbacks.on_log(f"failed: {message}")
    with factory() as session:
        return _end(session, job_id, attempt, JobStatus.failed, error=message)
