"""Dataset tools: crop boxes (centre at once, focus on the cpu queue), auto-tagging, and their tasks' progress."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import CurrentUser, OwnedDataset, SessionDep, SettingsDep, dispatch_task, not_found
from api.routes import API_PREFIX
from api.routes.datasets import selected_images
from api.schemas import AutotagRequest, CropRequest, TaggerOut, TaskOut
from core.geometry import center_box
from core.models import Dataset, DatasetTask
from core.queue import DATASET_TASK
from core.taggers import find_tagger, list_taggers, no_tagger_message

router = APIRouter(prefix=API_PREFIX, tags=["dataset tools"])


def start_task(request: Request, session: SessionDep, dataset: Dataset, kind: str, params: dict) -> JSONResponse:
    """Stores the task, queues it on the cpu queue and answers 202 with it; GET /tasks/{id} follows it."""
    task = DatasetTask(owner_id=dataset.owner_id, dataset_id=dataset.id, kind=kind, params=params, result={})
    session.add(task)
    session.commit()
    dispatch_task(request, session, task, DATASET_TASK)
    return JSONResponse(TaskOut.model_validate(task).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.post("/datasets/{dataset_id}/crop", response_model=None)
def crop_images(body: CropRequest, dataset: OwnedDataset, session: SessionDep,
                request: Request) -> dict[str, int] | JSONResponse:
    """Stores crop boxes; nothing is cut, the box is applied when the dataset is materialised or exported.

    `center` answers at once with the number of images changed; `focus` looks for each image's subject on the cpu
    queue and answers 202 with a task."""
    images = selected_images(session, dataset, body.image_ids)
    if body.mode == "focus":
        params = {"width": body.width, "height": body.height, "image_ids": body.image_ids}
        return start_task(request, session, dataset, "focus_crop", params)
    for image in images:
        image.crop = center_box(image.width, image.height, body.width, body.height)
    session.commit()
    return {"changed": len(images)}


@router.get("/taggers")
async def taggers(settings: SettingsDep, _: CurrentUser) -> dict[str, object]:
    entries = [TaggerOut(name=t.name, source=t.source, installed=t.installed) for t in list_taggers(settings)]
    message = None if any(t.installed for t in entries) else no_tagger_message(settings)
    return {"taggers": entries, "message": message}


@router.post("/datasets/{dataset_id}/autotag", status_code=status.HTTP_202_ACCEPTED, response_model=TaskOut)
def autotag(body: AutotagRequest, dataset: OwnedDataset, session: SessionDep, settings: SettingsDep,
            request: Request) -> JSONResponse:
    entry = find_tagger(settings, body.tagger)
    if entry is None:
        message = no_tagger_message(settings) if body.tagger is None else (
            f"tagger {body.tagger!r} is not on this server; GET /api/v1/taggers lists those that are")
        raise HTTPException(status.HTTP_409_CONFLICT, message)
    selected_images(session, dataset, body.image_ids)  # 404 naming any image not in this dataset
    params = {**body.model_dump(), "tagger": entry.name}
    return start_task(request, session, dataset, "autotag", params)


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, user: CurrentUser, session: SessionDep) -> TaskOut:
    task = session.get(DatasetTask, task_id)
    if task is None or task.owner_id != user.id:
        raise not_found("task")
    return TaskOut.model_validate(task)


@router.get("/datasets/{dataset_id}/tasks")
async def dataset_tasks(dataset: OwnedDataset, session: SessionDep) -> list[TaskOut]:
    rows = session.scalars(select(DatasetTask).where(DatasetTask.dataset_id == dataset.id)
                           .order_by(DatasetTask.created_at.desc()).limit(20))
    return [TaskOut.model_validate(t) for t in rows]
