"""Memory tools every DiT family uses: frozen Linear weights stored quantized (base_weights fp8 / int8 / nf4, with
torchao) and blocks kept in CPU memory, moved to the device only while they run (blocks_to_swap)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def quantize_linears(blocks: Sequence[nn.Module], kind: str) -> int:
    """base_weights: the frozen Linear weights of these blocks stored quantized by torchao, dequantized per call to
    the activations' dtype (weight-only: the LoRA and the activations stay in bf16/fp32). fp8 is float8 e4m3 with a
    scale per row, int8 a scale per row, nf4 QLoRA's 4-bit NormalFloat in blocks of 64 with double-quantized
    scales. Returns how many Linears were quantized; one whose size does not fit nf4's blocks stays as it is."""
    if kind == "bf16":
        return 0
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, NF4Tensor, quantize_

    linears = [m for block in blocks for m in block.modules()
               if isinstance(m, nn.Linear) and type(m.weight) is nn.Parameter]
    count = 0
    for module in linears:
        if kind == "nf4":
            blocks_of_64, rest = divmod(module.weight.numel(), NF4_BLOCK)
            if rest:
                continue
            weight = NF4Tensor.from_tensor(module.weight.detach(), NF4_BLOCK, math.gcd(blocks_of_64, 256))
            module.weight = nn.Parameter(weight, requires_grad=False)
        else:
            config = Float8WeightOnlyConfig() if kind == "fp8" else Int8WeightOnlyConfig()
            quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
        count += 1
    return count


NF4_BLOCK = 64


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


