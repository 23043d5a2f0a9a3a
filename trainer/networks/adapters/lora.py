"""LoRA / LoCon: ΔW = up · down · alpha / dim. down starts Kaiming-uniform and up at zero (sd-scripts' init).

The output is computed as up(down(x)), never through ΔW, unless DoRA needs ΔW for its norms. With fused targets
all of them read the same input, so down(x) is computed once and each target takes its rows of up. On a Linear the
up projection, the scale and the residual add are one in-place addmm on the target's output (base += scale · h ·
upᵀ), so no output-sized tensor is scaled, added or copied on its own, forward or backward: the step is under peft's.
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

    def _forward_part(self, index: int, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if not isinstance(self._targets[index], nn.Linear) or self.dora_scale is not None or args or kwargs:
            return super()._forward_part(index, x, *args, **kwargs)  # a conv, or DoRA (it needs ΔW for its norms)
        rows = x.reshape(-1, x.shape[-1])
        base = self._originals[index](rows)  # as rows, so the addmm_ below needs no copy
        up = self._up(index)
        if _fits_addmm(base, up):  # a Linear's output is not kept for its backward, so it may take the sum
            hidden = self._down(x).reshape(-1, self.dim)
            out = base.addmm_(hidden.to(base.dtype), up.to(base.dtype).t(), alpha=self.scale * self.multiplier)
        else:
            out = self._add_change(index, rows, base)
        return out.view(*x.shape[:-1], out.shape[-1])

    def delta_output(self, index: int, x: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        if self.is_conv:
            return self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype))) * self.scale
        return F.linear(self._down(x), self._up(index)) * self.scale

    def _up(self, index: int) -> torch.Tensor:
        return self.lora_up.weight if len(self._targets) == 1 else self.lora_up.weight[self.rows(index)]

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        """down(x); with several targets reading the same input (q, k, v), computed once and kept until the last
        part took it. F.linear straight away: one module call less per layer and step."""
        down = self.lora_down.weight
        if len(self._targets) == 1:
            return F.linear(x.to(down.dtype), down)
        if self._shared is not None and self._shared[0] is x:
            hidden, self._uses = self._shared[1], self._uses + 1
        else:
            hidden, self._uses = F.linear(x.to(down.dtype), down), 1
            self._shared = (x, hidden)
        if self._uses >= len(self._targets):
            self._shared = None
        return hidden


def _fits_addmm(base: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when the base output can take the LoRA product in place: same dtype as the weights (or autocast, which
    computes the LoRA in the output's dtype anyway), and rows in memory (not a fused projection's column slice)."""
    precision = base.dtype == weight.dtype or torch.is_autocast_enabled(base.device.type)
    return precision and base.is_contiguous()
