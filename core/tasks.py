"""The lifecycle of the light task rows: dataset tasks, test generations, sweeps and plain-LoRA copies.

queued → running → succeeded | failed, and queued → failed when its message could not be sent. Every change is one
conditional UPDATE, as core/jobs.py does for jobs: a row moves only from the states it may leave, so a redelivered
message cannot restart a task that ended, nor end one twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.models import TaskRow, TaskStatus, utcnow

OPEN = (TaskStatus.queued, TaskStatus.running)


def _move(session: Session, table: type[TaskRow], row_id: str, sources: Iterable[TaskStatus], target: TaskStatus,
          **values: object) -> bool:
    moved = session.execute(update(table).where(table.id == row_id, table.status.in_(list(sources)))
                            .values(status=target, **values).execution_options(synchronize_session=False))
    return moved.rowcount == 1


def start(session: Session, table: type[TaskRow], row_id: str, **values: object) -> bool:
    """queued → running (running again when a worker took over a redelivered message); False once it ended."""
    return _move(session, table, row_id, OPEN, TaskStatus.running, **values)


def finish(session: Session, table: type[TaskRow], row_id: str, status: TaskStatus, **values: object) -> bool:
    """An open task's end, succeeded or failed, with what it made or the error; False when it had ended already."""
    if status not in (TaskStatus.succeeded, TaskStatus.failed):
        raise ValueError(f"a task ends succeeded or failed, not {status}")
    if "finished_at" in table.__table__.c:  # the tables that keep when their task ended
        values.setdefault("finished_at", utcnow())
    return _move(session, table, row_id, OPEN, status, **values)


def unsent(session: Session, table: type[TaskRow], row_id: str, error: str) -> bool:
    """queued → failed: its message could not be sent, so nothing would ever run it."""
    return _move(session, table, row_id, (TaskStatus.queued,), TaskStatus.failed, error=error)
