"""What the operator's console sends and gets (api/routes/admin.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import JobSummary, Text


class Reason(BaseModel):
    reason: Text = Field(min_length=3, max_length=2000, description="why; kept in the audit log and shown to the "
                         "user where it concerns them")


class TopUp(Reason):
    amount: int = Field(description="credits to add; negative takes some away (never below zero)",
                        ge=-10**12, le=10**12)


class LimitsIn(Reason):
    max_running_jobs: int | None = Field(None, ge=1, le=1000, description="null: the site's setting")
    max_waiting_jobs: int | None = Field(None, ge=1, le=10000, description="null: the site's setting")


class AdminUserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    email: str
    role: str
    created_at: datetime
    suspended_reason: str | None
    suspended_at: datetime | None
    credits: int
    max_running_jobs: int | None
    max_waiting_jobs: int | None
    strikes: int = Field(description="confirmed content violations")
    running: int = 0
    waiting: int = 0


class AdminJobOut(JobSummary):
    owner_id: str
    owner_email: str
    worker: str | None
    heartbeat_at: datetime | None
    credits_held: int
    waiting_because: str | None = Field(None, description="for a job that has not started: why, in words")


class GpuOut(BaseModel):
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int


class WorkerOut(BaseModel):
    name: str
    queues: list[str]
    gpus: list[GpuOut]
    started_at: datetime
    heartbeat_age_s: float
    jobs: list[str] = Field(description="ids of the training jobs it runs now")


class WorkersOut(BaseModel):
    workers: list[WorkerOut]
    queues: dict[str, int | None] = Field(description="messages waiting per queue (null: the broker did not answer)")
    jobs_queued: int
    jobs_running: int


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    actor_email: str
    action: str
    target_kind: str
    target_id: str
    reason: str
    details: dict[str, Any]
    created_at: datetime


class ScreeningDecision(Reason):
    decision: Literal["allow", "violation"] = Field(description="allow: it may be trained on and shown; violation: "
                                                    "never used, and a strike against its owner")


class ReportDecision(Reason):
    decision: Literal["dismiss", "uphold"] = Field(description="uphold: the model is hidden and its owner gets a "
                                                   "strike")


class ScreeningOut(BaseModel):
    id: str
    owner_id: str
    owner_email: str
    subject: str = Field(description="image (a dataset's), preview, generation, sweep or showcase")
    subject_id: str
    name: str
    state: str
    reason: str
    scores: dict[str, float]
    url: str = Field(description="a signed link to the picture, for the moderator")
    decided_by: str | None
    created_at: datetime


class ReportOut(BaseModel):
    id: str
    model_id: str
    model_name: str
    owner_email: str
    reporter_email: str
    reason: str
    state: str
    decided_by: str | None
    decision: str | None
    created_at: datetime
