"""The workers as they last reported themselves (worker/presence.py): who is alive, and their GPUs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Job, JobStatus, Worker, utcnow
from core.placement import Capacity
from core.queue import TRAIN_QUEUE
from core.settings import Settings


def live_workers(session: Session, settings: Settings) -> list[Worker]:
    """Workers heard from within the heartbeat timeout (one that stopped on purpose took itself off the list)."""
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    return list(session.scalars(select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.name)))


def training_workers(session: Session, settings: Settings) -> list[Worker]:
    return [worker for worker in live_workers(session, settings) if TRAIN_QUEUE in worker.queues]


def training_capacities(session: Session, settings: Settings) -> list[Capacity]:
    """What each live training worker offers a job: its GPUs as it last reported them."""
    return [Capacity.of(worker.gpus) for worker in training_workers(session, settings)]


def idle_capacities(session: Session, settings: Settings) -> list[Capacity]:
    """The live training workers that train nothing now (a worker trains one job at a time)."""
    busy = set(session.scalars(select(Job.worker).where(Job.status == JobStatus.running)))
    return [Capacity.of(worker.gpus) for worker in training_workers(session, settings) if worker.name not in busy]
