"""Optimizers and learning-rate schedules by their sd-scripts names."""

from __future__ import annotations

import ast
import importlib

import torch
from diffusers.optimization import get_scheduler

from trainer.config import ConfigError, TrainConfig
from trainer.preflight import OPTIMIZER_PACKAGES


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
    kwargs: dict = {"num_warmup_steps": warmup, "num_training_steps": total_steps}
    if cfg.lr_scheduler == "cosine_with_restarts":
        kwargs["num_cycles"] = cfg.lr_scheduler_num_cycles
    if cfg.lr_scheduler == "polynomial":
        kwargs["power"] = cfg.lr_scheduler_power
    return get_scheduler(cfg.lr_scheduler, optimizer, **kwargs)
