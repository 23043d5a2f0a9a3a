"""Memory tools every DiT family uses: frozen Linear weights stored in float8 (fp8_base) and blocks kept in CPU
memory, moved to the device only while they run (blocks_to_swap)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _Fp8Linear:
    """forward for a frozen Linear whose weight is stored as float8 (e4m3): upcast to the input's dtype per call."""

    def __init__(self, module: nn.Linear) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.module.weight.to(x.dtype)
        bias = self.module.bias.to(x.dtype) if self.module.bias is not None else None
        return F.linear(x, weight, bias)


def store_linears_in_fp8(blocks: Sequence[nn.Module]) -> int:
    """fp8_base: the frozen Linear weights of these blocks kept as float8_e4m3fn (half of bf16's memory)."""
    count = 0
    for block in blocks:
        for module in block.modules():
            if isinstance(module, nn.Linear) and module.weight.dtype != torch.float8_e4m3fn:
                module.weight.data = module.weight.data.to(torch.float8_e4m3fn)
                module.forward = _Fp8Linear(module)
                count += 1
    return count


def swap_blocks(blocks: Sequence[nn.Module], count: int, device: torch.device) -> list[nn.Module]:
    """blocks_to_swap: the last `count` of these blocks (in the order they run) live in CPU memory and are moved
    to the device only while they run (and again when gradient checkpointing recomputes them in the backward pass)."""
    def bring(module: nn.Module, args: tuple) -> None:
        module.to(device)

    def send_back(module: nn.Module, args: tuple, output: object) -> None:
        module.to("cpu")

    swapped = list(blocks)[-count:]
    for block in swapped:
        block.to("cpu")
        block.register_forward_pre_hook(bring)
        block.register_forward_hook(send_back)
    return swapped


