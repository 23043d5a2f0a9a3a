"""Credits, owned here: prices, and the ledger of every move. Each move is one conditional UPDATE (zero rows: the
move cannot happen, e.g. the balance would go below zero or an epoch was charged already) plus its CreditMove row,
in the caller's transaction: nothing here commits.

The flow of a job's credits: its whole price is *held* when it is queued (taken from the balance onto the job), each
finished epoch is *charged* from what the job holds, and what is left is *released* back to the balance when the job
ends (canceled, failed, or finished early). "Continue training" holds the price of the added epochs."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.estimates import RunShape
from core.models import CreditMove, Job, User, utcnow
from core.settings import Settings

MEGAPIXEL_SIDE = 1024  # prices are per 1000 samples at 1024×1024


class MoveKind(StrEnum):
    grant = "grant"  # the monthly grant: + balance
    top_up = "top_up"  # an admin's: + balance (or − with a reason, never below zero)
    hold = "hold"  # a job's price: balance → job
    charge = "charge"  # a finished epoch: job → spent
    release = "release"  # what an ended job did not use: job → balance


class NotEnoughCredits(Exception):
    def __init__(self, price: int, balance: int) -> None:
        super().__init__(f"this costs {price} credits and you have {balance}")
        self.price, self.balance = price, balance


def epoch_price(settings: Settings, shape: RunShape, steps_per_epoch: int) -> int:
    """One epoch's price: the family's rate per 1000 samples at 1024², times the samples an epoch trains (steps ×
    images per step) and the pixels of each relative to 1024². Rounded up; 0 when the family is free."""
    rate = settings.credit_prices.get(shape.family, settings.credit_price_default)
    if rate <= 0:
        return 0
    pixels = shape.width * shape.height / MEGAPIXEL_SIDE**2
    return max(1, math.ceil(rate * steps_per_epoch * shape.batch_size * pixels / 1000 - 1e-9))


def _record(session: Session, user_id: str, kind: MoveKind, amount: int, balance: int, job_id: str | None = None,
            note: str = "") -> None:
    session.add(CreditMove(user_id=user_id, job_id=job_id, kind=kind, amount=amount, balance=balance, note=note))


def _add(session: Session, user_id: str, amount: int, *, at_least: int = 0) -> int | None:
    """balance += amount where the balance stays ≥ at_least afterwards; the new balance, or None."""
    row = session.execute(update(User).where(User.id == user_id, User.credits + amount >= at_least)
                          .values(credits=User.credits + amount).returning(User.credits)
                          .execution_options(synchronize_session=False)).first()
    return None if row is None else row.credits


def balance(session: Session, user_id: str) -> int:
    return session.scalar(select(User.credits).where(User.id == user_id)) or 0


def spendable(session: Session, settings: Settings, user_id: str, now: datetime | None = None) -> int:
    """The balance as it will be at the next move: with this month's grant when it is not added yet (a read
    adds nothing; the grant lands with the first hold of the month)."""
    row = session.execute(select(User.credits, User.granted_month).where(User.id == user_id)).first()
    return 0 if row is None else with_grant(settings, row.credits, row.granted_month, now)


def with_grant(settings: Settings, credits: int, granted_month: str | None, now: datetime | None = None) -> int:
    """A balance with this month's grant when it is still to come."""
    due = granted_month != (now or utcnow()).strftime("%Y-%m")
    return credits + (settings.monthly_credits if due else 0)


def held(session: Session, user_id: str) -> int:
    return session.scalar(select(func.sum(Job.credits_held)).where(Job.owner_id == user_id)) or 0


def priced(settings: Settings) -> bool:
    return settings.credit_price_default > 0 or any(rate > 0 for rate in settings.credit_prices.values())


