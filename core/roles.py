"""Roles and suspension. An admin is granted on the server (`lorabake admin grant EMAIL`), or is the first account of
an embedded install. A suspended account cannot sign in or use a token (both say why); its waiting jobs are canceled,
its running ones asked to stop (they keep their finished epochs), its public models hidden. Restoring it lifts the
suspension and shows the models the suspension hid. Nothing here commits: the caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import audit
from core import jobs as lifecycle
from core.models import Job, JobStatus, PublishedModel, Role, User, utcnow

SUSPENDED_NOTE = "its owner's account is suspended"


class UnknownAccount(LookupError):
    pass


def set_role(session: Session, email: str, role: Role, actor: audit.Actor) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise UnknownAccount(f"no account has the email {email!r}")
    if user.role != role:
        user.role = role
        audit.record(session, actor, f"role.{role}", "user", user.id, f"{role} role for {user.email}")
    return user


@dataclass(frozen=True)
class Suspension:
    canceled: list[str]  # waiting jobs, canceled at once
    stopping: list[str]  # running jobs asked to stop
    hidden: list[str]  # public models taken off view


def suspend(session: Session, user_id: str, reason: str, actor: audit.Actor) -> Suspension | None:
    """None when the account was suspended already (one conditional UPDATE decides)."""
    moved = session.execute(update(User).where(User.id == user_id, User.suspended_reason.is_(None))
                            .values(suspended_reason=reason, suspended_at=utcnow())
                            .execution_options(synchronize_session=False)).rowcount
    if not moved:
        return None
    canceled, stopping = [], []
    for job_id in session.scalars(select(Job.id).where(
            Job.owner_id == user_id, Job.status.in_([*lifecycle.WAITING, JobStatus.running]))):
        outcome = lifecycle.cancel(session, job_id)
        if outcome == "canceled":
            canceled.append(job_id)
        elif outcome == "requested":
            stopping.append(job_id)
    hidden = list(session.scalars(
        update(PublishedModel).where(PublishedModel.owner_id == user_id, PublishedModel.hidden_reason.is_(None))
        .values(hidden_reason=SUSPENDED_NOTE).returning(PublishedModel.id)
        .execution_options(synchronize_session=False)))
    audit.record(session, actor, "user.suspend", "user", user_id, reason, canceled=canceled, stopping=stopping,
                 hidden=hidden)
    return Suspension(canceled, stopping, hidden)


def restore(session: Session, user_id: str, reason: str, actor: audit.Actor) -> bool:
    """False when the account was not suspended."""
    moved = session.execute(update(User).where(User.id == user_id, User.suspended_reason.is_not(None))
                            .values(suspended_reason=None, suspended_at=None)
                            .execution_options(synchronize_session=False)).rowcount
    if not moved:
        return False
    shown = list(session.scalars(
        update(PublishedModel).where(PublishedModel.owner_id == user_id, PublishedModel.hidden_reason == SUSPENDED_NOTE)
        .values(hidden_reason=None).returning(PublishedModel.id).execution_options(synchronize_session=False)))
    audit.record(session, actor, "user.restore", "user", user_id, reason, shown=shown)
    return True
