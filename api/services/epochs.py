"""A job's stored epochs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import NotFound
from core.models import Epoch, Job


def find_epoch(job: Job, n: int, session: Session) -> Epoch:
    epoch = session.scalar(select(Epoch).where(Epoch.job_id == job.id, Epoch.n == n))
    if epoch is None:
        raise NotFound(f"epoch {n} not found")
    return epoch
