"""Finished epochs of a job: list with previews, download, "test this epoch" generations, plain-LoRA copies."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import RedirectResponse

from api.deps import CurrentUser, OwnedJob, PageDep, SessionDep, SettingsDep, StorageDep, owned
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import EpochOut, GenerateIn, GenerationOut, PlainLoraIn, PlainLoraOut
from api.services.epochs import find_epoch, plain_lora_copy, queue_generation
from api.waiting import LIGHT_TASKS, waiting_for
from core.models import Conversion, Epoch, Generation, Job
from core.storage import Storage

router = APIRouter(prefix=API_PREFIX, tags=["epochs"], responses=ERROR_RESPONSES)


def epoch_filename(job: Job, n: int) -> str:
    return f"{job.epoch_lora_name(n)}.safetensors"


def epoch_out(job: Job, epoch: Epoch, storage: Storage, expires_s: int) -> EpochOut:
    return EpochOut(n=epoch.n, loss=epoch.loss, validation_loss=epoch.validation_loss, size=epoch.size,
                    sha256=epoch.sha256,
                    previews=[storage.signed_url(k, expires_s=expires_s) for k in epoch.previews],
                    download_url=storage.signed_url(epoch.file_key, epoch_filename(job, epoch.n), expires_s))


@router.get("/jobs/{job_id}/epochs")
def list_epochs(job: OwnedJob, storage: StorageDep, settings: SettingsDep, page: PageDep) -> list[EpochOut]:
    return [epoch_out(job, e, storage, settings.download_link_seconds) for e in page.slice(list(job.epochs))]


@router.get("/jobs/{job_id}/epochs/{n}/download")
def download_epoch(n: int, job: OwnedJob, session: SessionDep, storage: StorageDep,
                   settings: SettingsDep) -> RedirectResponse:
    epoch = find_epoch(job, n, session)
    url = storage.signed_url(epoch.file_key, epoch_filename(job, n), settings.download_link_seconds)
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.post("/jobs/{job_id}/epochs/{n}/generate", status_code=status.HTTP_202_ACCEPTED)
def generate(n: int, body: GenerateIn, job: OwnedJob, request: Request, user: CurrentUser,
             session: SessionDep) -> GenerationOut:
    generation = queue_generation(session, job, n, body, request)
    return GenerationOut(id=generation.id, status=generation.status, images=[], error=None,
                         waiting_for=waiting_for(session, generation, LIGHT_TASKS))


@router.get("/generations/{generation_id}")
def get_generation(generation_id: str, user: CurrentUser, session: SessionDep,
                   storage: StorageDep) -> GenerationOut:
    generation = owned(session, Generation, generation_id, user.id, "generation")
    return GenerationOut(id=generation.id, status=generation.status, error=generation.error, notes=generation.notes,
                         images=[storage.signed_url(k) for k in generation.image_keys],
                         waiting_for=waiting_for(session, generation, LIGHT_TASKS))


def plain_out(session: SessionDep, job: Job, conversion: Conversion, storage: Storage) -> PlainLoraOut:
    name = f"{job.epoch_lora_name(conversion.epoch_n)}-plain-r{conversion.rank}.safetensors"
    return PlainLoraOut(id=conversion.id, status=conversion.status, epoch=conversion.epoch_n, rank=conversion.rank,
                        report=conversion.report, error=conversion.error,
                        download_url=storage.signed_url(conversion.file_key, name) if conversion.file_key else None,
                        waiting_for=waiting_for(session, conversion, LIGHT_TASKS))


@router.post("/jobs/{job_id}/epochs/{n}/plain-lora", status_code=status.HTTP_202_ACCEPTED)
def to_plain_lora(n: int, body: PlainLoraIn, job: OwnedJob, request: Request, session: SessionDep,
                  storage: StorageDep) -> PlainLoraOut:
    """The epoch as a plain LoRA of `rank`: its real update (DoRA's W' − W included) factored by a truncated SVD, so
    A1111, ComfyUI, Forge and diffusers all apply the same thing; the report says what the rank leaves out."""
    return plain_out(session, job, plain_lora_copy(session, job, n, body.rank, request), storage)


@router.get("/plain-loras/{conversion_id}")
def get_plain_lora(conversion_id: str, user: CurrentUser, session: SessionDep,
                   storage: StorageDep) -> PlainLoraOut:
    conversion = owned(session, Conversion, conversion_id, user.id, "plain LoRA")
    return plain_out(session, session.get(Job, conversion.job_id), conversion, storage)
