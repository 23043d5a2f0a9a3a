"""LoRA / LoCon: ΔW = up · down · alpha / dim. down starts Kaiming-uniform and up at zero (sd-scripts' init).

The output is computed as up(down(x)), never through ΔW, unless DoRA needs ΔW for its norms. With fused targets
all of them read the same input, so down(x) is computed once and each target takes its rows of up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.networks.adapters.base import Adapter, Target


class LoRAModule(Adapter):
    kind = "lora"
    marker = ("lora_down.weight",)
    builds_weight = False

    def __init__(self, name: str, target: Target | tuple[Target, ...], dim: int, alpha: float,
                 multiplier: float = 1.0, dora: bool = False) -> None:
        super().__init__(name, target, dim, alpha, multiplier, dora)
        first = self.target
        if self.is_conv:
            self.lora_down = nn.Conv2d(first.in_channels, dim, first.kernel_size, first.stride, first.padding,
                                       bias=False)
            self.lora_up = nn.Conv2d(dim, first.out_channels, 1, 1, bias=False)
        else:
            self.lora_down = nn.Linear(first.in_features, dim, bias=False)
            self.lora_up = nn.Linear(dim, self.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self._shared: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, down(input)) while parts read it
        self._uses = 0

    @classmethod
    def from_tensors(cls, name: str, target: Target | tuple[Target, ...], tensors: dict[str, torch.Tensor],
                     multiplier: float = 1.0) -> LoRAModule:
        return cls._holding(name, target, tensors, multiplier, tensors["lora_down.weight"].shape[0])

    def own_tensors(self) -> dict[str, torch.Tensor]:
        return {"lora_down.weight": self.lora_down.weight, "lora_up.weight": self.lora_up.weight}

    def delta_weight(self, rows: slice) -> torch.Tensor:
        up = self.lora_up.weight[rows].flatten(1)
        return (up @ self.lora_down.weight.flatten(1)).view(up.shape[0], *self.in_shape) * self.scale

    def delta_output(self, index: int, x: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        if len(self._targets) == 1:
            if self.is_conv:
                return self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype))) * self.scale
            down = self.lora_down.weight  # F.linear straight away: two module calls less per layer and step
            return F.linear(F.linear(x.to(down.dtype), down), self.lora_up.weight) * self.scale
        return F.linear(self._shared_down(x), self.lora_up.weight[self.rows(index)]) * self.scale

    def _shared_down(self, x: torch.Tensor) -> torch.Tensor:
        """down(x) once for all parts that read the same input (q, k, v): kept until the last part took it."""
        if self._shared is not None and self._shared[0] is x:
            hidden, self._uses = self._shared[1], self._uses + 1
        else:
            hidden, self._uses = self.lora_down(x.to(self.lora_down.weight.dtype)), 1
            self._shared = (x, hidden)
        if self._uses >= len(self._targets):
            self._shared = None
        return hidden
