"""LoRA files in PEFT's layout (diffusers module paths with lora_A / lora_B, as diffusers and many trainers save
them) turned into lorabake's: where several diffusers modules are one fused module in the file layout (FLUX's q, k
and v as one `qkv`), their downs are stacked and their ups placed block-diagonally, so the fused module's update is
exactly the parts' updates side by side."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

PEFT_KEY = re.compile(r"^(?:transformer|diffusion_model|text_encoder)\.(.+)\.lora_([AB])\.weight$")
NameOf = Callable[[str, str], tuple[str, int]]  # (key, module path) → (module name in the file layout, part)


def is_peft(weights: dict[str, torch.Tensor]) -> bool:
    return any(".lora_A." in key for key in weights)


def peft_to_fused(weights: dict[str, torch.Tensor], name_of: NameOf) -> dict[str, torch.Tensor]:
    """Downs stacked, ups block-diagonal, alpha = the summed rank (PEFT's scale 1 without an alpha)."""
    parts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, tensor in weights.items():
        match = PEFT_KEY.match(key)
        if match:
            name, index = name_of(key, match[1])
            parts.setdefault(name, {}).setdefault(index, {})[match[2]] = tensor
    out: dict[str, torch.Tensor] = {}
    for name, by_index in parts.items():
        pieces = [by_index[i] for i in sorted(by_index)]
        downs = [piece["A"] for piece in pieces]
        rank = sum(down.shape[0] for down in downs)
        up = torch.zeros(sum(piece["B"].shape[0] for piece in pieces), rank, dtype=downs[0].dtype)
        row = column = 0
        for piece in pieces:
            height, width = piece["B"].shape
            up[row : row + height, column : column + width] = piece["B"]
            row, column = row + height, column + width
        out[f"{name}.lora_down.weight"] = torch.cat(downs)
        out[f"{name}.lora_up.weight"] = up
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out
