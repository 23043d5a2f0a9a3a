"""Dataset tasks on the cpu queue: auto-tagging, captioning, focus crops and screening, image by image, with stored
progress.

Each image's result is committed as it is made, so a task redelivered after a lost worker simply runs again: every
mode gives the same tags and boxes a second time."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import object_session

from core import masks, tasks
from core.captioners import find_captioner
from core.db import session_factory
from core.kohya_layout import image_bytes
from core.models import DatasetTask, Image, TaskStatus
from core.settings import Settings
from core.storage import Storage
from core.taggers import find_tagger
from worker.captioning import CaptionerError, CaptionOptions, load_captioner
from worker.focus_crop import focus_box, subject_boxes
from worker.screening import Shot, screen
from worker.tagging import Labeler, TaggerError, TagOptions, load_tagger

log = logging.getLogger(__name__)
BATCH = 8  # images per tagger call and per progress update


@dataclass(frozen=True)
class ImageStep:
    """What a task does to a batch of images; `wants` leaves rows out before their pictures are read."""

    apply: Callable[[list[Image], list[PILImage.Image]], None]
    cropped: bool  # the picture as trained (crop applied), or the whole stored image
    wants: Callable[[Image], bool] = lambda row: True
    batch: int = BATCH  # images per call and per progress update (a captioner: one, as each takes seconds)


def merged_tags(existing: list[str], found: list[str], mode: str) -> list[str]:
    if mode == "overwrite":
        return list(dict.fromkeys(found))
    return existing + [t for t in dict.fromkeys(found) if t not in existing]


def tagging_step(settings: Settings, params: dict, result: Counter) -> ImageStep:
    entry = find_tagger(settings, params.get("tagger"))
    if entry is None:
        raise TaggerError(f"tagger {params.get('tagger')!r} is not installed on this server")
    knobs = ("general_threshold", "character_threshold", "include_ratings", "underscores_to_spaces")
    options = TagOptions(**{k: params[k] for k in knobs}, blacklist=frozenset(params["blacklist"]))
    labeler: Labeler = load_tagger(entry, options)

    def apply(rows: list[Image], pictures: list[PILImage.Image]) -> None:
        for row, labels in zip(rows, labeler.label(pictures), strict=True):
            new = merged_tags(list(row.tags), labels.tags, params["mode"])
            result["tags_added"] += len(set(new) - set(row.tags))
            row.tags = new
            result["tagged"] += 1

    # tags describe what is trained, so the tagger sees the crop
    if params["mode"] == "skip_tagged":
        return ImageStep(apply, cropped=True, wants=lambda row: not row.tags)
    return ImageStep(apply, cropped=True)


def captioning_step(settings: Settings, params: dict, result: Counter) -> ImageStep:
    """A sentence per image from a vision-language captioner; its tags go along as hints when asked. A caption
    already there (written by hand or by an earlier run) is kept unless the mode is overwrite."""
    entry = find_captioner(settings, params.get("captioner"))
    if entry is None:
        raise CaptionerError(f"captioner {params.get('captioner')!r} is not on this server")
    knobs = ("length", "instruction", "trigger", "trigger_position")
    labeler: Labeler = load_captioner(entry, CaptionOptions(**{k: params[k] for k in knobs}))

    def apply(rows: list[Image], pictures: list[PILImage.Image]) -> None:
        hints = [list(row.tags) for row in rows] if params["tag_hints"] else None
        for row, labels in zip(rows, labeler.label(pictures, hints), strict=True):
            row.caption = labels.caption
            result["captioned"] += 1

    if params["mode"] == "skip_captioned":
        return ImageStep(apply, cropped=True, wants=lambda row: not row.caption.strip(), batch=1)
    return ImageStep(apply, cropped=True, batch=1)


def focus_step(params: dict, result: Counter) -> ImageStep:
    def apply(rows: list[Image], pictures: list[PILImage.Image]) -> None:
        for row, picture in zip(rows, pictures, strict=True):
            focus = focus_box(picture, params["width"], params["height"])
            row.crop = focus.box
            result[focus.method] += 1

    return ImageStep(apply, cropped=False)  # a new box needs the whole picture


def masking_step(storage: Storage, params: dict, result: Counter) -> ImageStep:
    """A mask per image from its subject or its faces (worker/focus_crop.py): white boxes on black, softened. An
    image where nothing is found keeps what it had."""
    grow = 0.35 if params["source"] == "faces" else 0.1  # a face box leaves out hair and chin

    def apply(rows: list[Image], pictures: list[PILImage.Image]) -> None:
        for row, picture in zip(rows, pictures, strict=True):
            boxes = subject_boxes(picture, params["source"])
            if not boxes:
                result["nothing_found"] += 1
                continue
            masks.store(storage, row, row.dataset.owner_id,
                        masks.png(masks.box_mask(*picture.size, boxes, grow), *picture.size))
            result["masked"] += 1

    # masks are kept at the whole image's size, so the detector sees the whole picture
    if params["mode"] == "skip_masked":
        return ImageStep(apply, cropped=False, wants=lambda row: row.mask_key is None)
    return ImageStep(apply, cropped=False)


def screening_step(settings: Settings, result: Counter) -> ImageStep:
    """New uploads through the site's screening (core/screening.py): the whole stored picture, as uploaded."""
    def apply(rows: list[Image], pictures: list[PILImage.Image]) -> None:
        shots = [Shot(row.storage_key, row.filename, picture, row.id)
                 for row, picture in zip(rows, pictures, strict=True)]
        for verdict in screen(object_session(rows[0]), settings, rows[0].dataset.owner_id, "image", shots):
            result[verdict.state] += 1

    return ImageStep(apply, cropped=False)


