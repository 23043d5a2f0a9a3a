"""Optimizers and learning-rate schedules by their sd-scripts names."""

from __future__ import annotations

import ast
import importlib
from functools import partial

import torch
from diffusers.optimization import get_scheduler

from trainer.job.config import ConfigError, TrainConfig
from trainer.job.preflight import OPTIMIZER_PACKAGES


def optimizer_kwargs(args: list[str]) -> dict:
    out = {}
    for item in args:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError([f'optimizer_args: "{item}" is not key=value'])
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def _import(name: str):
    module, package = OPTIMIZER_PACKAGES.get(name, (name, name))
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError([f"optimizer_type: {name} needs the package {package}, which is not installed"]) from None


def optimizer_name(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> str:
    """ss_optimizer as sd-scripts writes it: the class path, then the user's arguments."""
    name = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    arguments = ",".join(f"{key}={value}" for key, value in optimizer_kwargs(cfg.optimizer_args).items())
    return name + (f"({arguments})" if arguments else "")


def build_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if not groups:
        raise ConfigError(["learning_rate: every parameter group has lr 0, nothing would train"])
    kwargs = optimizer_kwargs(cfg.optimizer_args)
    lr = cfg.learning_rate
    name = cfg.optimizer_type
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, **kwargs)
    if name == "SGDNesterov":
        kwargs.setdefault("momentum", 0.9)
        return torch.optim.SGD(groups, lr=lr, nesterov=True, **kwargs)
    if name in ("AdamW8bit", "Lion8bit"):
        optim = _import(name).optim
        return (optim.AdamW8bit if name == "AdamW8bit" else optim.Lion8bit)(groups, lr=lr, **kwargs)
    if name == "Lion":
        return _import(name).Lion(groups, lr=lr, **kwargs)
    if name == "Prodigy":
        return _import(name).Prodigy(groups, lr=lr, **kwargs)
    if name == "DAdaptAdam":
        return _import(name).DAdaptAdam(groups, lr=lr, **kwargs)
    if name == "Adafactor":
        optimization = importlib.import_module("transformers.optimization")
        for key, value in (("scale_parameter", False), ("relative_step", False), ("warmup_init", False)):
            kwargs.setdefault(key, value)
        return optimization.Adafactor(groups, lr=None if kwargs["relative_step"] else lr, **kwargs)
    raise ConfigError([f"optimizer_type: unknown optimizer {name}"])


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
