"""The audit log: every admin action, and every one the site's policy takes by itself, with who did it and why. Written
in the same transaction as the action, so an action never happens without its entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.models import AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who acts: an admin (id and email), or the site's policy (id None)."""

    id: str | None
    email: str


POLICY = Actor(None, "policy")  # actions the settings take by themselves (e.g. a suspension after N strikes)


def record(session: Session, actor: Actor, action: str, target_kind: str, target_id: str, reason: str,
           **details: Any) -> None:
    session.add(AuditEntry(actor_id=actor.id, actor_email=actor.email, action=action, target_kind=target_kind,
                           target_id=target_id, reason=reason, details=details))
