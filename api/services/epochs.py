"""A job's stored epochs, and the light tasks that use one: a test generation, a plain-LoRA copy."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import dispatch_task
from api.errors import Conflict, Invalid, NotFound
from api.schemas import GenerateIn, SweepIn
from core.models import Conversion, Epoch, Generation, Job, Sweep
from core.queue import CONVERT_TASK, GENERATE_TASK, SWEEP_TASK
from trainer.job.config import ConfigError
from trainer.job.prompts import SAMPLER_ALIASES, extract_lora_tags, parse_prompt_line


def find_epoch(job: Job, n: int, session: Session) -> Epoch:
    epoch = session.scalar(select(Epoch).where(Epoch.job_id == job.id, Epoch.n == n))
    if epoch is None:
        raise NotFound(f"epoch {n} not found")
    return epoch


def queue_generation(session: Session, job: Job, n: int, body: GenerateIn, request: Request,
                     requester_id: str | None = None) -> Generation:
    """Queues a generation with epoch `n` ("test this epoch"); the prompt's <lora:…> tags may name only it. It
    belongs to whoever asked (the job's owner, or a user trying a public model)."""
    find_epoch(job, n, session)
    _known_sampler(body.sampler)
    try:
        _, tags = extract_lora_tags(body.prompt)
    except ConfigError as exc:
        raise Invalid("the prompt has problems", exc.problems) from None
    unknown = sorted({name for name, _ in tags} - {job.name, job.epoch_lora_name(n)})
    if unknown:
        raise Invalid(f"unknown LoRA name(s) {', '.join(unknown)}; this epoch is <lora:{job.name}:weight>",
                      [{"field": "prompt", "message": f"unknown LoRA name(s) {', '.join(unknown)}"}])
    generation = Generation(owner_id=requester_id or job.owner_id, job_id=job.id, epoch_n=n,
                            request=body.model_dump())
    session.add(generation)
    session.commit()
    dispatch_task(request, session, generation, GENERATE_TASK)
    return generation


def plain_lora_copy(session: Session, job: Job, n: int, rank: int, request: Request) -> Conversion:
    """Queues epoch `n` made into a plain LoRA of `rank`."""
    find_epoch(job, n, session)
    conversion = Conversion(owner_id=job.owner_id, job_id=job.id, epoch_n=n, rank=rank, report={})
    session.add(conversion)
    session.commit()
    dispatch_task(request, session, conversion, CONVERT_TASK)
    return conversion


DEFAULT_SWEEP_EPOCHS = 12  # the latest ones, when the request names none


def queue_sweep(session: Session, job: Job, body: SweepIn, request: Request) -> Sweep:
    """Queues an epoch × weight grid over stored epochs, with the base model's own image as the first cell."""
    stored = list(session.scalars(select(Epoch.n).where(Epoch.job_id == job.id).order_by(Epoch.n)))
    if not stored:
        raise Conflict("no epoch is stored yet: a sweep compares stored epochs")
    epochs = sorted(set(body.epochs)) if body.epochs else stored[-DEFAULT_SWEEP_EPOCHS:]
    missing = [n for n in epochs if n not in stored]
    if missing:
        raise Invalid(f"epoch(s) {', '.join(map(str, missing))} are not stored; stored: "
                      f"{', '.join(map(str, stored))}")
    _known_sampler(body.sampler)
    try:  # a preview-prompt line: its --n becomes the negative prompt, other flags are dropped
        line = parse_prompt_line(body.prompt or (job.sample_prompts[:1] or [job.name])[0])
        prompt, _ = extract_lora_tags(line.prompt)
    except ConfigError as exc:
        raise Invalid("the prompt has problems", exc.problems) from None
    weights = list(dict.fromkeys(body.weights))
    values = {**body.model_dump(), "prompt": prompt.strip() or job.name, "negative": body.negative or line.negative,
              "epochs": epochs, "weights": weights}
    sweep = Sweep(owner_id=job.owner_id, job_id=job.id, request=values, total=1 + len(epochs) * len(weights))
    session.add(sweep)
    session.commit()
    dispatch_task(request, session, sweep, SWEEP_TASK)
    return sweep


def _known_sampler(name: str) -> None:
    if name.lower() not in SAMPLER_ALIASES:
        raise Invalid(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_ALIASES)}",
                      [{"field": "sampler", "message": "unknown sampler"}])
