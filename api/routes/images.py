"""Images of a dataset: multipart upload (a result per file), list, edit, delete."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from api.deps import OwnedDataset, PageDep, SessionDep, SettingsDep, StorageDep, not_found
from api.errors import ERROR_RESPONSES, Invalid, Unavailable
from api.ingest import store_image
from api.routes import API_PREFIX
from api.schemas import ImageOut, ImagePatch, UploadResult
from api.services.datasets import image_count, image_page
from api.services.tasks import tag_on_upload
from api.uploads import RejectedUpload
from core.models import Dataset, Image
from core.storage import Storage

router = APIRouter(prefix=API_PREFIX, tags=["images"], responses=ERROR_RESPONSES)


def image_out(image: Image, storage: Storage) -> ImageOut:
    out = ImageOut.model_validate(image)
    return out.model_copy(update={"thumb_url": storage.signed_url(image.thumb_key),
                                  "url": storage.signed_url(image.storage_key, image.filename)})


@router.post("/datasets/{dataset_id}/images")
def upload_images(files: Annotated[list[UploadFile], File(description="PNG or JPEG images")],
                  dataset: OwnedDataset, session: SessionDep, storage: StorageDep,
                  settings: SettingsDep, request: Request) -> list[UploadResult]:
    """Each file stored or refused with its reason; stored ones are then auto-tagged when the server tags on upload
    (GET /datasets/{id}/tasks follows that)."""
    count = image_count(session, dataset.id)
    results: list[UploadResult] = []
    for upload in files:
        name = upload.filename or "upload"
        if count >= settings.max_images_per_dataset:
            results.append(UploadResult(filename=name, error=f"dataset is full ({settings.max_images_per_dataset} "
                                                                 "images at most)"))
            continue
        try:
            raw = upload.file.read(settings.max_upload_bytes + 1)
            image = store_image(session, storage, settings, dataset, name, raw)
            session.commit()
            results.append(UploadResult(filename=name, id=image.id))
            count += 1
        except RejectedUpload as exc:
            results.append(UploadResult(filename=name, error=str(exc)))
    # the images are stored whatever happens next: a queue that is down fails only the tagging task, with its reason
    with contextlib.suppress(Unavailable):
        tag_on_upload(request, session, settings, dataset, [r.id for r in results if r.id])
    return results


@router.get("/datasets/{dataset_id}/images")
def list_images(dataset: OwnedDataset, session: SessionDep, storage: StorageDep, page: PageDep) -> list[ImageOut]:
    """A page of the dataset's images in upload order, each with signed links to its picture and thumbnail."""
    return [image_out(i, storage) for i in image_page(session, dataset, page)]


def _owned_image(dataset: Dataset, image_id: str, session: SessionDep) -> Image:
    image = session.get(Image, image_id)
    if image is None or image.dataset_id != dataset.id:
        raise not_found("image")
    return image


@router.get("/datasets/{dataset_id}/images/{image_id}")
def get_image(image_id: str, dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> ImageOut:
    return image_out(_owned_image(dataset, image_id, session), storage)


@router.patch("/datasets/{dataset_id}/images/{image_id}")
def patch_image(image_id: str, body: ImagePatch, dataset: OwnedDataset, session: SessionDep,
                storage: StorageDep) -> ImageOut:
    image = _owned_image(dataset, image_id, session)
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
    return image_out(image, storage)


@router.delete("/datasets/{dataset_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(image_id: str, dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> Response:
    image = _owned_image(dataset, image_id, session)
    doomed = [image.storage_key, image.thumb_key]
    session.delete(image)
    session.commit()
    for key in doomed:
        storage.delete(key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
