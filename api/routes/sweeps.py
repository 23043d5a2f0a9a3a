"""Epoch × weight sweeps of a job: one action renders the grid (a light GPU task), the page follows its cells."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, OwnedJob, PageDep, SessionDep, StorageDep, dispatch_task, owned
from api.errors import ERROR_RESPONSES, Conflict, Invalid
from api.routes import API_PREFIX
from api.schemas import SweepIn, SweepOut
from api.waiting import LIGHT_TASKS, waiting_for
from core.models import Epoch, Sweep
from core.queue import SWEEP_TASK
from core.storage import Storage
from trainer.job.config import ConfigError
from trainer.job.prompts import SAMPLER_ALIASES, extract_lora_tags, parse_prompt_line

router = APIRouter(prefix=API_PREFIX, tags=["sweeps"], responses=ERROR_RESPONSES)
DEFAULT_EPOCHS = 12


def sweep_out(sweep: Sweep, storage: Storage, session: Session) -> SweepOut:
    request = sweep.request
    return SweepOut(id=sweep.id, status=sweep.status, done=sweep.done, total=sweep.total, epochs=request["epochs"],
                    weights=request["weights"], prompt=request["prompt"], negative=request["negative"],
                    seed=request["seed"], steps=request.get("steps"), error=sweep.error,
                    cells=[[storage.signed_url(k) for k in row] for row in sweep.cell_keys],
                    grid_url=storage.signed_url(sweep.grid_key, "sweep.png") if sweep.grid_key else None,
                    waiting_for=waiting_for(session, sweep, LIGHT_TASKS))


@router.post("/jobs/{job_id}/sweeps", status_code=status.HTTP_202_ACCEPTED)
def start_sweep(body: SweepIn, job: OwnedJob, request: Request, user: CurrentUser, session: SessionDep,
                storage: StorageDep) -> SweepOut:
    stored = list(session.scalars(select(Epoch.n).where(Epoch.job_id == job.id).order_by(Epoch.n)))
    if not stored:
        raise Conflict("no epoch is stored yet: a sweep compares stored epochs")
    epochs = sorted(set(body.epochs)) if body.epochs else stored[-DEFAULT_EPOCHS:]
    missing = [n for n in epochs if n not in stored]
    if missing:
        raise Invalid(f"epoch(s) {', '.join(map(str, missing))} are not stored; stored: "
                      f"{', '.join(map(str, stored))}")
    if body.sampler.lower() not in SAMPLER_ALIASES:
        raise Invalid(f"unknown sampler {body.sampler!r}; choose one of {', '.join(SAMPLER_ALIASES)}")
    try:  # a preview-prompt line: its --n becomes the negative prompt, other flags are dropped
        line = parse_prompt_line(body.prompt or (job.sample_prompts[:1] or [job.name])[0])
        prompt, _ = extract_lora_tags(line.prompt)
    except ConfigError as exc:
        raise Invalid("the prompt has problems", exc.problems) from None
    weights = list(dict.fromkeys(body.weights))
    values = {**body.model_dump(), "prompt": prompt.strip() or job.name, "negative": body.negative or line.negative,
              "epochs": epochs, "weights": weights}
    sweep = Sweep(owner_id=user.id, job_id=job.id, request=values, total=1 + len(epochs) * len(weights))
    session.add(sweep)
    session.commit()
    dispatch_task(request, session, sweep, SWEEP_TASK)
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
