"""Stored job files that no row refers to: a worker that died after uploading an epoch file (or its state, or a
preview) and before the transaction that records it leaves them behind. They are removed once older than a grace
period, longer than any upload-to-commit gap of a live attempt."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import keys
from core.models import Epoch, Job
from core.storage import Storage


def referenced_by(job: Job, epochs: list[Epoch]) -> tuple[set[str], str | None]:
    """The job's keys that rows point at, and the prefix of the training state it resumes from."""
    named = {epoch.file_key for epoch in epochs} | {key for epoch in epochs for key in epoch.previews}
    return named, job.state_key


def orphaned_keys(session: Session, storage: Storage, older_than_s: float, now: float | None = None) -> list[str]:
    cutoff = (now if now is not None else time.time()) - older_than_s
    found = []
    for job in session.scalars(select(Job)):
        epochs = list(session.scalars(select(Epoch).where(Epoch.job_id == job.id)))
        named, state_prefix = referenced_by(job, epochs)
        for key, modified in storage.list_modified(keys.job_prefix(job.owner_id, job.id)).items():
            if modified < cutoff and key not in named and not (state_prefix and key.startswith(state_prefix)):
                found.append(key)
    return sorted(found)


def sweep_orphans(session: Session, storage: Storage, older_than_s: float, now: float | None = None) -> int:
    """Deletes the orphans; returns how many were removed."""
    orphans = orphaned_keys(session, storage, older_than_s, now)
    for key in orphans:
        storage.delete(key)
    return len(orphans)
