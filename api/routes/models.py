"""Published models: publish an epoch, list (yours and public ones), a model page's data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.account_schemas import ModelReportOut
from api.admin_schemas import Reason
from api.deps import CurrentUser, MaybeUser, PageDep, SessionDep, SettingsDep, StorageDep, not_found
from api.errors import ERROR_RESPONSES, Conflict
from api.routes import API_PREFIX
from api.schemas import ModelOut, ModelPatch, PublishIn
from api.services import moderation
from api.services.models import owned_model, publish_epoch, update_model_page
from core import reports, screening
from core.models import Epoch, Job, PublishedModel, User
from core.storage import Storage
from trainer.families import FAMILIES
from trainer.networks.spec import NetworkSpec

router = APIRouter(prefix=API_PREFIX, tags=["models"], responses=ERROR_RESPONSES)


def model_out(model: PublishedModel, epoch: Epoch, job: Job, owner: User, storage: Storage,
              expires_s: int, hidden: set[str] = frozenset()) -> ModelOut:
    """The model page's data; `hidden`: previews the viewer may not see (screening kept them to their owner)."""
    family = job.params.get("model_family")
    return ModelOut(id=model.id, name=model.name, owner_id=model.owner_id, owner=owner.email.split("@")[0],
                    job_id=model.job_id, epoch=epoch.n, base_model=job.base_model,
                    family=FAMILIES[family].label if family in FAMILIES else "unknown",
                    network_type=NetworkSpec.of_job(job.params).label, size=epoch.size,
                    trigger_words=model.trigger_words, description=model.description,
                    visibility=model.visibility,
                    previews=[storage.signed_url(k, expires_s=expires_s) for k in epoch.previews if k not in hidden],
                    hidden_reason=model.hidden_reason,
                    download_url=storage.signed_url(epoch.file_key, f"{model.name}.safetensors", expires_s),
                    snippet=f"<lora:{model.name}:0.8>", created_at=model.created_at)


def shown(session: Session, model: PublishedModel, storage: Storage, expires_s: int,
          viewer_id: str | None) -> ModelOut:
    """The model as `viewer_id` may see it: its owner sees every preview, anyone else those screening allows."""
    epoch = session.get(Epoch, model.epoch_id)
    hidden = set() if viewer_id == model.owner_id else screening.hidden_keys(session, epoch.previews)
    return model_out(model, epoch, session.get(Job, model.job_id), session.get(User, model.owner_id), storage,
                     expires_s, hidden)


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
    hidden = screening.hidden_keys(session, [k for m, e, *_ in rows if m.owner_id != user.id for k in e.previews])
    return [model_out(*row, storage, settings.download_link_seconds, hidden) for row in rows]


@router.get("/models/{model_id}")
def get_model(model_id: str, user: MaybeUser, session: SessionDep, storage: StorageDep,
              settings: SettingsDep) -> ModelOut:
    """A public model is readable by anybody with its link, visitors included; a private one, or one hidden by
    moderation, by its owner."""
    model = session.get(PublishedModel, model_id)
    if model is None or (not model.shown_publicly and (user is None or model.owner_id != user.id)):
        raise not_found("model")
    return shown(session, model, storage, settings.download_link_seconds, user.id if user else None)


@router.patch("/models/{model_id}")
def update_model(model_id: str, body: ModelPatch, user: CurrentUser, session: SessionDep, storage: StorageDep,
                 settings: SettingsDep) -> ModelOut:
    """Rename, describe, or change who sees it (public → private takes it off the public list)."""
    model = update_model_page(session, user.id, model_id, body)
    return shown(session, model, storage, settings.download_link_seconds, user.id)


@router.delete("/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def unpublish(model_id: str, user: CurrentUser, session: SessionDep) -> Response:
    """The model page goes; the job and its epoch files stay."""
    session.delete(owned_model(model_id, user.id, session))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/models/{model_id}/reports", status_code=status.HTTP_201_CREATED)
def report_model(model_id: str, body: Reason, user: CurrentUser, session: SessionDep) -> dict[str, str]:
    """Tell the moderators what is wrong with someone's public model; it waits in their queue."""
    model = session.get(PublishedModel, model_id)
    if model is None or not model.shown_publicly:
        raise not_found("model")
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
    owned_model(model_id, user.id, session)
    return moderation.report_rows(session, page, model_id=model_id)
