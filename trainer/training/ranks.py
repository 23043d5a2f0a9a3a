"""One run on several processes, one per GPU (gloo on a CPU): data parallel, as DDP does it.

This process becomes rank 0: it keeps the callbacks, so saving, previews, metadata, state and uploads happen here
only. The other ranks are started with accelerate's launch preparation (`PrepareForLaunch`: the environment
torch.distributed reads) and train with no callbacks. The loop (loop.py) gives each process its own batches;
`average_gradients` is the all-reduce DDP would do, done on the LoRA's flat gradients once per optimizer step,
because the network hooks into the model instead of being the module a DDP wrapper could run.

A rank that dies breaks the next all-reduce on the others: rank 0 raises `RankLost`, which the service treats like a
lost worker (the job goes back to the queue and resumes from its last stored epoch).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import PrepareForLaunch, patch_environment

if TYPE_CHECKING:
    from trainer.job.config import TrainConfig
    from trainer.training.callbacks import Callbacks
    from trainer.training.loop import TrainResult

log = logging.getLogger(__name__)
# how long a rank waits for the others at an all-reduce: rank 0 renders previews and saves while they wait
RANK_TIMEOUT = timedelta(minutes=30)
JOIN_S = 60.0  # after rank 0 is done, how long the others get to finish their last step


class RankLost(RuntimeError):
    """Another process of the run ended before it (killed, or it failed): the attempt cannot go on."""


def average_gradients(accelerator: Accelerator, network: torch.nn.Module, stats: list[float]) -> list[float]:
    """Every process ends with the mean of the processes' gradients (a process without a batch adds zeros, as a
    short last accumulation does on one process), and the sums of `stats` over the processes."""
    if accelerator.num_processes == 1:
        return stats
    params = [p for p in network.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    for param, piece in zip(params, flat.split([p.numel() for p in params]), strict=True):
        param.grad = piece.view_as(param)
    summed = accelerator.reduce(torch.tensor(stats, dtype=torch.float64, device=flat.device), reduction="sum")
    return summed.tolist()


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when it is true on one (rank 0's stop request reaches the others)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum").item())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(values: dict) -> None:
    from trainer.job.config import TrainConfig
    from trainer.lifetime import die_with_parent
    from trainer.training.loop import train

    die_with_parent()  # a killed attempt leaves no rank waiting on its GPU
    train(TrainConfig.model_validate(values))


def _lost(children: list[multiprocessing.Process]) -> str | None:
    """Which other process ended badly, in words; None when none did."""
    for rank, child in enumerate(children, start=1):
        child.join(timeout=1.0)
        if child.exitcode not in (None, 0):
            return f"process {rank} of {len(children) + 1} ended with exit code {child.exitcode}"
    return None


def train_processes(cfg: TrainConfig, callbacks: Callbacks | None = None,
                    started: list[multiprocessing.Process] | None = None) -> TrainResult:
    """Trains `cfg` on cfg.gpus processes (this one and cfg.gpus − 1 started here); `started` receives the other
    processes as they start (tests stop one on purpose)."""
    from trainer.training.loop import train

    if cfg.gpus == 1:
        return train(cfg, callbacks)
    gpu = torch.cuda.is_available()
    if gpu and torch.cuda.device_count() < cfg.gpus:
        from trainer.job.config import ConfigError

        raise ConfigError.about("gpus", f"{cfg.gpus} GPUs asked for, {torch.cuda.device_count()} visible")
    shared = {"master_addr": "127.0.0.1", "master_port": str(_free_port()), "world_size": str(cfg.gpus),
              "local_world_size": str(cfg.gpus), "nproc": str(cfg.gpus)}
    threads = torch.get_num_threads()
    if not gpu:  # the processes share the cores
        shared.update(gloo_socket_ifname="lo", omp_num_threads=str(max(1, (os.cpu_count() or 1) // cfg.gpus)))
        torch.set_num_threads(int(shared["omp_num_threads"]))
    launch = PrepareForLaunch(_rank_main, distributed_type="MULTI_GPU" if gpu else "MULTI_CPU")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: never a copy of a worker's threads
    children: list[multiprocessing.Process] = []
    with patch_environment(**shared):
        try:
            for rank in range(1, cfg.gpus):
                child = context.Process(target=launch, args=(rank, cfg.model_dump()), name=f"rank-{rank}")
                child.start()
                children.append(child)
                if started is not None:
                    started.append(child)
            with patch_environment(rank="0", local_rank="0"):
                try:
                    result = train(cfg, callbacks)
                except Exception as exc:
                    if (lost := _lost(children)) is not None:
                        raise RankLost(lost) from exc
                    raise
            for child in children:
                child.join(timeout=JOIN_S)
            if (lost := _lost(children)) is not None:  # after the last all-reduce: nothing of the run is missing
                log.warning("%s after the run ended", lost)
            return result
        finally:
            torch.set_num_threads(threads)
            for child in children:
                if child.is_alive():
                    child.terminate()
                    child.join(timeout=10.0)
            if torch.distributed.is_initialized():
                with contextlib.suppress(Exception):
                    torch.distributed.destroy_process_group()