def grant_monthly(session: Session, settings: Settings, user_id: str, now: datetime | None = None) -> bool:
    """This month's grant, once per calendar month (UTC), on the first look at the balance that month."""
    if settings.monthly_credits <= 0:
        return False
    month = (now or utcnow()).strftime("%Y-%m")
    row = session.execute(update(User).where(User.id == user_id,
                                             (User.granted_month.is_(None)) | (User.granted_month != month))
                          .values(credits=User.credits + settings.monthly_credits, granted_month=month)
                          .returning(User.credits).execution_options(synchronize_session=False)).first()
    if row is None:
        return False
    _record(session, user_id, MoveKind.grant, settings.monthly_credits, row.credits, note=f"monthly grant {month}")
    return True


def top_up(session: Session, user_id: str, amount: int, note: str) -> int:
    """An admin's top-up (negative: a deduction, which may not take the balance below zero). The new balance;
    NotEnoughCredits when a deduction is larger than the balance."""
    new = _add(session, user_id, amount)
    if new is None:
        raise NotEnoughCredits(-amount, balance(session, user_id))
    _record(session, user_id, MoveKind.top_up, amount, new, note=note)
    return new


def hold(session: Session, user_id: str, job_id: str, amount: int, note: str) -> None:
    """Takes `amount` from the balance onto the job, or raises NotEnoughCredits; of two jobs racing for the same
    credits, the second finds the balance already lowered and is refused."""
    if amount <= 0:
        return
    new = _add(session, user_id, -amount)
    if new is None:
        raise NotEnoughCredits(amount, balance(session, user_id))
    session.execute(update(Job).where(Job.id == job_id).values(credits_held=Job.credits_held + amount)
                    .execution_options(synchronize_session=False))
    _record(session, user_id, MoveKind.hold, amount, new, job_id, note)


def spend(session: Session, user_id: str, amount: int, note: str) -> None:
    """Pays `amount` from the balance at once (a test of someone else's model), or raises NotEnoughCredits."""
    new = _add(session, user_id, -amount)
    if new is None:
        raise NotEnoughCredits(amount, balance(session, user_id))
    _record(session, user_id, MoveKind.charge, amount, new, note=note)


def charge_epoch(session: Session, job_id: str, epoch: int) -> bool:
    """Epoch `epoch` (and any before it not charged yet) is paid from what the job holds — all of it when it holds
    less (an admin's re-queue holds nothing). The job's charged_epochs is the fence: an epoch stored again by a
    resumed attempt finds it charged and pays nothing."""
    job = session.execute(select(Job.owner_id, Job.epoch_price, Job.charged_epochs, Job.credits_held)
                          .where(Job.id == job_id)).first()
    if job is None or job.charged_epochs >= epoch:
        return False
    paid = min(job.epoch_price * (epoch - job.charged_epochs), job.credits_held)
    moved = session.execute(update(Job).where(Job.id == job_id, Job.charged_epochs == job.charged_epochs,
                                              Job.credits_held == job.credits_held)
                            .values(charged_epochs=epoch, credits_held=job.credits_held - paid)
                            .execution_options(synchronize_session=False)).rowcount
    if not moved:
        return False
    if paid:
        first = job.charged_epochs + 1
        _record(session, job.owner_id, MoveKind.charge, paid, balance(session, job.owner_id), job_id,
                f"epoch {epoch}" if first == epoch else f"epochs {first}–{epoch}")
    return True


def release(session: Session, job_id: str, why: str) -> int:
    """Gives what the job still holds back to its owner's balance; the amount (0 when it held nothing)."""
    job = session.execute(select(Job.owner_id, Job.credits_held).where(Job.id == job_id)).first()
    if job is None or job.credits_held <= 0:
        return 0
    moved = session.execute(update(Job).where(Job.id == job_id, Job.credits_held == job.credits_held)
                            .values(credits_held=0).execution_options(synchronize_session=False)).rowcount
    if not moved:
        return 0
    new = _add(session, job.owner_id, job.credits_held)
    _record(session, job.owner_id, MoveKind.release, job.credits_held, new, job_id, why)
    return job.credits_held
