"""Dataset tasks (auto-tagging, focus crops): stored, queued on the cpu queue, and shown with what they wait for."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session

from api.deps import dispatch_task
from api.schemas import AutotagRequest, TaskOut
from api.waiting import CPU_TASKS, waiting_for
from core.models import Dataset, DatasetTask
from core.queue import DATASET_TASK
from core.settings import Settings
from core.taggers import find_tagger


def queue_task(request: Request, session: Session, dataset: Dataset, kind: str, params: dict) -> DatasetTask:
    """Stores the task and queues it on the cpu queue; GET /tasks/{id} follows it."""
    task = DatasetTask(owner_id=dataset.owner_id, dataset_id=dataset.id, kind=kind, params=params, result={})
    session.add(task)
    session.commit()
    dispatch_task(request, session, task, DATASET_TASK)
    return task


def task_out(session: Session, task: DatasetTask) -> TaskOut:
    """The task, and while it is queued, what it waits for: the cpu tasks that came before it."""
    return TaskOut.model_validate(task).model_copy(update={"on_upload": bool(task.params.get("on_upload")),
                                                          "waiting_for": waiting_for(session, task, CPU_TASKS)})


def tag_on_upload(request: Request, session: Session, settings: Settings, dataset: Dataset,
                  image_ids: list[str]) -> DatasetTask | None:
    """New images are tagged as they arrive when the server has a tagger and TAG_ON_UPLOAD is on (images that came
    with tags keep them)."""
    tagger = find_tagger(settings, None) if settings.tag_on_upload and image_ids else None
    if tagger is None:
        return None
    params = {**AutotagRequest(mode="skip_tagged", image_ids=image_ids).model_dump(), "tagger": tagger.name,
              "on_upload": True}
    return queue_task(request, session, dataset, "autotag", params)
