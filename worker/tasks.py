"""Celery tasks. They take ids only; the database holds everything else."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from core.queue import (
    CONVERT_TASK,
    DATASET_TASK,
    GENERATE_TASK,
    RECONCILE_TASK,
    SCREEN_TASK,
    SWEEP_TASK,
    TRAIN_TASK,
    WEBHOOK_TASK,
    send,
)
from core.reconcile import announce_ended, queued_jobs_left, reconcile
from core.storage import storage_for
from core.storage_retry import PatientStorage
from core.webhooks import DeliveryError
from worker.app import celery, settings
from worker.attempt import run_attempt
from worker.conversion import run_conversion
from worker.dataset_tasks import run_dataset_task
from worker.generation import MODELS, run_generation
from worker.screening import run_screening
from worker.sweep import run_sweep
from worker.webhook import deliver


@lru_cache(maxsize=1)
def _storage() -> PatientStorage:
    return PatientStorage(storage_for(settings), settings.storage_retry_s)


@celery.task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
             time_limit=settings.job_time_limit_s + 300, soft_time_limit=settings.job_time_limit_s)
def train_job(self, job_id: str) -> str:  # noqa: ANN001
    # No Celery retry: a lost worker is repaired by `reconcile`, which resumes from the last stored state.
    MODELS.clear()  # the training turn gets the whole GPU
    status = run_attempt(settings, job_id, self.request.hostname or "worker")
    announce_ended(settings, lambda ended: send(celery, WEBHOOK_TASK, ended))  # now, not at the next reconcile
    if status != "idle" and queued_jobs_left(settings):
        # a turn for a job passed over while its owner was at the running limit: its own message was used up
        send(celery, TRAIN_TASK, job_id)
    return status


@celery.task(name=GENERATE_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=900, soft_time_limit=840)
def generate(generation_id: str) -> str:
    return run_generation(settings, _storage(), generation_id)


@celery.task(name=SWEEP_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=3600, soft_time_limit=3540)
def sweep(sweep_id: str) -> str:
    """An epoch × weight grid for a job (see worker.sweep)."""
    return run_sweep(settings, _storage(), sweep_id)


@celery.task(name=CONVERT_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=1800, soft_time_limit=1740)
def to_plain_lora(conversion_id: str) -> str:
    """An epoch as a plain LoRA of a chosen rank (see worker.conversion)."""
    return run_conversion(settings, _storage(), conversion_id)


@celery.task(name=RECONCILE_TASK, time_limit=120, soft_time_limit=100)
def reconcile_jobs() -> dict[str, list[str]]:
    repairs = reconcile(settings, lambda job_id: send(celery, TRAIN_TASK, job_id),
                        lambda job_id: send(celery, WEBHOOK_TASK, job_id),
                        lambda screening_id: send(celery, SCREEN_TASK, screening_id))
    return {"requeued": repairs.requeued, "failed": repairs.failed, "started": repairs.started,
            "resent": repairs.resent, "rescreened": repairs.rescreened}


@celery.task(name=DATASET_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=4 * 3600, soft_time_limit=4 * 3600 - 60)
def dataset_task(task_id: str) -> str:
    """Auto-tagging or focus crops over a dataset; safe to run twice (see worker.dataset_tasks)."""
    return run_dataset_task(settings, _storage(), task_id)


@celery.task(name=SCREEN_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=300, soft_time_limit=280)
def screen_file(screening_id: str) -> str:
    """One uploaded file through the site's screening (see worker.screening)."""
    return run_screening(settings, _storage(), screening_id)


@celery.task(name=WEBHOOK_TASK, bind=True, acks_late=True, max_retries=settings.webhook_tries - 1,
             time_limit=120, soft_time_limit=100)
def deliver_webhook(self, job_id: str) -> str:  # noqa: ANN001
    """A job's end, posted to its owner's webhook; tried again after 5 s, 10 s, 20 s … (webhook_tries in all)."""
    tries = self.request.retries
    try:
        return deliver(settings, job_id, tries + 1, last_try=tries >= self.max_retries)
    except DeliveryError as exc:
        raise self.retry(exc=exc, countdown=settings.webhook_first_wait_s * 2**tries) from exc
