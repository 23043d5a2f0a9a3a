"""Published models: an epoch made into a model page with a name that says which <lora:…> it is, its page's words
and pictures (the showcase, screened like everything else), downloads that count, and tries by other users."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.deps import not_found, owned
from api.errors import Conflict, Invalid, not_enough_credits
from api.model_schemas import ModelPatch, PublishIn
from api.schemas import GenerateIn
from api.services.epochs import find_epoch, queue_generation
from api.uploads import RejectedUpload, clean_image
from core import credits, keys, screening
from core.models import Epoch, Generation, Job, JobStatus, PublishedModel, Screening, ShowcaseItem
from core.queue import SCREEN_TASK, send
from core.settings import Settings
from core.storage import Storage

SHOWCASE_MAX = 20


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


def visible_model(session: Session, model_id: str, viewer_id: str | None) -> PublishedModel:
    """A public model for anyone, visitors included; a private one, or one moderation hid, for its owner only."""
    model = session.get(PublishedModel, model_id)
    if model is None or (not model.shown_publicly and model.owner_id != viewer_id):
        raise not_found("model")
    return model


def _keywords(model: PublishedModel) -> str:
    """What the gallery's search reads: the name, tags and trigger words, lower case."""
    return " ".join([model.name, *model.tags, *model.trigger_words]).lower()


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
    model = PublishedModel(owner_id=owner_id, job_id=job.id, epoch_id=epoch.id, name=body.name,
                           family=job.params.get("model_family", ""),
                           **body.model_dump(exclude={"job_id", "epoch", "name"}))
    model.keywords = _keywords(model)
    session.add(model)
    session.commit()
    return model, epoch, job


def update_model_page(session: Session, owner_id: str, model_id: str, body: ModelPatch) -> PublishedModel:
    """Rename, describe, pick the cover, or change who sees it (public → private takes it off the gallery)."""
    model = owned_model(model_id, owner_id, session)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    check_name(session, owner_id, changes.get("name", model.name), changes.get("visibility", model.visibility),
               model.id)
    if "cover_id" in changes and changes["cover_id"] not in {item.id for item in model.showcase}:
        raise Invalid("the cover must be one of the model's showcase images",
                      [{"field": "cover_id", "message": "not a showcase image of this model"}])
    for field, value in changes.items():
        setattr(model, field, value)
    model.keywords = _keywords(model)
    session.commit()
    return model


def candidates(session: Session, model: PublishedModel) -> list[tuple[str, str, str]]:
    """(key, source, name) of the pictures its job made that could go on its page: every epoch's previews and the
    owner's test images of the job."""
    found = []
    for n, previews in session.execute(select(Epoch.n, Epoch.previews).where(Epoch.job_id == model.job_id)
                                       .order_by(Epoch.n)):
        found += [(key, "preview", f"epoch {n} preview {k + 1}") for k, key in enumerate(previews)]
    tests = session.execute(select(Generation.epoch_n, Generation.image_keys).where(
        Generation.job_id == model.job_id, Generation.owner_id == model.owner_id).order_by(Generation.created_at))
    for n, image_keys in tests:
        found += [(key, "generation", f"epoch {n} test image") for key in image_keys]
    return found


def _room(model: PublishedModel, adding: int) -> None:
    if len(model.showcase) + adding > SHOWCASE_MAX:
        raise Conflict(f"a model shows at most {SHOWCASE_MAX} images; it has {len(model.showcase)}: remove some "
                       "first")


def _append(model: PublishedModel, key: str, source: str) -> ShowcaseItem:
    item = ShowcaseItem(model_id=model.id, key=key, source=source,
                        position=max((i.position for i in model.showcase), default=-1) + 1)
    model.showcase.append(item)
    return item


def add_showcase(session: Session, model: PublishedModel, chosen: list[str]) -> None:
    """Previews or test images of the model's job, in the order given (already screened when they were made)."""
    offered = {key: source for key, source, _ in candidates(session, model)}
    unknown = [key for key in chosen if key not in offered]
    if unknown:
        raise Invalid("only the model's own previews and test images can be added",
                      [{"field": "keys", "message": f"not a picture of this model: {key}"} for key in unknown])
    shown = {item.key for item in model.showcase}
    fresh = [key for key in dict.fromkeys(chosen) if key not in shown]
    _room(model, len(fresh))
    for key in fresh:
        _append(model, key, offered[key])
    session.commit()


def upload_showcase(session: Session, storage: Storage, settings: Settings, model: PublishedModel,
                    files: list[tuple[str, bytes]], request: Request) -> list[dict[str, str | None]]:
    """Pictures uploaded for the page, each checked like a dataset image and screened before others see it."""
    _room(model, len(files))
    results: list[dict[str, str | None]] = []
    for name, raw in files:
        try:
            clean = clean_image(raw, settings.max_upload_bytes, settings.max_image_pixels)
        except RejectedUpload as exc:
            results.append({"filename": name, "id": None, "error": str(exc)})
            continue
        item = _append(model, "", "upload")
        session.flush()
        item.key = keys.showcase(model.owner_id, model.id, item.id, clean.format)
        storage.put_bytes(item.key, clean.data, "image/png" if clean.format == "png" else "image/jpeg")
        if settings.screen_tagger is not None:
            screening.wait(session, model.owner_id, "showcase", model.id, item.key, name)
        session.commit()
        results.append({"filename": name, "id": item.id, "error": None})
    if settings.screen_tagger is not None:
        pending = session.scalars(select(Screening.id).where(Screening.subject_id == model.id,
                                                             Screening.state == screening.State.pending))
        for screening_id in pending:
            send(request.app.state.celery, SCREEN_TASK, screening_id)  # a queue that is down leaves them pending
    return results


def remove_showcase(session: Session, storage: Storage, model: PublishedModel, item_id: str) -> None:
    item = next((i for i in model.showcase if i.id == item_id), None)
    if item is None:
        raise not_found("showcase image")
    model.showcase.remove(item)
    if model.cover_id == item_id:
        model.cover_id = None
    uploaded = item.source == "upload"
    if uploaded:
        screening.forget(session, [item.key])
    session.commit()
    if uploaded:  # previews and test images stay with their job
        storage.delete(item.key)


def count_download(session: Session, model: PublishedModel) -> None:
    session.execute(update(PublishedModel).where(PublishedModel.id == model.id)
                    .values(downloads=PublishedModel.downloads + 1).execution_options(synchronize_session=False))
    session.commit()


def try_model(session: Session, settings: Settings, model: PublishedModel, user_id: str, body: GenerateIn,
              request: Request) -> Generation:
    """"Test" on someone's model: the same generation as testing an epoch, made for (and owned by) the user who
    asks, charged `test_price` credits when the model is not theirs."""
    job = session.get(Job, model.job_id)
    epoch = session.get(Epoch, model.epoch_id)
    if model.owner_id != user_id and settings.test_price > 0:
        credits.grant_monthly(session, settings, user_id)
        try:
            credits.spend(session, user_id, settings.test_price, f"a test of {model.name}")
        except credits.NotEnoughCredits as exc:
            session.rollback()
            raise not_enough_credits(exc) from None
    return queue_generation(session, job, epoch.n, body, request, requester_id=user_id)
