"""Published models: publish an epoch, list (yours and public ones), a model page's data."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, MaybeUser, PageDep, SessionDep, SettingsDep, StorageDep, not_found
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import ModelOut, ModelPatch, PublishIn
from api.services.models import owned_model, publish_epoch, update_model_page
from core.models import Epoch, Job, PublishedModel, User
from core.storage import Storage
from trainer.families import FAMILIES
from trainer.networks.spec import NetworkSpec

router = APIRouter(prefix=API_PREFIX, tags=["models"], responses=ERROR_RESPONSES)


def model_out(model: PublishedModel, epoch: Epoch, job: Job, owner: User, storage: Storage,
              expires_s: int) -> ModelOut:
    family = job.params.get("model_family")
    return ModelOut(id=model.id, name=model.name, owner_id=model.owner_id, owner=owner.email.split("@")[0],
                    job_id=model.job_id, epoch=epoch.n, base_model=job.base_model,
                    family=FAMILIES[family].label if family in FAMILIES else "unknown",
                    network_type=NetworkSpec.of_job(job.params).label, size=epoch.size,
                    trigger_words=model.trigger_words, description=model.description,
                    visibility=model.visibility,
                    previews=[storage.signed_url(k, expires_s=expires_s) for k in epoch.previews],
                    download_url=storage.signed_url(epoch.file_key, f"{model.name}.safetensors", expires_s),
                    snippet=f"<lora:{model.name}:0.8>", created_at=model.created_at)


def shown(session: Session, model: PublishedModel, storage: Storage, expires_s: int) -> ModelOut:
    return model_out(model, session.get(Epoch, model.epoch_id), session.get(Job, model.job_id),
                     session.get(User, model.owner_id), storage, expires_s)


@router.post("/models", status_code=status.HTTP_201_CREATED)
def publish(body: PublishIn, user: CurrentUser, session: SessionDep, storage: StorageDep,
            settings: SettingsDep) -> ModelOut:
    model, epoch, job = publish_epoch(session, user.id, body)
    return model_out(model, epoch, job, user, storage, settings.download_link_seconds)


@router.get("/models")
def list_models(user: CurrentUser, session: SessionDep, storage: StorageDep, settings: SettingsDep,
                page: PageDep) -> list[ModelOut]:
    """A page of the models this user may see (their own and everyone's public ones), newest first."""
    rows = session.execute(page.of(
        select(PublishedModel, Epoch, Job, User).join(Epoch, Epoch.id == PublishedModel.epoch_id)
        .join(Job, Job.id == PublishedModel.job_id).join(User, User.id == PublishedModel.owner_id)
        .where(or_(PublishedModel.owner_id == user.id, PublishedModel.shown_publicly))
        .order_by(PublishedModel.created_at.desc(), PublishedModel.id))
    ).all()
    return [model_out(*row, storage, settings.download_link_seconds) for row in rows]


@router.get("/models/{model_id}")
def get_model(model_id: str, user: MaybeUser, session: SessionDep, storage: StorageDep,
              settings: SettingsDep) -> ModelOut:
    """A public model is readable by anybody with its link, visitors included; a private one, or one hidden by
    moderation, by its owner."""
    model = session.get(PublishedModel, model_id)
    if model is None or (not model.shown_publicly and (user is None or model.owner_id != user.id)):
        raise not_found("model")
    return shown(session, model, storage, settings.download_link_seconds)


@router.patch("/models/{model_id}")
def update_model(model_id: str, body: ModelPatch, user: CurrentUser, session: SessionDep, storage: StorageDep,
                 settings: SettingsDep) -> ModelOut:
    """Rename, describe, or change who sees it (public → private takes it off the public list)."""
    model = update_model_page(session, user.id, model_id, body)
    return shown(session, model, storage, settings.download_link_seconds)


@router.delete("/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def unpublish(model_id: str, user: CurrentUser, session: SessionDep) -> Response:
    """The model page goes; the job and its epoch files stay."""
    session.delete(owned_model(model_id, user.id, session))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
