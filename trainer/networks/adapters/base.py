"""What every adapter type shares: hooking the targets' forward, fused targets, the multiplier, and DoRA.

An adapter adds a learned update ΔW (scaled by alpha / dim) to a frozen Linear or Conv2d. With several targets
(FLUX's fused qkv over diffusers' split to_q/to_k/to_v) ΔW is one tall matrix and each target gets its rows.

DoRA (`dora_scale`, as LyCORIS writes it) re-normalises each output channel of W + ΔW to a learned magnitude m:
W' = m · (W + ΔW) / ‖W + ΔW‖ (row norms). It starts at m = ‖W‖, so a fresh adapter changes nothing. With a
multiplier w the model gets W + w · (W' − W), as ComfyUI applies it, so weight 0 is the base model exactly.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from functools import partial
from itertools import accumulate
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from trainer.networks.spec import NetworkSpec

Target = nn.Linear | nn.Conv2d


class Adapter(nn.Module, metaclass=ABCMeta):
    """The base of every network type: each type module (lora, loha, lokr) supplies the three abstract parts."""

    kind: ClassVar[str]
    marker: ClassVar[tuple[str, ...]]  # tensor names whose presence in a file means this type
    builds_weight: ClassVar[bool] = True  # its output is ΔW applied to x (LoRA takes the cheaper down/up path)

    def __init__(self, name: str, target: Target | tuple[Target, ...], dim: int, alpha: float,
                 multiplier: float = 1.0, dora: bool = False) -> None:
        super().__init__()
        targets = target if isinstance(target, tuple) else (target,)
        first = targets[0]
        self.lora_name = name
        self.dim = dim
        self.multiplier = multiplier
        alpha = float(alpha) if alpha else float(dim)
        # as sd-scripts: an integer alpha is stored as an int64 tensor (torch.tensor of a Python int)
        self.register_buffer("alpha", torch.tensor(int(alpha) if alpha.is_integer() else alpha))
        self.scale = alpha / dim
        self.is_conv = isinstance(first, nn.Conv2d)
        self.out_features, *in_shape = weight_shape(targets)
        self.in_shape: tuple[int, ...] = tuple(in_shape)
        self._targets = list(targets)  # a list, so the base modules are not registered as children
        self._starts = [0, *accumulate(_out(t) for t in targets[:-1])]  # each target's first row in ΔW
        self._originals: list[Callable[..., torch.Tensor]] = []
        self._chained: list[bool] = []
        self.dora_scale: nn.Parameter | None = None
        if dora:
            norms = self.base_weight().norm(dim=1).reshape(self.out_features, *[1] * len(self.in_shape))
            self.dora_scale = nn.Parameter(norms.to(first.weight.device))

    @property
    def target(self) -> nn.Module:
        return self._targets[0]

    def base_weight(self) -> torch.Tensor:
        """The frozen weight the adapter changes (its targets' rows together), in float32, rows flattened."""
        return torch.cat([dense_weight(t, torch.float32).detach().flatten(1) for t in self._targets])

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, *self.in_shape)

    # The type's own parts ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, target: Target | tuple[Target, ...], dim: int, alpha: float,
               spec: NetworkSpec) -> Adapter:
        """A fresh adapter whose update starts at zero."""
        return cls(name, target, dim, alpha, dora=spec.dora)

    @classmethod
    @abstractmethod
    def from_tensors(cls, name: str, target: Target | tuple[Target, ...], tensors: dict[str, torch.Tensor],
                     multiplier: float = 1.0) -> Adapter:
        """An adapter shaped like a file's tensors for one module (names without the module prefix)."""

    @abstractmethod
    def own_tensors(self) -> dict[str, torch.Tensor]:
        """The type's learned tensors under the names LyCORIS / sd-scripts write."""

    @abstractmethod
    def delta_weight(self, rows: slice) -> torch.Tensor:
        """Rows of ΔW · alpha / dim, shaped like the target weight's rows."""

    def delta_output(self, index: int, x: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        """ΔW x for target `index` (`delta` is its ΔW when already built)."""
        target = self._targets[index]
        if delta is None:
            delta = self.delta_weight(self.rows(index))
        x = x.to(delta.dtype)
        if self.is_conv:
            return F.conv2d(x, delta, None, target.stride, target.padding, target.dilation, target.groups)
        return F.linear(x, delta)

    # Files ----------------------------------------------------------------------------------------------
    def kohya_tensors(self) -> dict[str, torch.Tensor]:
        out = dict(self.own_tensors())
        out["alpha"] = self.alpha
        if self.dora_scale is not None:
            out["dora_scale"] = self.dora_scale
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Copy a file's tensors in when every one fits; False (nothing copied) when they do not."""
        mine = self.kohya_tensors()
        mine.pop("alpha")
        if set(tensors) - {"alpha"} != set(mine) or any(tensors[k].shape != v.shape for k, v in mine.items()):
            return False
        with torch.no_grad():
            for key, value in mine.items():
                value.copy_(tensors[key])
        return True

    @classmethod
    def _holding(cls, name: str, target: Target | tuple[Target, ...], tensors: dict[str, torch.Tensor],
                 multiplier: float, dim: int, **shape: object) -> Self:
        """An adapter of rank `dim` holding a file's tensors: the file's alpha (the rank when it has none), DoRA when
        it has a dora_scale."""
        alpha = tensors.get("alpha")
        adapter = cls(name, target, dim, float(alpha) if alpha is not None else dim, multiplier,
                      dora="dora_scale" in tensors, **shape)
        return adapter._copy_in(tensors)

    def _copy_in(self, tensors: dict[str, torch.Tensor]) -> Self:
        if not self.load_tensors(tensors):
            raise ValueError(f"{self.lora_name}: the tensors do not fit the module they name")
        return self

    # Hooks ----------------------------------------------------------------------------------------------
    def rows(self, index: int) -> slice:
        start = self._starts[index]
        return slice(start, start + _out(self._targets[index]))

    def attach(self) -> None:
        # Another adapter may already hook a module (several LoRAs at once); chain onto it.
        for index, target in enumerate(self._targets):
            self._chained.append("forward" in target.__dict__)
            self._originals.append(target.forward)
            target.forward = partial(self._forward_part, index)

    def detach(self) -> None:
        for target, original, chained in zip(self._targets, self._originals, self._chained, strict=True):
            if chained:
                target.forward = original
            else:
                del target.forward  # the class's own forward shows through again
        self._originals, self._chained = [], []

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self._forward_part(0, x, *args, **kwargs)

    def _forward_part(self, index: int, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self._add_change(index, x, self._originals[index](x, *args, **kwargs))

    def _add_change(self, index: int, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The target's output `base` with this adapter's change (times the multiplier) added."""
        needs_weight = self.builds_weight or self.dora_scale is not None
        delta = self.delta_weight(self.rows(index)) if needs_weight else None
        change = self.delta_output(index, x, delta)
        if self.dora_scale is not None:
            change = self._decomposed(index, base, change, delta)
        if self.multiplier != 1.0:  # one multiplication (and its backward) less per module in training
            change = change * self.multiplier
        return base + change.to(base.dtype)

    def _decomposed(self, index: int, base: torch.Tensor, change: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """W'x − Wx for DoRA, from Wx (= base − bias, whatever computed it) and ΔWx: (c − 1)·Wx + c·ΔWx."""
        target = self._targets[index]
        rows = self.rows(index)
        weight = dense_weight(target, delta.dtype) + delta
        norm = weight.flatten(1).norm(dim=1) + torch.finfo(delta.dtype).eps
        shape = (-1, 1, 1) if self.is_conv else (-1,)  # the channel axis of the output
        ratio = (self.dora_scale[rows].flatten() / norm).view(shape)
        plain = base if target.bias is None else base - target.bias.view(shape)
        return (ratio - 1) * plain.to(ratio.dtype) + ratio * change


def dense_weight(target: Target, dtype: torch.dtype) -> torch.Tensor:
    """The target's weight as a plain tensor, dequantized when the base is stored quantized (base_weights)."""
    weight = target.weight
    if hasattr(weight, "get_original_weight"):  # torchao's NF4
        return weight.get_original_weight().to(dtype)
    if hasattr(weight, "dequantize") and type(weight) is not torch.Tensor and type(weight) is not nn.Parameter:
        return weight.dequantize().to(dtype)
    return weight.to(dtype)


def weight_shape(targets: tuple[Target, ...]) -> tuple[int, ...]:
    """The shape of the (fused) weight the targets make together: (all their rows, *one target's input shape)."""
    first = targets[0]
    rows = sum(_out(t) for t in targets)
    if isinstance(first, nn.Conv2d):
        return (rows, first.in_channels // first.groups, *first.kernel_size)
    return (rows, first.in_features)


def _out(target: Target) -> int:
    return target.out_channels if isinstance(target, nn.Conv2d) else target.out_features
