"""The workers as they last reported themselves (worker/presence.py): who is alive, and their GPUs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Worker, utcnow
from core.queue import TRAIN_QUEUE
from core.settings import Settings


def live_workers(session: Session, settings: Settings) -> list[Worker]:
    """Workers heard from within the heartbeat timeout (one that stopped on purpose took itself off the list)."""
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    return list(session.scalars(select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.name)))


def training_gpus_mib(session: Session, settings: Settings) -> list[int]:
    """The memory of each GPU the live training workers reported, in MiB."""
    return [int(gpu["memory_total_mb"]) for worker in live_workers(session, settings) if TRAIN_QUEUE in worker.queues
            for gpu in worker.gpus if gpu.get("memory_total_mb")]
