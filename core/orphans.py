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


def orphaned_keys(session: Session, storage: Storage, older_than_s: float, now: float | None = None) -> list[str]:
    """Keys under an owner's jobs that no epoch row, preview list or resumable state refers to (a job's whole
    folder when its row is gone), older than the grace period. One query for the rows, one listing per owner."""
    cutoff = (now if now is not None else time.time()) - older_than_s
    named: set[str] = set()
    for file_key, previews in session.execute(select(Epoch.file_key, Epoch.previews)):
        named.add(file_key)
        named.update(previews)
    states = tuple(key for key in session.scalars(select(Job.state_key).where(Job.state_key.is_not(None))))
    owners = session.scalars(select(Job.owner_id).distinct())
    found = []
    for owner in owners:
        for key, modified in storage.list_modified(keys.jobs_prefix(owner)).items():
            if modified < cutoff and key not in named and not key.startswith(states):
                found.append(key)
    return sorted(found)


def sweep_orphans(session: Session, storage: Storage, older_than_s: float, now: float | None = None) -> int:
    """Deletes the orphans; returns how many were removed."""
    orphans = orphaned_keys(session, storage, older_than_s, now)
    for key in orphans:
        storage.delete(key)
    return len(orphans)
