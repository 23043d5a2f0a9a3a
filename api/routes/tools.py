"""Dataset tools: crop boxes (centre at once, focus on the cpu queue), auto-tagging, captioning, masks, and their
tasks' progress."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import CurrentUser, OwnedDataset, PageDep, SessionDep, SettingsDep, owned
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import AutotagRequest, CaptionerOut, CaptionRequest, CropRequest, MaskRequest, TaggerOut, TaskOut
from api.services.tasks import crop, queue_autotag, queue_caption, queue_masks, task_out
from core.captioners import list_captioners, no_captioner_message
from core.models import DatasetTask
from core.taggers import list_taggers, no_tagger_message

router = APIRouter(prefix=API_PREFIX, tags=["dataset tools"], responses=ERROR_RESPONSES)
NO_TAGGER_FOR_USERS = ("Automatic tagging is not available on this server yet, so new images are not tagged for you. "
                       "Add tags by hand (select images, then type tags), or ask whoever runs this server to add a "
                       "tagger.")


@router.post("/datasets/{dataset_id}/crop", response_model=None)
def crop_images(body: CropRequest, dataset: OwnedDataset, session: SessionDep,
                request: Request) -> dict[str, int] | JSONResponse:
    """Stores crop boxes; nothing is cut, the box is applied when the dataset is materialised or exported.

    `center` answers at once with the number of images changed; `focus` looks for each image's subject on the cpu
    queue and answers 202 with a task."""
    outcome = crop(session, dataset, body, request)
    if isinstance(outcome, DatasetTask):
        return JSONResponse(task_out(session, outcome).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    return {"changed": outcome}


@router.get("/taggers")
def taggers(settings: SettingsDep, _: CurrentUser) -> dict[str, object]:
    """The taggers; `message` (for users) says plainly when none can be used, `setup` tells an operator how to add
    one; `on_upload`: whether new images are tagged as they arrive."""
    entries = [TaggerOut(name=t.name, source=t.source, installed=t.installed) for t in list_taggers(settings)]
    installed = any(t.installed for t in entries)
    return {"taggers": entries, "message": None if installed else NO_TAGGER_FOR_USERS,
            "setup": None if installed else no_tagger_message(settings),
            "on_upload": installed and settings.tag_on_upload}


@router.get("/captioners")
def captioners(settings: SettingsDep, _: CurrentUser) -> dict[str, object]:
    """The vision-language captioners (sentences); `setup` tells an operator how to add one when none is
    installed (a hub one not installed yet downloads on first use where the network allows)."""
    entries = [CaptionerOut(name=c.name, source=c.source, installed=c.installed, architecture=c.architecture)
               for c in list_captioners(settings)]
    return {"captioners": entries,
            "setup": None if any(c.installed for c in entries) else no_captioner_message(settings)}


@router.post("/datasets/{dataset_id}/caption", status_code=status.HTTP_202_ACCEPTED, response_model=TaskOut)
def caption(body: CaptionRequest, dataset: OwnedDataset, session: SessionDep, settings: SettingsDep,
            request: Request) -> JSONResponse:
    """A sentence per image from a captioner, one image at a time, on the cpu queue (GET /tasks/{id} follows it)."""
    task = queue_caption(session, settings, dataset, body, request)
    return JSONResponse(task_out(session, task).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.post("/datasets/{dataset_id}/autotag", status_code=status.HTTP_202_ACCEPTED, response_model=TaskOut)
def autotag(body: AutotagRequest, dataset: OwnedDataset, session: SessionDep, settings: SettingsDep,
            request: Request) -> JSONResponse:
    task = queue_autotag(session, settings, dataset, body, request)
    return JSONResponse(task_out(session, task).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.post("/datasets/{dataset_id}/masks", status_code=status.HTTP_202_ACCEPTED, response_model=TaskOut)
def make_masks(body: MaskRequest, dataset: OwnedDataset, session: SessionDep, request: Request) -> JSONResponse:
    """A mask per image from its subject or its faces, for masked loss, on the cpu queue (GET /tasks/{id})."""
    task = queue_masks(session, dataset, body, request)
    return JSONResponse(task_out(session, task).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.get("/tasks/{task_id}")
def get_task(task_id: str, user: CurrentUser, session: SessionDep) -> TaskOut:
    return task_out(session, owned(session, DatasetTask, task_id, user.id, "task"))


@router.get("/datasets/{dataset_id}/tasks")
def dataset_tasks(dataset: OwnedDataset, session: SessionDep, page: PageDep) -> list[TaskOut]:
    """A page of the dataset's tasks, newest first."""
    rows = session.scalars(page.of(select(DatasetTask).where(DatasetTask.dataset_id == dataset.id)
                                   .order_by(DatasetTask.created_at.desc(), DatasetTask.id)))
    return [task_out(session, t) for t in rows]
