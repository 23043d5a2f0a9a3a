"""Published models: publish an epoch, your models, a model page (visitors may read public ones), its showcase,
downloads, "test" by other users, reports; and the public gallery. Each route calls api/services/models.py or
api/services/gallery.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, Response, UploadFile, status
from fastapi.responses import RedirectResponse

from api.account_schemas import ModelReportOut
from api.admin_schemas import Reason
from api.deps import CurrentUser, MaybeUser, PageDep, SessionDep, SettingsDep, StorageDep
from api.errors import ERROR_RESPONSES, Conflict
from api.model_schemas import GalleryCard, ModelOut, ModelPatch, PublishIn, ShowcaseAdd, ShowcaseCandidate
from api.routes import API_PREFIX
from api.schemas import GenerateIn, GenerationOut, UploadResult
from api.services import gallery, moderation
from api.services import models as service
from api.waiting import LIGHT_TASKS, waiting_for
from core import reports
from core.models import Epoch

router = APIRouter(prefix=API_PREFIX, tags=["models"], responses=ERROR_RESPONSES)


@router.post("/models", status_code=status.HTTP_201_CREATED)
def publish(body: PublishIn, user: CurrentUser, session: SessionDep, storage: StorageDep,
            settings: SettingsDep) -> ModelOut:
    model, _, _ = service.publish_epoch(session, user.id, body)
    return gallery.model_page(session, model, storage, settings.download_link_seconds, user.id)


@router.get("/models")
def my_models(user: CurrentUser, session: SessionDep, storage: StorageDep, settings: SettingsDep,
              page: PageDep) -> list[ModelOut]:
    """A page of your published models, newest first (everyone's public ones are in GET /gallery)."""
    return [gallery.model_page(session, m, storage, settings.download_link_seconds, user.id)
            for m in gallery.own_models(session, user.id, page)]


@router.get("/gallery")
def public_gallery(session: SessionDep, storage: StorageDep, settings: SettingsDep, page: PageDep,
                   sort: gallery.Sort = "newest",
                   family: Annotated[str | None, Query(max_length=32, description="e.g. sd15, sdxl, flux")] = None,
                   q: Annotated[str, Query(max_length=200, description="words of a name or tag")] = ""
                   ) -> list[GalleryCard]:
    """Public models with a showcase image, for anyone (visitors too): newest or most downloaded first, by family,
    or found by name and tags."""
    return gallery.gallery(session, storage, page, sort, family, q, settings.download_link_seconds)


@router.get("/models/{model_id}")
def get_model(model_id: str, user: MaybeUser, session: SessionDep, storage: StorageDep,
              settings: SettingsDep) -> ModelOut:
    """A public model is readable by anybody with its link, visitors included; a private one, or one hidden by
    moderation, by its owner."""
    viewer = user.id if user else None
    model = service.visible_model(session, model_id, viewer)
    return gallery.model_page(session, model, storage, settings.download_link_seconds, viewer)


@router.patch("/models/{model_id}")
def update_model(model_id: str, body: ModelPatch, user: CurrentUser, session: SessionDep, storage: StorageDep,
                 settings: SettingsDep) -> ModelOut:
    """Rename, describe, set the license, weight, tags or cover, or change who sees it."""
    model = service.update_model_page(session, user.id, model_id, body)
    return gallery.model_page(session, model, storage, settings.download_link_seconds, user.id)


@router.delete("/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def unpublish(model_id: str, user: CurrentUser, session: SessionDep) -> Response:
    """The model page goes; the job and its epoch files stay."""
    session.delete(service.owned_model(model_id, user.id, session))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/models/{model_id}/showcase/candidates")
def showcase_candidates(model_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep,
                        settings: SettingsDep, page: PageDep) -> list[ShowcaseCandidate]:
    """The previews and test images of the model's job that can go on its page (and are not on it yet)."""
    model = service.owned_model(model_id, user.id, session)
    shown = {item.key for item in model.showcase}
    offered = page.slice([c for c in service.candidates(session, model) if c[0] not in shown])
    return [ShowcaseCandidate(key=key, url=storage.signed_url(key, expires_s=settings.download_link_seconds),
                              source=source, name=name) for key, source, name in offered]


@router.post("/models/{model_id}/showcase")
def add_showcase(model_id: str, body: ShowcaseAdd, user: CurrentUser, session: SessionDep, storage: StorageDep,
                 settings: SettingsDep) -> ModelOut:
    model = service.owned_model(model_id, user.id, session)
    service.add_showcase(session, model, body.keys)
    return gallery.model_page(session, model, storage, settings.download_link_seconds, user.id)


@router.post("/models/{model_id}/showcase/upload")
def upload_showcase(model_id: str, files: Annotated[list[UploadFile], File(description="PNG or JPEG images")],
                    user: CurrentUser, session: SessionDep, storage: StorageDep, settings: SettingsDep,
                    request: Request) -> list[UploadResult]:
    """Pictures for the page, each checked like a dataset image (a result per file) and screened before others see
    it."""
    model = service.owned_model(model_id, user.id, session)
    read = [(f.filename or "upload", f.file.read(settings.max_upload_bytes + 1)) for f in files]
    return [UploadResult(**r) for r in service.upload_showcase(session, storage, settings, model, read, request)]


@router.delete("/models/{model_id}/showcase/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_showcase(model_id: str, item_id: str, user: CurrentUser, session: SessionDep,
                    storage: StorageDep) -> Response:
    service.remove_showcase(session, storage, service.owned_model(model_id, user.id, session), item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/models/{model_id}/download", response_class=RedirectResponse, status_code=307)
def download(model_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep,
             settings: SettingsDep) -> RedirectResponse:
    """Counts the download and sends the .safetensors file (a signed link)."""
    model = service.visible_model(session, model_id, user.id)
    service.count_download(session, model)
    epoch = session.get(Epoch, model.epoch_id)
    url = storage.signed_url(epoch.file_key, f"{model.name}.safetensors", settings.download_link_seconds)
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.post("/models/{model_id}/test", status_code=status.HTTP_202_ACCEPTED)
def test_model(model_id: str, body: GenerateIn, request: Request, user: CurrentUser, session: SessionDep,
               settings: SettingsDep) -> GenerationOut:
    """The same generation as testing an epoch, made for you (GET /generations/{id} follows it); charged
    TEST_PRICE credits when the model is someone else's."""
    model = service.visible_model(session, model_id, user.id)
    generation = service.try_model(session, settings, model, user.id, body, request)
    return GenerationOut(id=generation.id, status=generation.status, images=[], error=None,
                         waiting_for=waiting_for(session, generation, LIGHT_TASKS))


@router.post("/models/{model_id}/reports", status_code=status.HTTP_201_CREATED)
def report_model(model_id: str, body: Reason, user: CurrentUser, session: SessionDep) -> dict[str, str]:
    """Tell the moderators what is wrong with someone's public model; it waits in their queue."""
    model = service.visible_model(session, model_id, None)
    if model.owner_id == user.id:
        raise Conflict("this is your own model: edit or unpublish it instead")
    try:
        report = reports.file(session, model, user.id, body.reason)
    except reports.AlreadyReported as exc:
        raise Conflict(str(exc)) from None
    session.commit()
    return {"id": report.id, "message": "thank you: a moderator will look at it"}


@router.get("/models/{model_id}/reports", response_model=list[ModelReportOut])
def model_reports(model_id: str, user: CurrentUser, session: SessionDep, page: PageDep) -> list[dict[str, Any]]:
    """What users reported about your model, and what the moderators decided (who reported it is not shown)."""
    service.owned_model(model_id, user.id, session)
    return moderation.report_rows(session, page, model_id=model_id)
