"""The site's screening policy as settings spell it (LORABAKE_SCREEN_RULES); core/screening.py applies it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Action(StrEnum):
    """What a rule does, mildest first."""

    allow = "allow"
    private = "private"  # its owner may use it (train on it), nobody else may see it
    hold = "hold"  # neither trained on nor shown until an admin decides
    refuse = "refuse"  # never used


class ScreenRule(BaseModel):
    """One line of the site policy: when `label` scores above `above`, do `action`."""

    label: str = Field(min_length=1, description="a tag of the screening tagger (e.g. explicit, questionable, blood)")
    above: float = Field(ge=0, le=1)
    action: Action