STEPS: dict[str, Callable[[Settings, Storage, dict, Counter], ImageStep]] = {
    "autotag": lambda settings, storage, params, result: tagging_step(settings, params, result),
    "caption": lambda settings, storage, params, result: captioning_step(settings, params, result),
    "focus_crop": lambda settings, storage, params, result: focus_step(params, result),
    "mask": lambda settings, storage, params, result: masking_step(storage, params, result),
    "screen": lambda settings, storage, params, result: screening_step(settings, result),
}


def run_dataset_task(settings: Settings, storage: Storage, task_id: str) -> str:
    factory = session_factory(settings.db_url)
    with factory() as session:
        task = session.get(DatasetTask, task_id)
        if task is None:
            return "gone"
        params, kind = dict(task.params), task.kind
        query = select(Image.id).where(Image.dataset_id == task.dataset_id).order_by(Image.created_at, Image.id)
        if params.get("image_ids") is not None:
            query = query.where(Image.id.in_(params["image_ids"]))
        image_ids = list(session.scalars(query))
        if not tasks.start(session, DatasetTask, task_id, total=len(image_ids), done=0, error=None):
            return task.status  # it ended already: a redelivered message
        session.commit()
    result: Counter = Counter()
    try:
        step = STEPS[kind](settings, storage, params, result)
        for start in range(0, len(image_ids), step.batch):
            _run_batch(factory, storage, task_id, image_ids[start:start + step.batch], step, result)
    except Exception as exc:  # the message is for the user; the traceback for the worker log
        log.exception("dataset task %s failed", task_id)
        _finish(factory, task_id, TaskStatus.failed, result, f"{type(exc).__name__}: {exc}")
        return TaskStatus.failed
    _finish(factory, task_id, TaskStatus.succeeded, result, None)
    return TaskStatus.succeeded


def _run_batch(factory, storage: Storage, task_id: str, ids: list[str], step: ImageStep,  # noqa: ANN001
               result: Counter) -> None:
    with factory() as session:
        rows = list(session.scalars(select(Image).where(Image.id.in_(ids)).order_by(Image.created_at, Image.id)))
        wanted = [row for row in rows if step.wants(row)]
        if len(wanted) < len(rows):
            result["skipped"] += len(rows) - len(wanted)
        started = time.monotonic()
        if wanted:
            step.apply(wanted, [_picture(row, storage, step.cropped) for row in wanted])
        task = session.get(DatasetTask, task_id)
        task.done += len(ids)
        task.result = dict(result)
        session.commit()
        log.info("task %s: %d/%d images (%.2f s for this batch)", task_id, task.done, task.total,
                 time.monotonic() - started)


def _picture(row: Image, storage: Storage, cropped: bool) -> PILImage.Image:
    data = image_bytes(row, storage) if cropped else storage.get_bytes(row.storage_key)
    with PILImage.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB")


def _finish(factory, task_id: str, status: TaskStatus, result: Counter, error: str | None) -> None:  # noqa: ANN001
    with factory() as session:
        tasks.finish(session, DatasetTask, task_id, status, result=dict(result), error=error)
        session.commit()
