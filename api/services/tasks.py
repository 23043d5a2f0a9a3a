"""Dataset tasks (auto-tagging, focus crops): stored, queued on the cpu queue, and shown with what they wait for."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session

from api.deps import dispatch_task
from api.errors import Conflict
from api.schemas import AutotagRequest, CaptionRequest, CropRequest, MaskRequest, TaskOut
from api.services.datasets import selected_images
from api.waiting import CPU_TASKS, waiting_for
from core import screening
from core.captioners import find_captioner, no_captioner_message
from core.geometry import center_box
from core.models import Dataset, DatasetTask
from core.queue import DATASET_TASK
from core.settings import Settings
from core.taggers import find_tagger, no_tagger_message


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


def screen_pending(request: Request, session: Session, settings: Settings, dataset: Dataset) -> DatasetTask | None:
    """The dataset's images waiting for the site's screening go to the cpu queue (also those a queue outage left
    waiting before)."""
    image_ids = screening.pending_images(session, dataset.id) if settings.screen_tagger else []
    if not image_ids:
        return None
    return queue_task(request, session, dataset, "screen", {"image_ids": image_ids, "on_upload": True})


def crop(session: Session, dataset: Dataset, body: CropRequest, request: Request) -> int | DatasetTask:
    """Crop boxes for the chosen images: centred ones at once (how many changed), or a focus-crop task that looks
    for each image's subject on the cpu queue. Nothing is cut: boxes apply when the dataset is used."""
    images = selected_images(session, dataset, body.image_ids)
    if body.family is not None:
        dataset.crop_family = body.family
        session.commit()
    if body.mode == "focus":
        params = {"width": body.width, "height": body.height, "image_ids": body.image_ids}
        return queue_task(request, session, dataset, "focus_crop", params)
    for image in images:
        image.crop = center_box(image.width, image.height, body.width, body.height)
    session.commit()
    return len(images)


def queue_caption(session: Session, settings: Settings, dataset: Dataset, body: CaptionRequest,
                  request: Request) -> DatasetTask:
    """A captioning task with the named (or the first installed) captioner; 409 when there is none to use."""
    entry = find_captioner(settings, body.captioner)
    return _queue_labeling(request, session, dataset, "caption", body, "captioner", entry and entry.name,
                           no_captioner_message(settings))


def queue_autotag(session: Session, settings: Settings, dataset: Dataset, body: AutotagRequest,
                  request: Request) -> DatasetTask:
    """An auto-tagging task with the named (or the first installed) tagger; 409 when there is none to use."""
    entry = find_tagger(settings, body.tagger)
    return _queue_labeling(request, session, dataset, "autotag", body, "tagger", entry and entry.name,
                           no_tagger_message(settings))


def queue_masks(session: Session, dataset: Dataset, body: MaskRequest, request: Request) -> DatasetTask:
    """A task that makes masks from each image's subject or faces (404 naming any image not in this dataset)."""
    selected_images(session, dataset, body.image_ids)
    return queue_task(request, session, dataset, "mask", body.model_dump())


def _queue_labeling(request: Request, session: Session, dataset: Dataset, kind: str,
                    body: AutotagRequest | CaptionRequest, field: str, found: str | None, setup: str) -> DatasetTask:
    """A task run by one of the server's labelers (`field` names it in the request; `found` is the one found)."""
    asked = getattr(body, field)
    if found is None:
        message = setup if asked is None else (
            f"{field} {asked!r} is not on this server; GET /api/v1/{field}s lists those that are")
        raise Conflict(message, [{"field": field, "message": message}])
    selected_images(session, dataset, body.image_ids)  # 404 naming any image not in this dataset
    return queue_task(request, session, dataset, kind, {**body.model_dump(), field: found})
