"""Reports of public models: filed by users, decided by admins. An upheld report hides the model and is a strike
against its owner (core/screening.py counts strikes). Nothing here commits."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import audit, screening
from core.models import PublishedModel, Report, utcnow


class AlreadyReported(Exception):
    pass


def file(session: Session, model: PublishedModel, reporter_id: str, reason: str) -> Report:
    """One open report per user and model: a second waits for the first to be decided."""
    open_one = select(Report.id).where(Report.model_id == model.id, Report.reporter_id == reporter_id,
                                       Report.state == "open")
    if session.scalar(open_one) is not None:
        raise AlreadyReported("you reported this model already; a moderator will look at it")
    report = Report(model_id=model.id, reporter_id=reporter_id, reason=reason, state="open")
    session.add(report)
    return report


def decide(session: Session, report_id: str, uphold: bool, reason: str, actor: audit.Actor,
           strikes_to_suspend: int) -> Report | None:
    """Dismissed, or upheld: the model is hidden with the moderator's reason and its owner gets a strike. None when
    the report was decided already."""
    moved = session.execute(update(Report).where(Report.id == report_id, Report.state == "open")
                            .values(state="upheld" if uphold else "dismissed", decided_by=actor.email,
                                    decision=reason, decided_at=utcnow())
                            .execution_options(synchronize_session=False)).rowcount
    report = session.get(Report, report_id)
    if not moved or report is None:
        return None
    model = session.get(PublishedModel, report.model_id)
    audit.record(session, actor, "report.uphold" if uphold else "report.dismiss", "model", model.id, reason,
                 report=report_id, owner=model.owner_id)
    if uphold:
        model.hidden_reason = f"hidden by a moderator: {reason}"
        screening.strike(session, model.owner_id, strikes_to_suspend, reason)
    session.refresh(report)
    return report
