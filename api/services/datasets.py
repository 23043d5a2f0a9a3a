"""Datasets as every part of the API reads them: one owner's dataset with its image count, and its images."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from api.deps import Page, not_found
from api.errors import Conflict, NotFound
from api.schemas import CaptionBatch, TagBatch
from core import keys, screening
from core.db import read_rows
from core.models import Dataset, Image, Job
from core.phash import near_duplicate_groups, phash
from core.storage import Storage

IMAGE_COUNT = select(func.count()).select_from(Image).where(Image.dataset_id == bindparam("dataset_id"))
# Every answer about a dataset comes from one statement: its columns with its image count, for its owner only.
_DATASET_VIEWS = select(Dataset.id, Dataset.name, Dataset.description, Dataset.default_repeats, Dataset.created_at,
                        Dataset.crop_family,
                        select(func.count()).where(Image.dataset_id == Dataset.id).correlate(Dataset)
                        .scalar_subquery().label("image_count")).where(Dataset.owner_id == bindparam("owner_id"))
_ONE_VIEW = _DATASET_VIEWS.where(Dataset.id == bindparam("dataset_id"))
_ALL_VIEWS = _DATASET_VIEWS.order_by(Dataset.created_at.desc(), Dataset.id)


def image_count(session: Session, dataset_id: str) -> int:
    return int(session.scalar(IMAGE_COUNT, {"dataset_id": dataset_id}) or 0)


def dataset_view(session: Session, dataset_id: str, owner_id: str) -> dict[str, Any]:
    """A dataset as the API shows it (a DatasetOut's fields); 404 when it is not the owner's."""
    row = read_rows(session, _ONE_VIEW, {"owner_id": owner_id, "dataset_id": dataset_id}).first()
    if row is None:
        raise not_found("dataset")
    return row._asdict()


def dataset_views(session: Session, owner_id: str, page: Page) -> list[dict[str, Any]]:
    """A page of the owner's datasets, newest first, as the API shows them."""
    return [row._asdict() for row in read_rows(session, page.of(_ALL_VIEWS), {"owner_id": owner_id})]


def image_page(session: Session, dataset: Dataset, page: Page) -> list[Image]:
    """A page of the dataset's images in upload order."""
    return list(session.scalars(page.of(select(Image).where(Image.dataset_id == dataset.id)
                                        .order_by(Image.created_at, Image.id))))


def selected_images(session: Session, dataset: Dataset, image_ids: list[str] | None) -> list[Image]:
    """The dataset's images in upload order, or those of `image_ids` (404 naming any not in this dataset)."""
    query = select(Image).where(Image.dataset_id == dataset.id).order_by(Image.created_at, Image.id)
    if image_ids is not None:
        query = query.where(Image.id.in_(image_ids))
    images = list(session.scalars(query))
    if image_ids is not None and len(images) != len(set(image_ids)):
        found = {i.id for i in images}
        missing = [i for i in image_ids if i not in found]
        raise NotFound(f"images not in this dataset: {', '.join(missing[:10])}")
    return images


def delete_dataset_and_files(session: Session, storage: Storage, dataset: Dataset) -> None:
    """The dataset, its images and their files, in one conditional delete: 409 while a job uses it."""
    used = select(Job.id).where(Job.dataset_id == dataset.id).exists()
    prefix = keys.dataset_prefix(dataset.owner_id, dataset.id)
    gone = session.execute(delete(Dataset).where(Dataset.id == dataset.id, ~used)
                           .execution_options(synchronize_session=False)).rowcount
    if gone:
        screening.forget_under(session, prefix)
    session.commit()
    if not gone:
        raise Conflict("dataset is used by training jobs; delete those first")
    storage.delete_prefix(prefix)


def duplicate_groups(session: Session, storage: Storage, dataset: Dataset, max_distance: int) -> list[list[str]]:
    """Groups of near-identical images: perceptual hashes at most `max_distance` of 64 bits apart."""
    images = selected_images(session, dataset, None)
    for image in images:
        if image.phash is None:  # stored before hashes were kept
            with PILImage.open(io.BytesIO(storage.get_bytes(image.thumb_key))) as thumb:
                image.phash = phash(thumb)
    session.commit()
    return near_duplicate_groups({i.id: i.phash for i in images if i.phash}, max_distance)


def edit_tags(session: Session, dataset: Dataset, batch: TagBatch) -> tuple[int, int]:
    """One tag edit over the chosen images: how many matched and how many changed."""
    images = selected_images(session, dataset, batch.image_ids)
    changed = 0
    for image in images:
        new = apply_tag_batch(list(image.tags), batch)
        if new != image.tags:
            image.tags = new
            changed += 1
    session.commit()
    return len(images), changed


def edit_captions(session: Session, dataset: Dataset, batch: CaptionBatch) -> tuple[int, int]:
    """One caption edit over the chosen images: how many matched and how many changed. Images without a caption
    are left alone (a prefix alone is not a caption)."""
    images = selected_images(session, dataset, batch.image_ids)
    changed = 0
    for image in images:
        caption = image.caption
        if not caption.strip():
            continue
        if batch.action == "replace":
            caption = caption.replace(batch.find, batch.replace_with)
        elif not caption.lstrip().startswith(batch.prefix.strip()):
            caption = f"{batch.prefix.strip()}, {caption.lstrip()}"
        if caption != image.caption:
            image.caption = caption
            changed += 1
    session.commit()
    return len(images), changed


def apply_tag_batch(tags: list[str], batch: TagBatch) -> list[str]:
    """One image's tags after a batch edit; order is kept, duplicates are not created."""
    if batch.action == "add":
        new = [t for t in batch.tags if t not in tags]
        if batch.position == "start":
            return new + tags
        return tags + new
    if batch.action == "remove":
        return [t for t in tags if t not in batch.tags]
    out: list[str] = []
    for tag in tags:
        for replacement in batch.replace_with if tag in batch.tags else [tag]:
            if replacement not in out:
                out.append(replacement)
    return out
