"""Datasets and their tags: create, list, edit, delete; tag frequency, batch tag edits and caption edits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select

from api.deps import CurrentUser, OwnedDataset, PageDep, SessionDep, StorageDep
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import CaptionBatch, DatasetIn, DatasetOut, DatasetPatch, TagBatch
from api.services.datasets import (
    dataset_view,
    dataset_views,
    delete_dataset_and_files,
    duplicate_groups,
    edit_captions,
    edit_tags,
    selected_images,
)
from core.kohya_layout import tag_counts, trigger_words
from core.models import Dataset, Image
from core.phash import DEFAULT_MAX_DISTANCE

router = APIRouter(prefix=API_PREFIX, tags=["datasets"], responses=ERROR_RESPONSES)


# Answers are plain rows; FastAPI validates them against the response model once, on the way out.
@router.post("/datasets", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def create_dataset(body: DatasetIn, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    dataset = Dataset(owner_id=user.id, **body.model_dump())
    session.add(dataset)
    session.commit()
    return dataset_view(session, dataset.id, user.id)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(user: CurrentUser, session: SessionDep, page: PageDep) -> list[dict[str, Any]]:
    return dataset_views(session, user.id, page)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return dataset_view(session, dataset_id, user.id)


@router.patch("/datasets/{dataset_id}", response_model=DatasetOut)
def patch_dataset(body: DatasetPatch, dataset: OwnedDataset, session: SessionDep) -> dict[str, Any]:
    for field, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(dataset, field, value)
    session.commit()
    return dataset_view(session, dataset.id, dataset.owner_id)


@router.delete("/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> Response:
    delete_dataset_and_files(session, storage, dataset)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/datasets/{dataset_id}/tags")
def tag_frequency(dataset: OwnedDataset, session: SessionDep, page: PageDep) -> list[dict[str, object]]:
    """A page of the dataset's tags, most used first."""
    tag_lists = session.scalars(select(Image.tags).where(Image.dataset_id == dataset.id))
    return [{"tag": tag, "count": count} for tag, count in page.slice(tag_counts(tag_lists))]


@router.get("/datasets/{dataset_id}/trigger-words")
def suggested_trigger_words(dataset: OwnedDataset, session: SessionDep) -> dict[str, list[str]]:
    """What publishing prefills: the tags in front of every caption (see core.kohya_layout.trigger_words)."""
    return {"trigger_words": trigger_words(selected_images(session, dataset, None))}


@router.get("/datasets/{dataset_id}/duplicates")
def near_duplicates(dataset: OwnedDataset, session: SessionDep, storage: StorageDep, page: PageDep,
                    max_distance: Annotated[int, Query(ge=0, le=32)] = DEFAULT_MAX_DISTANCE) -> dict[str, object]:
    """Groups of near-identical images (perceptual hashes at most `max_distance` of 64 bits apart)."""
    groups = duplicate_groups(session, storage, dataset, max_distance)
    return {"max_distance": max_distance, "groups": page.slice(groups)}


@router.post("/datasets/{dataset_id}/tags/batch")
def batch_tags(body: TagBatch, dataset: OwnedDataset, session: SessionDep) -> dict[str, int]:
    matched, changed = edit_tags(session, dataset, body)
    return {"matched": matched, "changed": changed}


@router.post("/datasets/{dataset_id}/captions/batch")
def batch_captions(body: CaptionBatch, dataset: OwnedDataset, session: SessionDep) -> dict[str, int]:
    """Find and replace across captions, or the trigger word put at the start of every caption."""
    matched, changed = edit_captions(session, dataset, body)
    return {"matched": matched, "changed": changed}
