"""What others see of published models: the model page, and the public gallery. Only public models that moderation
did not hide and that have a showcase image others may see are listed; pictures screening keeps to their owner are
left out for everyone else."""

from __future__ import annotations

from typing import Any, Literal

from markdown_it import MarkdownIt
from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, selectinload

from api.deps import Page
from api.model_schemas import GalleryCard, ModelOut, ShowcaseOut
from core import screening
from core.models import Epoch, Job, PublishedModel, Screening, ShowcaseItem, User
from core.storage import Storage
from trainer.families import FAMILIES
from trainer.job.config import USER_KEYS
from trainer.networks.spec import NetworkSpec

# CommonMark without raw HTML (it is shown as text); markdown-it refuses javascript:, vbscript: and file: links
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
Sort = Literal["newest", "downloads"]


def description_html(text: str) -> str:
    return _MARKDOWN.render(text)


def family_label(family: str) -> str:
    return FAMILIES[family].label if family in FAMILIES else "unknown"


def _seen_by_others(key_column: Any) -> Any:  # noqa: ANN401 - SQL expressions
    """True where screening lets others see the file (no row: never screened, so allowed)."""
    return ~exists(select(Screening.id).where(Screening.key == key_column,
                                              Screening.state.not_in(screening.SHOWN_TO_OTHERS)))


def in_gallery() -> Any:  # noqa: ANN401
    """The gallery's condition: public, not hidden, and with at least one showcase image others may see."""
    shown = select(ShowcaseItem.id).where(ShowcaseItem.model_id == PublishedModel.id,
                                          _seen_by_others(ShowcaseItem.key))
    return PublishedModel.shown_publicly & shown.exists()


def _showcase(model: PublishedModel, states: dict[str, tuple[str, str]], owner_view: bool) -> list[ShowcaseItem]:
    """The model's pictures the viewer may see (`states`: screening.states of its showcase keys)."""
    return [item for item in model.showcase
            if owner_view or states.get(item.key, (screening.State.allowed,))[0] in screening.SHOWN_TO_OTHERS]


def _cover(model: PublishedModel, items: list[ShowcaseItem]) -> ShowcaseItem | None:
    return next((item for item in items if item.id == model.cover_id), items[0] if items else None)


def model_page(session: Session, model: PublishedModel, storage: Storage, expires_s: int,
               viewer_id: str | None) -> ModelOut:
    """The model as `viewer_id` may see it: its owner sees every picture (with what screening said), anyone else
    only those screening allows."""
    owner_view = viewer_id == model.owner_id
    epoch, job = session.get(Epoch, model.epoch_id), session.get(Job, model.job_id)
    owner = session.get(User, model.owner_id)
    states = screening.states(session, [item.key for item in model.showcase])
    items = _showcase(model, states, owner_view)
    hidden = set() if owner_view else screening.hidden_keys(session, epoch.previews)
    cover = _cover(model, items)
    return ModelOut(
        id=model.id, name=model.name, owner_id=model.owner_id, owner=owner.email.split("@")[0], job_id=model.job_id,
        epoch=epoch.n, base_model=job.base_model, family=family_label(model.family),
        network_type=NetworkSpec.of_job(job.params).label, size=epoch.size, trigger_words=model.trigger_words,
        description=model.description, description_html=description_html(model.description), license=model.license,
        recommended_weight=model.recommended_weight, tags=model.tags, downloads=model.downloads,
        visibility=model.visibility, cover_id=cover.id if cover else None,
        cover_url=storage.signed_url(cover.key, expires_s=expires_s) if cover else None,
        showcase=[ShowcaseOut(id=item.id, url=storage.signed_url(item.key, expires_s=expires_s), source=item.source,
                              screening=states.get(item.key, ("allowed", ""))[0],
                              screening_reason=states.get(item.key, ("", ""))[1]) for item in items],
        previews=[storage.signed_url(k, expires_s=expires_s) for k in epoch.previews if k not in hidden],
        parameters={k: v for k, v in sorted(job.params.items()) if k in USER_KEYS},
        download_url=f"/api/v1/models/{model.id}/download", snippet=f"<lora:{model.name}:{model.recommended_weight:g}>",
        created_at=model.created_at, in_gallery=bool(session.scalar(select(in_gallery()).where(
            PublishedModel.id == model.id).select_from(PublishedModel))),
        hidden_reason=model.hidden_reason)


def _listing(sort: Sort, family: str | None, query: str) -> Select[Any]:
    statement = select(PublishedModel, User.email, Job.base_model).join(User, User.id == PublishedModel.owner_id) \
        .join(Job, Job.id == PublishedModel.job_id).where(in_gallery())
    if family:
        statement = statement.where(PublishedModel.family == family)
    for word in query.lower().split():
        statement = statement.where(PublishedModel.keywords.contains(word, autoescape=True))
    order = PublishedModel.downloads.desc() if sort == "downloads" else PublishedModel.created_at.desc()
    return statement.order_by(order, PublishedModel.created_at.desc(), PublishedModel.id)


def gallery(session: Session, storage: Storage, page: Page, sort: Sort, family: str | None, query: str,
            expires_s: int) -> list[GalleryCard]:
    """A page of the public gallery, each card with its cover."""
    cards = []
    # one query for the page's models with their showcases, one for what screening says of all their pictures
    rows = session.execute(page.of(_listing(sort, family, query)).options(
        selectinload(PublishedModel.showcase))).all()
    states = screening.states(session, [item.key for model, *_ in rows for item in model.showcase])
    for model, email, base_model in rows:
        cover = _cover(model, _showcase(model, states, owner_view=False))
        cards.append(GalleryCard(id=model.id, name=model.name, owner=email.split("@")[0],
                                 family=family_label(model.family), base_model=base_model,
                                 cover_url=storage.signed_url(cover.key, expires_s=expires_s), tags=model.tags,
                                 trigger_words=model.trigger_words, downloads=model.downloads,
                                 recommended_weight=model.recommended_weight, created_at=model.created_at))
    return cards


def own_models(session: Session, owner_id: str, page: Page) -> list[PublishedModel]:
    """A page of the user's own models, newest first."""
    return list(session.scalars(page.of(select(PublishedModel).where(PublishedModel.owner_id == owner_id)
                                        .order_by(PublishedModel.created_at.desc(), PublishedModel.id))))
