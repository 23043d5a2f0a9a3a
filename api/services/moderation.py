"""The moderation queue: images the site's screening held, and users' reports of public models, each decided by an
admin with a reason (core/screening.py and core/reports.py make the moves and write the audit log)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from api.admin_schemas import ReportDecision, ScreeningDecision
from api.deps import Page, not_found
from api.errors import Conflict
from core import audit, reports, screening
from core.models import PublishedModel, Report, Screening, User
from core.settings import Settings
from core.storage import Storage


def screenings(session: Session, storage: Storage, state: str, page: Page) -> list[dict[str, Any]]:
    """Screened images in `state` (held: the queue), oldest first, each with a signed link for the moderator."""
    rows = session.execute(page.of(select(Screening, User.email).join(User, User.id == Screening.owner_id)
                                   .where(Screening.state == state).order_by(Screening.created_at, Screening.id)))
    return [{**{c.key: getattr(row, c.key) for c in Screening.__table__.c}, "owner_email": email,
             "url": storage.signed_url(row.key)} for row, email in rows]


def decide_screening(session: Session, settings: Settings, admin: audit.Actor, screening_id: str,
                     body: ScreeningDecision) -> None:
    if session.get(Screening, screening_id) is None:
        raise not_found("screening")
    if screening.decide(session, screening_id, body.decision == "allow", body.reason, admin,
                        settings.strikes_to_suspend) is None:
        raise Conflict("this image is not held for review (any more)")
    session.commit()


def report_rows(session: Session, page: Page, state: str | None = None,
                model_id: str | None = None) -> list[dict[str, Any]]:
    """Reports, oldest first: by state for the queue, or all of one model's."""
    owner, reporter = aliased(User), aliased(User)
    query = (select(Report, PublishedModel.name, owner.email, reporter.email)
             .join(PublishedModel, PublishedModel.id == Report.model_id)
             .join(owner, owner.id == PublishedModel.owner_id).join(reporter, reporter.id == Report.reporter_id)
             .order_by(Report.created_at, Report.id))
    if state is not None:
        query = query.where(Report.state == state)
    if model_id is not None:
        query = query.where(Report.model_id == model_id)
    return [{**{c.key: getattr(report, c.key) for c in Report.__table__.c}, "model_name": name,
             "owner_email": owner_email, "reporter_email": reporter_email}
            for report, name, owner_email, reporter_email in session.execute(page.of(query))]


def decide_report(session: Session, settings: Settings, admin: audit.Actor, report_id: str,
                  body: ReportDecision) -> None:
    if session.get(Report, report_id) is None:
        raise not_found("report")
    if reports.decide(session, report_id, body.decision == "uphold", body.reason, admin,
                      settings.strikes_to_suspend) is None:
        raise Conflict("this report was decided already")
    session.commit()
