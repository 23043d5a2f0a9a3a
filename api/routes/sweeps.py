"""Epoch × weight sweeps of a job: one action renders the grid (a light GPU task), the page follows its cells."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, OwnedJob, PageDep, SessionDep, StorageDep, owned
from api.errors import ERROR_RESPONSES
from api.routes import API_PREFIX
from api.schemas import SweepIn, SweepOut
from api.services.epochs import queue_sweep
from api.waiting import LIGHT_TASKS, waiting_for
from core.models import Sweep
from core.storage import Storage

router = APIRouter(prefix=API_PREFIX, tags=["sweeps"], responses=ERROR_RESPONSES)


def sweep_out(sweep: Sweep, storage: Storage, session: Session) -> SweepOut:
    request = sweep.request
    return SweepOut(id=sweep.id, status=sweep.status, done=sweep.done, total=sweep.total, epochs=request["epochs"],
                    weights=request["weights"], prompt=request["prompt"], negative=request["negative"],
                    seed=request["seed"], steps=request.get("steps"), error=sweep.error,
                    cells=[[storage.signed_url(k) for k in row] for row in sweep.cell_keys],
                    grid_url=storage.signed_url(sweep.grid_key, "sweep.png") if sweep.grid_key else None,
                    waiting_for=waiting_for(session, sweep, LIGHT_TASKS))


@router.post("/jobs/{job_id}/sweeps", status_code=status.HTTP_202_ACCEPTED)
def start_sweep(body: SweepIn, job: OwnedJob, request: Request, session: SessionDep,
                storage: StorageDep) -> SweepOut:
    sweep = queue_sweep(session, job, body, request)
    return sweep_out(sweep, storage, session)


@router.get("/jobs/{job_id}/sweeps")
def list_sweeps(job: OwnedJob, session: SessionDep, storage: StorageDep, page: PageDep) -> list[SweepOut]:
    """A page of the job's sweeps, newest first."""
    newest_first = select(Sweep).where(Sweep.job_id == job.id).order_by(Sweep.created_at.desc(), Sweep.id)
    rows = session.scalars(page.of(newest_first))
    return [sweep_out(s, storage, session) for s in rows]


@router.get("/sweeps/{sweep_id}")
def get_sweep(sweep_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep) -> SweepOut:
    return sweep_out(owned(session, Sweep, sweep_id, user.id, "sweep"), storage, session)
