"""LoKr (LyCORIS): ΔW = kron(w1, w2) · alpha / dim. The output and input sizes are each split in two factors
(out = a·b, in = c·d, the split nearest `factor`, or balanced when -1): w1 is a×c, w2 is b×d (×k×k for a kernel).
w2 is stored as w2_a · w2_b when dim < max(b, d) / 2 (and w1 likewise with decompose_both); `full_matrix` keeps
both whole. With both whole the scale is 1, as LyCORIS and ComfyUI apply it. w2 (or w2_b) starts at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainer.networks.adapters.base import Adapter, Target, weight_shape
from trainer.networks.spec import NetworkSpec


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n), m ≤ n, m · n = dimension: `factor` itself when it divides, else the divisor pair nearest a square
    with m no larger than `factor`."""
    if factor > 0 and dimension % factor == 0:
        return min(factor, dimension // factor), max(factor, dimension // factor)
    limit = dimension if factor <= 0 else factor
    best = 1
    for m in range(2, math.isqrt(dimension) + 1):
        if m > limit:
            break
        if dimension % m == 0:
            best = m
    return best, dimension // best


@dataclass(frozen=True)
class KronLayout:
    out_l: int
    out_k: int
    in_m: int
    in_n: int
    rank1: int | None  # None: w1 is stored whole
    rank2: int | None

    @classmethod
    def plan(cls, out_dim: int, in_dim: int, dim: int, spec: NetworkSpec) -> KronLayout:
        in_m, in_n = factorization(in_dim, spec.factor)
        out_l, out_k = factorization(out_dim, spec.factor)
        split1 = spec.decompose_both and dim < max(out_l, in_m) / 2 and not spec.full_matrix
        split2 = dim < max(out_k, in_n) / 2 and not spec.full_matrix
        return cls(out_l, out_k, in_m, in_n, dim if split1 else None, dim if split2 else None)


class LoKrModule(Adapter):
    kind = "lokr"
    marker = ("lokr_w1", "lokr_w1_a")

    def __init__(self, name: str, target: Target | tuple[Target, ...], dim: int, alpha: float,
                 multiplier: float = 1.0, dora: bool = False, layout: KronLayout | None = None) -> None:
        super().__init__(name, target, dim, alpha, multiplier, dora)
        layout = layout or KronLayout.plan(self.out_features, self.in_shape[0], dim, NetworkSpec(kind="lokr"))
        self.layout = layout
        if layout.rank1 is None and layout.rank2 is None:
            self.alpha.fill_(dim)
            self.scale = 1.0
        kernel = self.in_shape[1:]
        device = self.target.weight.device

        def parameter(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape, device=device))

        if layout.rank1 is None:
            self.lokr_w1 = parameter(layout.out_l, layout.in_m)
            nn.init.kaiming_uniform_(self.lokr_w1, a=math.sqrt(5))
        else:
            self.lokr_w1_a = parameter(layout.out_l, layout.rank1)
            self.lokr_w1_b = parameter(layout.rank1, layout.in_m)
            nn.init.kaiming_uniform_(self.lokr_w1_a, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.lokr_w1_b, a=math.sqrt(5))
        if layout.rank2 is None:
            self.lokr_w2 = parameter(layout.out_k, layout.in_n, *kernel)
            nn.init.zeros_(self.lokr_w2)
        else:
            self.lokr_w2_a = parameter(layout.out_k, layout.rank2)
            self.lokr_w2_b = parameter(layout.rank2, layout.in_n * math.prod(kernel))
            nn.init.kaiming_uniform_(self.lokr_w2_a, a=math.sqrt(5))
            nn.init.zeros_(self.lokr_w2_b)

    @classmethod
    def create(cls, name: str, target: Target | tuple[Target, ...], dim: int, alpha: float,
               spec: NetworkSpec) -> LoKrModule:
        rows, columns, *_ = weight_shape(target if isinstance(target, tuple) else (target,))
        layout = KronLayout.plan(rows, columns, dim, spec)
        return cls(name, target, dim, alpha, dora=spec.dora, layout=layout)

    @classmethod
    def from_tensors(cls, name: str, target: Target | tuple[Target, ...], tensors: dict[str, torch.Tensor],
                     multiplier: float = 1.0) -> LoKrModule:
        w1 = tensors.get("lokr_w1")
        w2 = tensors.get("lokr_w2")
        rank1 = None if w1 is not None else tensors["lokr_w1_b"].shape[0]
        rank2 = None if w2 is not None else tensors["lokr_w2_b"].shape[0]
        out_l, in_m = w1.shape if w1 is not None else (tensors["lokr_w1_a"].shape[0], tensors["lokr_w1_b"].shape[1])
        out_k = w2.shape[0] if w2 is not None else tensors["lokr_w2_a"].shape[0]
        in_n = (tensors["lokr_w2"].shape[1] if w2 is not None
                else tensors["lokr_w2_b"].shape[1] // _kernel_size(target))
        return cls._holding(name, target, tensors, multiplier, rank2 or rank1 or 1,
                            layout=KronLayout(out_l, out_k, in_m, in_n, rank1, rank2))

    def own_tensors(self) -> dict[str, torch.Tensor]:
        names = ("lokr_w1",) if self.layout.rank1 is None else ("lokr_w1_a", "lokr_w1_b")
        names += ("lokr_w2",) if self.layout.rank2 is None else ("lokr_w2_a", "lokr_w2_b")
        return {key: getattr(self, key) for key in names}

    def delta_weight(self, rows: slice) -> torch.Tensor:
        layout, kernel = self.layout, self.in_shape[1:]
        w1 = self.lokr_w1 if layout.rank1 is None else self.lokr_w1_a @ self.lokr_w1_b
        w2 = self.lokr_w2 if layout.rank2 is None else self.lokr_w2_a @ self.lokr_w2_b
        w2 = w2.reshape(layout.out_k, layout.in_n, *kernel)
        w1 = w1.reshape(layout.out_l, layout.in_m, *[1] * len(kernel))
        return torch.kron(w1, w2)[rows] * self.scale


def _kernel_size(target: Target | tuple[Target, ...]) -> int:
    first = target[0] if isinstance(target, tuple) else target
    return math.prod(first.kernel_size) if isinstance(first, nn.Conv2d) else 1
