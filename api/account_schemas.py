"""What users see of their own standing: their credits (GET /me/credits, /me/credits/moves) and the reports
about their models (GET /models/{id}/reports)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class CreditsOut(BaseModel):
    balance: int = Field(description="credits to spend now (this month's grant included)")
    held: int = Field(description="credits held by queued and running jobs for the epochs they have yet to train")
    monthly_grant: int = Field(description="credits added at the start of every month (0: none)")
    priced: bool = Field(description="false: training is free on this server")


class CreditMoveOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    kind: str = Field(description="grant, top_up, hold, charge or release")
    amount: int
    balance: int = Field(description="the balance after this move")
    job_id: str | None
    note: str
    created_at: datetime


class ModelReportOut(BaseModel):
    """A report about your model as you see it: what was said and decided, not who said it."""

    id: str
    reason: str
    state: str = Field(description="open, dismissed or upheld")
    decision: str | None = Field(description="the moderator's reason")
    created_at: datetime
    decided_at: datetime | None
