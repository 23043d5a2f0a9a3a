"""What a queued task waits for, in words: the tasks of its queue that came before it and have not ended."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import Conversion, DatasetTask, Generation, Sweep, TaskRow, TaskStatus

# the tables whose rows share one queue (and so one line of workers)
CPU_TASKS: tuple[type, ...] = (DatasetTask,)
LIGHT_TASKS: tuple[type, ...] = (Generation, Sweep, Conversion)
OPEN = (TaskStatus.queued, TaskStatus.running)


def waiting_for(session: Session, row: TaskRow, queue: tuple[type, ...]) -> str | None:
    """None once the task runs or ended; otherwise how many tasks are ahead of it on its queue."""
    if row.status != TaskStatus.queued:
        return None
    ahead = sum(session.scalar(select(func.count()).select_from(table).where(
        table.status.in_(OPEN), table.created_at < row.created_at)) or 0 for table in queue)
    if not ahead:
        return "waiting for a worker to take it (next in line)"
    return f"waiting for a free worker: {ahead} task{'s' if ahead != 1 else ''} ahead of it"
