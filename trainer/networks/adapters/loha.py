"""LoHa (LyCORIS): ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b) · alpha / dim, a Hadamard product of two rank-dim products,
so rank dim reaches up to dim² in the product. A convolution's kernel is flattened into w1_b / w2_b's columns.
Initialised as LyCORIS does: w1_a ~ N(0, 0.1), w1_b and w2_b ~ N(0, 1), w2_a = 0, so ΔW starts at zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.networks.adapters.base import Adapter, Target

NAMES = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


class LoHaModule(Adapter):
    kind = "loha"
    marker = ("hada_w1_a",)

    def __init__(self, name: str, target: Target | tuple[Target, ...], dim: int, alpha: float,
                 multiplier: float = 1.0, dora: bool = False) -> None:
        super().__init__(name, target, dim, alpha, multiplier, dora)
        columns = math.prod(self.in_shape)
        device = self.target.weight.device
        self.hada_w1_a = nn.Parameter(torch.empty(self.out_features, dim, device=device))
        self.hada_w1_b = nn.Parameter(torch.empty(dim, columns, device=device))
        self.hada_w2_a = nn.Parameter(torch.empty(self.out_features, dim, device=device))
        self.hada_w2_b = nn.Parameter(torch.empty(dim, columns, device=device))
        nn.init.normal_(self.hada_w1_a, std=0.1)
        nn.init.normal_(self.hada_w1_b, std=1.0)
        nn.init.zeros_(self.hada_w2_a)
        nn.init.normal_(self.hada_w2_b, std=1.0)

    @classmethod
    def from_tensors(cls, name: str, target: Target | tuple[Target, ...], tensors: dict[str, torch.Tensor],
                     multiplier: float = 1.0) -> LoHaModule:
        return cls._holding(name, target, tensors, multiplier, tensors["hada_w1_b"].shape[0])

    def own_tensors(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in NAMES}

    def delta_weight(self, rows: slice) -> torch.Tensor:
        first = self.hada_w1_a[rows] @ self.hada_w1_b
        second = self.hada_w2_a[rows] @ self.hada_w2_b
        return (first * second).view(first.shape[0], *self.in_shape) * self.scale
