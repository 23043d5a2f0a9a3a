"""Images of a dataset: multipart upload (a result per file), list, edit, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status
from sqlalchemy.orm import Session

from api.deps import OwnedDataset, PageDep, SessionDep, SettingsDep, StorageDep, not_found
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import ImageOut, ImagePatch, UploadResult
from api.services.datasets import image_page
from api.services.images import add_images, delete_image_and_files, edit_image, remove_mask, set_mask
from core import screening
from core.models import Dataset, Image
from core.storage import Storage

router = APIRouter(prefix=API_PREFIX, tags=["images"], responses=ERROR_RESPONSES)


def image_out(image: Image, storage: Storage, screened: dict[str, tuple[str, str]]) -> ImageOut:
    """The image with signed links, and what the site's screening says of it (`screened`: by storage key)."""
    state, reason = screened.get(image.storage_key, (screening.State.allowed, ""))
    return ImageOut.model_validate(image).model_copy(update={
        "thumb_url": storage.signed_url(image.thumb_key), "url": storage.signed_url(image.storage_key, image.filename),
        "mask_url": storage.signed_url(image.mask_key) if image.mask_key else None,
        "screening": state, "screening_reason": reason})


def _one(session: Session, image: Image, storage: Storage) -> ImageOut:
    return image_out(image, storage, screening.states(session, [image.storage_key]))


@router.post("/datasets/{dataset_id}/images")
def upload_images(files: Annotated[list[UploadFile], File(description="PNG or JPEG images")],
                  dataset: OwnedDataset, session: SessionDep, storage: StorageDep,
                  settings: SettingsDep, request: Request) -> list[UploadResult]:
    """Each file stored or refused with its reason; stored ones are then auto-tagged when the server tags on upload
    (GET /datasets/{id}/tasks follows that)."""
    return add_images(session, storage, settings, dataset, [(f.filename or "upload", f.file) for f in files],
                      request)


@router.get("/datasets/{dataset_id}/images")
def list_images(dataset: OwnedDataset, session: SessionDep, storage: StorageDep, page: PageDep) -> list[ImageOut]:
    """A page of the dataset's images in upload order, each with signed links to its picture and thumbnail."""
    images = image_page(session, dataset, page)
    screened = screening.states(session, [i.storage_key for i in images])
    return [image_out(i, storage, screened) for i in images]


def _owned_image(dataset: Dataset, image_id: str, session: SessionDep) -> Image:
    image = session.get(Image, image_id)
    if image is None or image.dataset_id != dataset.id:
        raise not_found("image")
    return image


@router.get("/datasets/{dataset_id}/images/{image_id}")
def get_image(image_id: str, dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> ImageOut:
    return _one(session, _owned_image(dataset, image_id, session), storage)


@router.patch("/datasets/{dataset_id}/images/{image_id}")
def patch_image(image_id: str, body: ImagePatch, dataset: OwnedDataset, session: SessionDep,
                storage: StorageDep) -> ImageOut:
    image = edit_image(session, _owned_image(dataset, image_id, session), body)
    return _one(session, image, storage)


@router.delete("/datasets/{dataset_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(image_id: str, dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> Response:
    delete_image_and_files(session, storage, _owned_image(dataset, image_id, session))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/datasets/{dataset_id}/images/{image_id}/mask")
def put_mask(image_id: str, file: Annotated[UploadFile, File(description="PNG or JPEG of the image's shape: white "
                                                              "trained, black not; or transparency")],
             dataset: OwnedDataset, session: SessionDep, storage: StorageDep, settings: SettingsDep) -> ImageOut:
    """The image's mask for masked loss (replacing any): scaled to the image, read as its alpha channel when it has
    transparent pixels, else as its brightness."""
    image = _owned_image(dataset, image_id, session)
    return _one(session, set_mask(session, storage, settings, image, file.file.read(settings.max_upload_bytes + 1)),
                storage)


@router.delete("/datasets/{dataset_id}/images/{image_id}/mask")
def delete_mask(image_id: str, dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> ImageOut:
    """The image is trained whole again."""
    return _one(session, remove_mask(session, storage, _owned_image(dataset, image_id, session)), storage)
