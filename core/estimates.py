"""One estimator for the train page, the queue and the job page: how long a run takes on this server, learned from
the runs it finished. A run is setup (materialise, load, cache) + steps × time per step + epochs × an epoch's end
(save, upload, previews). Runs of the same family, resolution and batch size are the measurement; those of the same
family at another resolution or batch are scaled by the pixels a step handles. Without either, there is no number:
the pages say "no measurement on this server yet" rather than invent one."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import RunTiming

if TYPE_CHECKING:
    from trainer.job.config import TrainConfig

RECENT = 5  # the latest runs of a kind; a median of them, so one disturbed run does not move the estimate


@dataclass(frozen=True)
class RunShape:
    family: str
    width: int
    height: int
    batch_size: int  # images per step: the batch times gradient accumulation

    @classmethod
    def of(cls, family: str, cfg: TrainConfig) -> RunShape:
        width, height = cfg.resolution_wh
        return cls(family, width, height, cfg.train_batch_size * cfg.gradient_accumulation_steps)

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def pixels_per_step(self) -> int:
        return self.width * self.height * self.batch_size


def record(session: Session, shape: RunShape, steps: int, epochs: int, setup_s: float, step_s: float,
           total_s: float) -> RunTiming:
    """Stores a finished run (the caller commits); what setup and steps do not explain is the epochs' ends."""
    epoch_s = max(0.0, total_s - setup_s - steps * step_s) / max(1, epochs)
    timing = RunTiming(family=shape.family, resolution=shape.resolution, batch_size=shape.batch_size, steps=steps,
                       epochs=epochs, setup_s=setup_s, step_s=step_s, epoch_s=epoch_s)
    session.add(timing)
    return timing


def estimate_seconds(session: Session, shape: RunShape, steps: int, epochs: int) -> float | None:
    """Seconds the run will take here, or None when this server has finished no run of the family yet."""
    same = list(session.scalars(
        select(RunTiming).where(RunTiming.family == shape.family, RunTiming.resolution == shape.resolution,
                                RunTiming.batch_size == shape.batch_size)
        .order_by(RunTiming.created_at.desc()).limit(RECENT)))
    scale = 1.0
    if not same:
        same = list(session.scalars(select(RunTiming).where(RunTiming.family == shape.family)
                                    .order_by(RunTiming.created_at.desc()).limit(RECENT)))
        if not same:
            return None
        measured = statistics.median(_pixels(t) for t in same)
        scale = shape.pixels_per_step / measured
    setup = statistics.median(t.setup_s for t in same)
    step = statistics.median(t.step_s for t in same) * scale
    epoch_end = statistics.median(t.epoch_s for t in same)
    return round(setup + steps * step + epochs * epoch_end, 1)


def _pixels(timing: RunTiming) -> int:
    width, height = (int(v) for v in timing.resolution.split("x"))
    return width * height * timing.batch_size
