"""Screening, owned here: the site's policy over a classifier's scores, the states a screened image goes through,
and the moderation decisions on them. Nothing here loads a model (worker/screening.py does) or commits.

An image is scored by the configured tagger; every rule whose label scores above its threshold applies, and the
strictest one wins: allow < keep private < hold for review < refuse. Held images wait for an admin, who allows them
or confirms a violation: a strike against the owner, and at `strikes_to_suspend` strikes the account is suspended."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import audit, roles
from core.models import Image, Screening, User, utcnow
from core.screen_policy import Action, ScreenRule


class State(StrEnum):
    pending = "pending"  # not scored yet: not trained on, not shown
    allowed = "allowed"
    private = "private"
    held = "held"
    refused = "refused"
    removed = "removed"  # an admin confirmed a violation


STATE_OF = {Action.allow: State.allowed, Action.private: State.private, Action.hold: State.held,
            Action.refuse: State.refused}
TRAINABLE = (State.allowed, State.private)
SHOWN_TO_OTHERS = (State.allowed,)
PENDING_REASON = "waiting to be screened: it is not trained on or shown until then"


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str  # for the owner, in words; "" when allowed


# what the owner reads, by the action that applied
EXPLAINED = {
    Action.private: "kept private: {score} (this site shows images above {above} to their owner only)",
    Action.hold: "held for review: {score} (this site has an admin look at images above {above}); it is not trained "
                 "on or shown until then",
    Action.refuse: "refused: {score} (this site does not take images above {above})",
}


def judge(scores: dict[str, float], rules: Iterable[ScreenRule]) -> Verdict:
    """The strictest rule that applies (allowed when none does), with why."""
    hits = [rule for rule in rules if scores.get(rule.label, 0.0) > rule.above]
    order = list(Action)
    worst = max(hits, key=lambda rule: order.index(rule.action), default=None)
    if worst is None or worst.action == Action.allow:
        return Verdict(State.allowed, "")
    score = f"it scored {scores[worst.label]:.2f} for “{worst.label}”"
    return Verdict(STATE_OF[worst.action], EXPLAINED[worst.action].format(score=score, above=f"{worst.above:.2f}"))


def labels(rules: Iterable[ScreenRule]) -> set[str]:
    return {rule.label for rule in rules}


def wait(session: Session, owner_id: str, subject: str, subject_id: str, key: str, name: str) -> None:
    """A pending row for an image about to be screened by a worker."""
    session.add(Screening(owner_id=owner_id, subject=subject, subject_id=subject_id, key=key, name=name,
                          state=State.pending, reason=PENDING_REASON, scores={}))


def record(session: Session, owner_id: str, subject: str, subject_id: str, key: str, name: str, verdict: Verdict,
           scores: dict[str, float]) -> None:
    """The verdict on the image at `key`, over its pending row if it has one."""
    row = session.scalar(select(Screening).where(Screening.key == key))
    if row is None:
        row = Screening(owner_id=owner_id, subject=subject, subject_id=subject_id, key=key, name=name)
        session.add(row)
    elif row.state not in (State.pending,):
        return  # decided already (a redelivered task scores again; an admin's decision stands)
    row.state, row.reason, row.scores = verdict.state, verdict.reason, {k: round(v, 4) for k, v in scores.items()}


def untrainable_images(session: Session, dataset_id: str) -> dict[str, str]:
    """The dataset's images that must not be trained on now, with why."""
    rows = session.execute(select(Image.id, Screening.reason).join(Screening, Screening.key == Image.storage_key)
                           .where(Image.dataset_id == dataset_id, Screening.state.not_in(TRAINABLE)))
    return {row.id: row.reason for row in rows}


def pending_images(session: Session, dataset_id: str) -> list[str]:
    """The dataset's images still waiting to be screened, oldest first."""
    return list(session.scalars(select(Image.id).join(Screening, Screening.key == Image.storage_key)
                                .where(Image.dataset_id == dataset_id, Screening.state == State.pending)
                                .order_by(Image.created_at, Image.id)))


def stale_pending(session: Session, older_than_s: float) -> list[str]:
    """Screenings still pending after `older_than_s`: their task never reached a worker, or was lost."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return list(session.scalars(select(Screening.id).where(Screening.state == State.pending,
                                                           Screening.created_at < cutoff)))


def forget(session: Session, keys: Iterable[str]) -> None:
    """Files their owner deleted need no screening any more (a decided one is in the audit log)."""
    wanted = list(keys)
    if wanted:
        session.execute(delete(Screening).where(Screening.key.in_(wanted)))


def forget_under(session: Session, prefix: str) -> None:
    session.execute(delete(Screening).where(Screening.key.startswith(prefix, autoescape=True)))


def states(session: Session, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each screened file's state and reason, by key (files without a row were never screened: allowed)."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = session.execute(select(Screening.key, Screening.state, Screening.reason).where(Screening.key.in_(wanted)))
    return {row.key: (row.state, row.reason) for row in rows}


def hidden_keys(session: Session, keys: Iterable[str]) -> set[str]:
    """Of these stored files, those nobody but their owner may see."""
    wanted = list(keys)
    if not wanted:
        return set()
    return set(session.scalars(select(Screening.key).where(Screening.key.in_(wanted),
                                                           Screening.state.not_in(SHOWN_TO_OTHERS))))


def strike(session: Session, user_id: str, strikes_to_suspend: int, why: str) -> bool:
    """One more confirmed violation; True when it suspended the account (the policy acts, the audit log says so)."""
    row = session.execute(update(User).where(User.id == user_id).values(strikes=User.strikes + 1)
                          .returning(User.strikes).execution_options(synchronize_session=False)).first()
    if row is None or row.strikes < strikes_to_suspend:
        return False
    reason = f"{row.strikes} confirmed violations of this site's content rules (the last: {why})"
    return roles.suspend(session, user_id, reason, audit.POLICY) is not None


def decide(session: Session, screening_id: str, allow: bool, reason: str, actor: audit.Actor,
           strikes_to_suspend: int) -> Screening | None:
    """An admin's decision on a held image: allowed, or a confirmed violation (removed, a strike). None when it was
    not held (any more)."""
    row = session.get(Screening, screening_id)
    target = State.allowed if allow else State.removed
    moved = session.execute(update(Screening).where(Screening.id == screening_id, Screening.state == State.held)
                            .values(state=target, decided_by=actor.email, decided_at=utcnow(),
                                    reason="" if allow else f"removed by a moderator: {reason}")
                            .execution_options(synchronize_session=False)).rowcount
    if row is None or not moved:
        return None
    audit.record(session, actor, "screening.allow" if allow else "screening.violation", "screening", screening_id,
                 reason, owner=row.owner_id, key=row.key, subject=row.subject, subject_id=row.subject_id)
    if not allow:
        strike(session, row.owner_id, strikes_to_suspend, reason)
    session.refresh(row)
    return row
