"""Which worker can run which job: a job needs a number of GPUs (one process on each) with enough memory on every
one; a worker offers the GPUs it owns, as it reports them (worker/presence.py). Used by the claim (core/jobs.py),
by the queue's "why is it waiting" and by the refusal at submit (api). No torch.

A worker that reports no GPU trains on its CPU: it takes one-process jobs of any size (the memory estimate is
about GPUs), and never a job that asks for several GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class Need:
    gpus: int = 1
    memory_mib: int | None = None  # on each GPU, at the run's peak; None: not estimated (small models)


@dataclass(frozen=True)
class Capacity:
    """A worker's GPUs in the order its processes use them (cuda:0, cuda:1, …)."""

    total_mib: tuple[int, ...] = ()
    free_mib: tuple[int, ...] = ()

    @classmethod
    def of(cls, gpus: Iterable[dict[str, Any]]) -> Capacity:
        """From presence's report: [{"memory_total_mb", "memory_used_mb", …}, …] (nvidia-smi's MB are MiB)."""
        listed = [g for g in gpus if g.get("memory_total_mb")]
        return cls(tuple(int(g["memory_total_mb"]) for g in listed),
                   tuple(int(g["memory_total_mb"]) - int(g.get("memory_used_mb") or 0) for g in listed))

    @property
    def cpu_only(self) -> bool:
        return not self.total_mib

    def _fits(self, need: Need, memory: tuple[int, ...]) -> bool:
        if self.cpu_only:
            return need.gpus == 1
        used = memory[:need.gpus]
        return len(used) == need.gpus and (need.memory_mib is None or min(used) >= need.memory_mib)

    def fits_now(self, need: Need) -> bool:
        return self._fits(need, self.free_mib)

    def could_ever_fit(self, need: Need) -> bool:
        return self._fits(need, self.total_mib)


def _gib(mib: int) -> str:
    return f"{mib / MIB_PER_GIB:.0f} GB"


def _wanted(need: Need) -> str:
    gpus = "a GPU" if need.gpus == 1 else f"{need.gpus} GPUs"
    return gpus + (f" with {_gib(need.memory_mib)}" + (" each" if need.gpus > 1 else "")
                   if need.memory_mib is not None else "")


def never_runs(need: Need, workers: Sequence[Capacity]) -> str | None:
    """Why no live training worker could ever run the job; None when one could, or when no worker reported (one
    may start later)."""
    if not workers or any(w.could_ever_fit(need) for w in workers):
        return None
    most = max(len(w.total_mib) for w in workers)
    if need.gpus > max(most, 1):
        return f"it asks for {need.gpus} GPUs and no training worker has more than {most}"
    largest = max((m for w in workers for m in w.total_mib), default=0)
    if not largest:
        return f"it needs {_wanted(need)} and the training workers run on their CPUs only"
    return f"it needs {_wanted(need)} and the largest GPU of this server's training workers has {_gib(largest)}"


def waiting_for(need: Need, idle: Sequence[Capacity]) -> str | None:
    """Why a queued job waits although workers are free: none of them fits it ("waiting for a GPU with 40 GB:
    largest free 24 GB"); None when one does, when none is free (the job waits its turn like any other) or when
    the job asks nothing special."""
    if (need.memory_mib is None and need.gpus == 1) or not idle or any(w.fits_now(need) for w in idle):
        return None
    free = max((m for w in idle for m in w.free_mib), default=0)
    return f"waiting for {_wanted(need)}: " + (f"largest free {_gib(free)}" if free else "the free workers have no GPU")
