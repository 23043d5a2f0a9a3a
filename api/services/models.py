"""Published models: an epoch made into a model page with a name that says which <lora:…> it is."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import not_found, owned
from api.errors import Conflict
from api.schemas import ModelPatch, PublishIn
from api.services.epochs import find_epoch
from core.models import Epoch, Job, JobStatus, PublishedModel


def check_name(session: Session, owner_id: str, name: str, visibility: str, model_id: str | None = None) -> None:
    """A model name is unique among the owner's models and among public ones (its <lora:name> must say which)."""
    same_name = select(PublishedModel.id).where(PublishedModel.name == name, PublishedModel.id != (model_id or ""))
    if session.scalar(same_name.where(PublishedModel.owner_id == owner_id)) is not None:
        raise Conflict(f"you already published a model called {name}")
    if visibility == "public" and session.scalar(same_name.where(PublishedModel.visibility == "public")):
        raise Conflict(f"a public model is already called {name}: its "
                       "<lora:name> would be ambiguous; choose another name")


def owned_model(model_id: str, user_id: str, session: Session) -> PublishedModel:
    return owned(session, PublishedModel, model_id, user_id, "model")


def publish_epoch(session: Session, owner_id: str, body: PublishIn) -> tuple[PublishedModel, Epoch, Job]:
    """A new model page for one stored epoch of the owner's finished job."""
    job = session.get(Job, body.job_id)
    if job is None or job.owner_id != owner_id:
        raise not_found("job")
    if job.status == JobStatus.running:
        raise Conflict("the job is still training; publish when it has finished")
    epoch = find_epoch(job, body.epoch, session)
    if (twin := session.scalar(select(PublishedModel).where(PublishedModel.epoch_id == epoch.id))) is not None:
        raise Conflict(f"epoch {epoch.n} of this job is already published as "
                       f"{twin.name}: edit that model instead")
    check_name(session, owner_id, body.name, body.visibility)
    words = [w.strip() for w in body.trigger_words if w.strip()]
    model = PublishedModel(owner_id=owner_id, job_id=job.id, epoch_id=epoch.id, name=body.name, trigger_words=words,
                           description=body.description, visibility=body.visibility)
    session.add(model)
    session.commit()
    return model, epoch, job


def update_model_page(session: Session, owner_id: str, model_id: str, body: ModelPatch) -> PublishedModel:
    """Rename, describe, or change who sees it (public → private takes it off the public list)."""
    model = owned_model(model_id, owner_id, session)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    check_name(session, owner_id, changes.get("name", model.name), changes.get("visibility", model.visibility),
               model.id)
    if "trigger_words" in changes:
        changes["trigger_words"] = [w.strip() for w in changes["trigger_words"] if w.strip()]
    for field, value in changes.items():
        setattr(model, field, value)
    session.commit()
    return model
