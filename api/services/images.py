"""A dataset's images: added a file at a time (each stored or refused with its reason), edited, deleted."""

from __future__ import annotations

import contextlib
from typing import BinaryIO

from fastapi import Request
from sqlalchemy.orm import Session

from api.errors import Invalid, Unavailable
from api.ingest import store_image
from api.schemas import ImagePatch, UploadResult
from api.services.datasets import image_count
from api.services.tasks import screen_pending, tag_on_upload
from api.uploads import RejectedUpload, clean_mask
from core import masks, screening
from core.models import Dataset, Image
from core.settings import Settings
from core.storage import Storage


def add_images(session: Session, storage: Storage, settings: Settings, dataset: Dataset,
               files: list[tuple[str, BinaryIO]], request: Request) -> list[UploadResult]:
    """Each file stored or refused with its reason; stored ones are then auto-tagged when the server tags on
    upload."""
    count = image_count(session, dataset.id)
    results: list[UploadResult] = []
    for name, file in files:
        if count >= settings.max_images_per_dataset:
            results.append(UploadResult(filename=name, error=f"dataset is full ({settings.max_images_per_dataset} "
                                                                 "images at most)"))
            continue
        try:
            raw = file.read(settings.max_upload_bytes + 1)
            image = store_image(session, storage, settings, dataset, name, raw)
            session.commit()
            results.append(UploadResult(filename=name, id=image.id))
            count += 1
        except RejectedUpload as exc:
            results.append(UploadResult(filename=name, error=str(exc)))
    # the images are stored whatever happens next: a queue that is down fails only the tasks, with their reason
    with contextlib.suppress(Unavailable):
        screen_pending(request, session, settings, dataset)
    with contextlib.suppress(Unavailable):
        tag_on_upload(request, session, settings, dataset, [r.id for r in results if r.id])
    return results


def edit_image(session: Session, image: Image, body: ImagePatch) -> Image:
    """Caption, tags, repeats, regularisation flag, or the crop box (which must lie inside the image)."""
    values = body.model_dump(exclude_unset=True, exclude={"crop", "clear_crop"})
    for field, value in values.items():
        setattr(image, field, value)
    if body.crop is not None:
        box = body.crop
        if box.x + box.width > image.width or box.y + box.height > image.height:
            raise Invalid(f"crop box leaves the {image.width}×{image.height} image")
        image.crop = box.model_dump()
    elif body.clear_crop:
        image.crop = None
    session.commit()
    return image


def set_mask(session: Session, storage: Storage, settings: Settings, image: Image, raw: bytes) -> Image:
    """Stores a mask sent for the image (422 naming the problem when it is not one); it replaces any mask."""
    try:
        data = clean_mask(raw, (image.width, image.height), settings.max_upload_bytes, settings.max_image_pixels)
    except RejectedUpload as exc:
        raise Invalid("the mask was refused", [{"field": "file", "message": str(exc)}]) from None
    masks.store(storage, image, image.dataset.owner_id, data)
    session.commit()
    return image


def remove_mask(session: Session, storage: Storage, image: Image) -> Image:
    """The image is trained whole again."""
    key, image.mask_key = image.mask_key, None
    session.commit()
    if key:
        storage.delete(key)
    return image


def delete_image_and_files(session: Session, storage: Storage, image: Image) -> None:
    doomed = [image.storage_key, image.thumb_key, *([image.mask_key] if image.mask_key else [])]
    screening.forget(session, doomed)
    session.delete(image)
    session.commit()
    for key in doomed:
        storage.delete(key)
