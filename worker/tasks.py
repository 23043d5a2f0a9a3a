"""Celery tasks. They take ids only; the database holds everything else."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from core.queue import DATASET_TASK, GENERATE_TASK, RECONCILE_TASK, SWEEP_TASK, TRAIN_TASK, send
from core.reconcile import reconcile
from core.storage import storage_for
from core.storage_retry import PatientStorage
from worker.app import celery, settings
from worker.attempt import run_attempt
from worker.dataset_tasks import run_dataset_task
from worker.generation import MODELS, run_generation
from worker.sweep import run_sweep


@lru_cache(maxsize=1)
def _storage() -> PatientStorage:
    return PatientStorage(storage_for(settings), settings.storage_retry_s)


@celery.task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
             time_limit=settings.job_time_limit_s + 300, soft_time_limit=settings.job_time_limit_s)
def train_job(self, job_id: str) -> str:  # noqa: ANN001
    # No Celery retry: a lost worker is repaired by `reconcile`, which resumes from the last stored state.
    MODELS.clear()  # the training turn gets the whole GPU
    return run_attempt(settings, job_id, self.request.hostname or "worker")


@celery.task(name=GENERATE_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=900, soft_time_limit=840)
def generate(generation_id: str) -> str:
    return run_generation(settings, _storage(), generation_id)


@celery.task(name=SWEEP_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=3600, soft_time_limit=3540)
def sweep(sweep_id: str) -> str:
    """An epoch × weight grid for a job (see worker.sweep)."""
    return run_sweep(settings, _storage(), sweep_id)


@celery.task(name=RECONCILE_TASK, time_limit=120, soft_time_limit=100)
def reconcile_jobs() -> dict[str, list[str]]:
    repairs = reconcile(settings, lambda job_id: send(celery, TRAIN_TASK, job_id))
    return {"requeued": repairs.requeued, "failed": repairs.failed, "started": repairs.started,
            "resent": repairs.resent}


@celery.task(name=DATASET_TASK, acks_late=True, autoretry_for=(OperationalError,), max_retries=2,
             retry_backoff=True, time_limit=4 * 3600, soft_time_limit=4 * 3600 - 60)
def dataset_task(task_id: str) -> str:
    """Auto-tagging or focus crops over a dataset; safe to run twice (see worker.dataset_tasks)."""
    return run_dataset_task(settings, _storage(), task_id)
