"""The optimizers lorabake trains with, by their sd-scripts names: one entry each, read by the config's choice
list, pre-flight (is its package installed, what learning rate burns a LoRA) and the trainer (how to build it).

Imports no torch: the API checks a job against this table before it is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Optimizer:
    name: str  # as sd-scripts' optimizer_type spells it
    module: str  # where the class lives
    cls: str
    package: str | None  # the pip package it needs beyond lorabake's own dependencies (None: always there)
    usual_max_lr: float  # the largest rate it usually trains a LoRA with; ten times that burns one in a few steps
    defaults: dict[str, Any] = field(default_factory=dict)  # sd-scripts' defaults, unless optimizer_args says
    fixed: dict[str, Any] = field(default_factory=dict)  # what the name means (SGDNesterov: nesterov=True)
    lr_unused_when: str | None = None  # an argument that makes the optimizer find its own rate (lr=None then)
    state_bytes: float = 8.0  # optimizer state per trained parameter (the memory estimate): Adam's two fp32 moments


OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in (
    Optimizer("AdamW", "torch.optim", "AdamW", None, 1e-3),
    Optimizer("AdamW8bit", "bitsandbytes.optim", "AdamW8bit", "bitsandbytes", 1e-3, state_bytes=2.0),
    Optimizer("Lion", "lion_pytorch", "Lion", "lion-pytorch", 3e-4, state_bytes=4.0),
    Optimizer("Lion8bit", "bitsandbytes.optim", "Lion8bit", "bitsandbytes", 3e-4, state_bytes=1.0),
    Optimizer("SGDNesterov", "torch.optim", "SGD", None, 1e-1, defaults={"momentum": 0.9},
              fixed={"nesterov": True}, state_bytes=4.0),
    # the adaptive ones take lr as a multiplier around 1
    Optimizer("Prodigy", "prodigyopt", "Prodigy", "prodigyopt", 1.0, state_bytes=16.0),
    Optimizer("DAdaptAdam", "dadaptation", "DAdaptAdam", "dadaptation", 1.0, state_bytes=12.0),
    Optimizer("Adafactor", "transformers.optimization", "Adafactor", None, 1e-3,
              defaults={"scale_parameter": False, "relative_step": False, "warmup_init": False},
              lr_unused_when="relative_step", state_bytes=4.0),
)}
