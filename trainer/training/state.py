"""Full training state (save_state / resume): network, optimizer, scheduler, RNGs, position and the EMA."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "train_state.pt"


@dataclass
class Position:
    epoch: int  # 1-based epoch in progress (or just finished when batch == 0 of the next)
    batch: int  # batches of `epoch` already consumed
    step: int  # optimizer steps done


def save_state(folder: Path, *, network: torch.nn.Module, optimizer, scheduler, scaler, noise_generator:
               torch.Generator, position: Position, ema=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "noise_generator": noise_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "position": vars(position),
        "ema": ema.state_dict() if ema is not None else None,
    }
    tmp = folder / (STATE_FILE + ".partial")
    torch.save(payload, tmp)
    tmp.replace(folder / STATE_FILE)
    return folder


def load_state(folder: Path, *, network: torch.nn.Module, optimizer, scheduler, scaler,
               noise_generator: torch.Generator, ema=None) -> Position:
    """Everything save_state wrote back in place; an EMA that the state has none of (a run started without it)
    starts from the loaded weights."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"resume: no {STATE_FILE} in {folder}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload["scaler"] is not None:
        scaler.load_state_dict(payload["scaler"])
    noise_generator.set_state(payload["noise_generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    random.setstate(payload["python_rng"])
    np.random.set_state(payload["numpy_rng"])
    if ema is not None and payload.get("ema") is not None:
        ema.load_state_dict(payload["ema"])
    return Position(**payload["position"])
