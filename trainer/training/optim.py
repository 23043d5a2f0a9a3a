"""Optimizers and learning-rate schedules by their sd-scripts names."""

from __future__ import annotations

import ast
import importlib
from functools import partial

import torch
from diffusers.optimization import get_scheduler

from trainer.job.config import ConfigError, TrainConfig
from trainer.job.optimizers import OPTIMIZERS, Optimizer


def optimizer_kwargs(args: list[str]) -> dict:
    out = {}
    for item in args:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError.about("optimizer_args", f'"{item}" is not key=value')
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def _optimizer_class(optimizer: Optimizer) -> type[torch.optim.Optimizer]:
    try:
        return getattr(importlib.import_module(optimizer.module), optimizer.cls)
    except ImportError:
        raise ConfigError.about("optimizer_type", f"{optimizer.name} needs the package {optimizer.package}, "
                           "which is not installed") from None


def optimizer_name(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> str:
    """ss_optimizer as sd-scripts writes it: the class path, then the user's arguments."""
    name = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    arguments = ",".join(f"{key}={value}" for key, value in optimizer_kwargs(cfg.optimizer_args).items())
    return name + (f"({arguments})" if arguments else "")


def build_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if not groups:
        raise ConfigError.about("learning_rate", "every parameter group has lr 0, nothing would train")
    optimizer = OPTIMIZERS[cfg.optimizer_type]
    kwargs = {**optimizer.defaults, **optimizer_kwargs(cfg.optimizer_args), **optimizer.fixed}
    unused = optimizer.lr_unused_when is not None and kwargs[optimizer.lr_unused_when]
    return _optimizer_class(optimizer)(groups, lr=None if unused else cfg.learning_rate, **kwargs)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int, warmup: int):
    if cfg.lr_scheduler == "adafactor":
        optimization = importlib.import_module("transformers.optimization")
        return optimization.AdafactorSchedule(optimizer, initial_lr=cfg.learning_rate)
    restart = min(cfg.lr_restart_step or 0, max(total_steps - 1, 0))
    kwargs: dict = {"num_warmup_steps": 0 if restart else warmup, "num_training_steps": total_steps - restart}
    if cfg.lr_scheduler == "cosine_with_restarts":
        kwargs["num_cycles"] = cfg.lr_scheduler_num_cycles
    if cfg.lr_scheduler == "polynomial":
        kwargs["power"] = cfg.lr_scheduler_power
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, **kwargs)
    if restart:  # a continued run: the whole schedule again over the steps after `restart`
        scheduler.lr_lambdas = [partial(_shifted, fn, restart) for fn in scheduler.lr_lambdas]
    return scheduler


def _shifted(fn, offset: int, step: int) -> float:  # noqa: ANN001 - a LambdaLR factor function
    return fn(max(step - offset, 0))


def align_lr(optimizer: torch.optim.Optimizer, scheduler: object) -> None:
    """After a resume, the learning rate of the next step comes from this run's schedule at the stored step, so a
    run continued for more epochs (a longer or restarted schedule) does not take one step at the old run's rate."""
    if type(scheduler) is not torch.optim.lr_scheduler.LambdaLR:
        return
    rates = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = rates
