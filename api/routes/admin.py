"""The operator's console, for admins only: anyone else gets 404, as for another user's objects. Each route parses,
calls one function of api/services/admin.py and shapes the answer; every change lands in the audit log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from api.admin_schemas import (
    AdminJobOut,
    AdminUserOut,
    AuditOut,
    LimitsIn,
    Reason,
    ReportDecision,
    ReportOut,
    ScreeningDecision,
    ScreeningOut,
    TopUp,
    WorkersOut,
)
from api.deps import AdminUser, PageDep, SessionDep, SettingsDep, StorageDep
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.services import admin as service
from api.services import moderation
from core import screening
from core.models import AuditEntry, JobStatus

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], responses=ERROR_RESPONSES)
Search = Annotated[str, Query(max_length=320, description="part of an email (or, for jobs, of a job name)")]


@router.get("/users", response_model=list[AdminUserOut])
def users(admin: AdminUser, session: SessionDep, settings: SettingsDep, page: PageDep,
          q: Search = "") -> list[dict[str, Any]]:
    return service.users(session, settings, q, page)


@router.get("/users/{user_id}", response_model=AdminUserOut)
def user(user_id: str, admin: AdminUser, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return service.user_view(session, settings, user_id)


@router.post("/users/{user_id}/suspend", response_model=AdminUserOut)
def suspend(user_id: str, body: Reason, admin: AdminUser, session: SessionDep,
            settings: SettingsDep) -> dict[str, Any]:
    """Suspends the account: its waiting jobs are canceled, running ones stop keeping their epochs, its public
    models are hidden, and signing in says why."""
    service.suspend(session, admin.actor, user_id, body.reason, settings)
    return service.user_view(session, settings, user_id)


@router.post("/users/{user_id}/restore", response_model=AdminUserOut)
def restore(user_id: str, body: Reason, admin: AdminUser, session: SessionDep,
            settings: SettingsDep) -> dict[str, Any]:
    service.restore(session, admin.actor, user_id, body.reason)
    return service.user_view(session, settings, user_id)


@router.post("/users/{user_id}/credits", response_model=AdminUserOut)
def top_up(user_id: str, body: TopUp, admin: AdminUser, session: SessionDep,
           settings: SettingsDep) -> dict[str, Any]:
    service.top_up(session, settings, admin.actor, user_id, body)
    return service.user_view(session, settings, user_id)


@router.put("/users/{user_id}/limits", response_model=AdminUserOut)
def limits(user_id: str, body: LimitsIn, admin: AdminUser, session: SessionDep,
           settings: SettingsDep) -> dict[str, Any]:
    service.set_limits(session, admin.actor, user_id, body)
    return service.user_view(session, settings, user_id)


@router.get("/jobs", response_model=list[AdminJobOut])
def jobs(admin: AdminUser, session: SessionDep, settings: SettingsDep, page: PageDep, q: Search = "",
         status: JobStatus | None = None) -> list[dict[str, Any]]:
    """Every user's jobs, newest first; a waiting one says why it waits."""
    return service.jobs(session, settings, status, q, page)


@router.post("/jobs/{job_id}/cancel", status_code=204)
def cancel_job(job_id: str, body: Reason, admin: AdminUser, session: SessionDep, settings: SettingsDep) -> None:
    service.cancel_job(session, admin.actor, job_id, body.reason, settings)


@router.post("/jobs/{job_id}/requeue", status_code=204)
def requeue_job(job_id: str, body: Reason, admin: AdminUser, session: SessionDep, request: Request) -> None:
    """A failed or interrupted job resumes from its last stored epoch."""
    service.requeue_job(session, admin.actor, job_id, body.reason, request)


@router.get("/workers")
def workers(admin: AdminUser, session: SessionDep, settings: SettingsDep, request: Request) -> WorkersOut:
    return WorkersOut.model_validate(service.workers(session, settings, request))


@router.get("/audit", response_model=list[AuditOut])
def audit_log(admin: AdminUser, session: SessionDep, page: PageDep,
              target: Annotated[str | None, Query(max_length=32, description="one user's or job's entries")] = None
              ) -> list[AuditEntry]:
    return service.audit_log(session, page, target)


@router.get("/moderation/screenings", response_model=list[ScreeningOut])
def screenings(admin: AdminUser, session: SessionDep, storage: StorageDep, page: PageDep,
               state: screening.State = screening.State.held) -> list[dict[str, Any]]:
    """The images the site's screening held (or, by `state`, any others), oldest first."""
    return moderation.screenings(session, storage, state, page)


@router.post("/moderation/screenings/{screening_id}", status_code=204)
def decide_screening(screening_id: str, body: ScreeningDecision, admin: AdminUser, session: SessionDep,
                     settings: SettingsDep) -> None:
    """Allow a held image, or confirm a violation (never used; a strike against its owner)."""
    moderation.decide_screening(session, settings, admin.actor, screening_id, body)


@router.get("/moderation/reports", response_model=list[ReportOut])
def reports(admin: AdminUser, session: SessionDep, page: PageDep,
            state: Literal["open", "dismissed", "upheld"] = "open") -> list[dict[str, Any]]:
    return moderation.report_rows(session, page, state=state)


@router.post("/moderation/reports/{report_id}", status_code=204)
def decide_report(report_id: str, body: ReportDecision, admin: AdminUser, session: SessionDep,
                  settings: SettingsDep) -> None:
    """Dismiss a report, or uphold it: the model is hidden and its owner gets a strike."""
    moderation.decide_report(session, settings, admin.actor, report_id, body)
