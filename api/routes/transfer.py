"""Datasets in and out in the kohya layout: zip import with a per-entry report, zip export, the tag summary."""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import select
from starlette.background import BackgroundTask

from api.config_transfer import ConfigFileError, ImportedConfig, NoExporter, export_config, import_config
from api.dataset_import import TAG_SUMMARY, EntryReport, HostileArchive, import_archive
from api.deps import CurrentUser, OwnedDataset, OwnedJob, SessionDep, SettingsDep, StorageDep
from api.errors import ERROR_RESPONSES, Conflict, Invalid, Unavailable
from api.routes import API_PREFIX
from api.schemas import DatasetOut
from api.services.datasets import dataset_view, selected_images
from api.services.tasks import screen_pending
from core.kohya_layout import (
    caption_files,
    concept_name,
    image_bytes,
    mask_bytes,
    mask_path,
    place,
    readable_stem,
    tag_occurrence,
)
from core.models import Dataset, Image
from core.storage import Storage

router = APIRouter(prefix=API_PREFIX, tags=["import and export"], responses=ERROR_RESPONSES)
CONFIG_MAX_BYTES = 1024 * 1024


class ImportOut(BaseModel):
    dataset: DatasetOut
    imported: int
    report: list[EntryReport]


@router.post("/datasets/import", status_code=status.HTTP_201_CREATED)
def import_dataset(file: Annotated[UploadFile, File(description="a zip in kohya layout")], request: Request,
                   user: CurrentUser, session: SessionDep, storage: StorageDep, settings: SettingsDep,
                   name: Annotated[str | None, Form(max_length=200)] = None) -> ImportOut:
    title = (name or "").strip() or (file.filename or "imported").rsplit(".", 1)[0][:200] or "imported"
    try:
        result = import_archive(file.file, title, user.id, session, storage, settings)
    except HostileArchive as exc:
        raise Invalid("the archive was refused; nothing was imported",
                      [{"field": "file", "message": p} for p in exc.problems]) from None
    if result.dataset is None:
        raise Invalid("no image in the archive could be imported",
                      [{"field": r.entry, "message": f"{r.status}: {r.reason}"} for r in result.report])
    with contextlib.suppress(Unavailable):  # stored either way; a queue that is down leaves them pending
        screen_pending(request, session, settings, result.dataset)
    return ImportOut(dataset=dataset_view(session, result.dataset.id, user.id),
                     imported=result.imported, report=result.report)


def write_kohya_zip(archive: zipfile.ZipFile, dataset: Dataset, images: list[Image], storage: Storage) -> None:
    for spot in place(dataset, images, dataset.name, stem_of=readable_stem):
        # images are compressed already: stored as they are; captions deflate well
        archive.writestr(f"{spot.folder}/{spot.stem}.{spot.image.format}", image_bytes(spot.image, storage),
                         zipfile.ZIP_STORED)
        for extension, text in caption_files(spot.image).items():
            archive.writestr(f"{spot.folder}/{spot.stem}{extension}", text, zipfile.ZIP_DEFLATED)
        if (mask := mask_bytes(spot.image, storage)) is not None:
            archive.writestr(mask_path(spot), mask, zipfile.ZIP_STORED)
    archive.writestr(TAG_SUMMARY, tag_occurrence(i.tags for i in images), zipfile.ZIP_DEFLATED)


def _zip_response(filename: str, write) -> FileResponse:  # noqa: ANN001 - write(zipfile.ZipFile)
    """The archive `write` makes, as a download with Range support. Built whole first, so a storage error is a
    clean 5xx rather than a cut zip; the file is removed once sent."""
    with tempfile.NamedTemporaryFile(suffix=".zip", delete=False) as spool:
        path = Path(spool.name)
        try:
            with zipfile.ZipFile(spool, "w") as archive:
                write(archive)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return FileResponse(path, media_type="application/zip", filename=filename,
                        background=BackgroundTask(path.unlink, missing_ok=True))


@router.get("/datasets/{dataset_id}/export")
def export_dataset(dataset: OwnedDataset, session: SessionDep, storage: StorageDep) -> FileResponse:
    """The dataset as sd-scripts reads it: crops applied, `.txt` captions, repeats in the folder names."""
    images = selected_images(session, dataset, None)
    return _zip_response(f"{_file_stem(dataset.name)}.zip",
                         lambda archive: write_kohya_zip(archive, dataset, images, storage))


def _file_stem(name: str) -> str:
    return concept_name(name).replace(" ", "_")


@router.get("/datasets/{dataset_id}/tag-occurrence", response_class=PlainTextResponse)
def tag_summary(dataset: OwnedDataset, session: SessionDep) -> PlainTextResponse:
    text = tag_occurrence(session.scalars(select(Image.tags).where(Image.dataset_id == dataset.id)))
    return PlainTextResponse(text, headers={"Content-Disposition": f'attachment; filename="{TAG_SUMMARY}"'})


@router.post("/jobs/import-config")
async def import_job_config(
        file: Annotated[UploadFile, File(description="sd-scripts TOML, kohya_ss GUI JSON or LoRA_Easy JSON")],
        _: CurrentUser,
        dataset_config: Annotated[UploadFile | None, File(description="sd-scripts dataset_config TOML")] = None,
) -> ImportedConfig:
    """Job parameters from another trainer's config file, with what was ignored or not understood, and why."""
    texts = []
    for upload in (file, dataset_config):
        if upload is None:
            texts.append(None)
            continue
        raw = await upload.read(CONFIG_MAX_BYTES + 1)
        name = upload.filename or "config"
        if len(raw) > CONFIG_MAX_BYTES:
            raise Invalid("the file is refused", [{"field": name, "message": "larger than 1 MB: not a config"}])
        try:
            texts.append(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise Invalid("the file is refused", [{"field": name, "message": "not UTF-8 text"}]) from None
    try:
        return import_config(texts[0], file.filename or "config", texts[1],
                             (dataset_config.filename if dataset_config else None) or "dataset_config.toml")
    except ConfigFileError as exc:
        raise Invalid("the file could not be read", [{"field": "file", "message": str(exc)}]) from None


@router.get("/jobs/{job_id}/export-config")
def export_job_config(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """config.toml + dataset_config.toml (+ sample_prompts.txt) that reproduce this job with sd-scripts."""
    dataset = session.get(Dataset, job.dataset_id)
    try:
        files = export_config(job, dataset, selected_images(session, dataset, None), settings)
    except NoExporter as exc:
        raise Conflict("this job cannot be exported", [{"field": "base_model", "message": str(exc)}]) from None

    def write(archive: zipfile.ZipFile) -> None:
        for name, text in files.items():
            archive.writestr(name, text, zipfile.ZIP_DEFLATED)

    return _zip_response(f"{job.name}-sd-scripts.zip", write)
