"""sd-scripts' lora_flux module names for diffusers' FLUX modules, and LoRA files in other layouts turned into them.

lora_flux names the original (BFL) layout: `lora_unet_double_blocks_{i}_img_attn_qkv` is one fused Linear there,
three (to_q, to_k, to_v) in diffusers. Each diffusers module maps to (kohya name, part index in the fused module).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from trainer.networks.names import TEXT_CLASSES, text_encoder_name, to_kohya
from trainer.networks.network import Candidate

T5_CLASSES = frozenset({"T5Attention", "T5DenseGatedActDense"})
DOUBLE = {  # diffusers module path in transformer_blocks.{i} → (BFL name, part index in the fused module)
    "norm1.linear": ("img_mod.lin", 0), "norm1_context.linear": ("txt_mod.lin", 0),
    "attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2), "attn.to_out.0": ("img_attn.proj", 0),
    "attn.to_add_out": ("txt_attn.proj", 0), "ff.net.0.proj": ("img_mlp.0", 0), "ff.net.2": ("img_mlp.2", 0),
    "ff_context.net.0.proj": ("txt_mlp.0", 0), "ff_context.net.2": ("txt_mlp.2", 0),
}
SINGLE = {  # in single_transformer_blocks.{i}
    "norm.linear": ("modulation.lin", 0), "attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1),
    "attn.to_v": ("linear1", 2), "proj_mlp": ("linear1", 3), "proj_out": ("linear2", 0),
}
BLOCKS = {"transformer_blocks": ("double_blocks", DOUBLE), "single_transformer_blocks": ("single_blocks", SINGLE)}
def kohya_unet_names(transformer: nn.Module) -> dict[str, tuple[str, int]]:
    """diffusers module path → (kohya module name, part index) for every module sd-scripts' lora_flux trains."""
    return kohya_names_for_paths({path for path, _ in transformer.named_modules()})


def text_targets(encoder: nn.Module, group: str, is_clip: bool) -> list[Candidate]:
    out = []
    classes = TEXT_CLASSES if is_clip else T5_CLASSES
    for path, module in encoder.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_path, child in module.named_modules():
            if isinstance(child, nn.Linear):
                full = f"{path}.{child_path}"
                name = text_encoder_name("lora_te1", full) if is_clip else to_kohya("lora_te3", full)
                out.append(Candidate(name, child, group, False))
    return out


_PEFT_KEY = re.compile(r"^(?:transformer|diffusion_model|text_encoder)\.(.+)\.lora_([AB])\.weight$")


def peft_to_kohya(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers/PEFT FLUX LoRA (`transformer.….lora_A/B.weight`) → kohya fused modules: downs stacked, ups
    block-diagonal, alpha = the summed rank (PEFT's scale 1 without an alpha)."""
    parts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    sizes: dict[str, int] = {}
    names = kohya_names_for_paths({k for key in weights if (m := _PEFT_KEY.match(key)) for k in [m[1]]})
    for key, tensor in weights.items():
        match = _PEFT_KEY.match(key)
        if not match:
            continue
        path = match[1]
        if key.startswith("text_encoder."):
            name, index = text_encoder_name("lora_te1", path), 0
        elif path in names:
            name, index = names[path]
        else:  # no lora_flux module: kept under a kohya-style name, so loading reports it as unmatched
            name, index = to_kohya("lora_unet", path), 0
        parts.setdefault(name, {}).setdefault(index, {})[match[2]] = tensor
        if match[2] == "B":
            sizes[f"{name}:{index}"] = tensor.shape[0]
    out: dict[str, torch.Tensor] = {}
    for name, by_index in parts.items():
        count = max(by_index) + 1
        downs = [by_index[i]["A"] for i in sorted(by_index)]
        rank = sum(d.shape[0] for d in downs)
        up = torch.zeros(sum(sizes.get(f"{name}:{i}", 0) for i in range(count)), rank, dtype=downs[0].dtype)
        row = column = 0
        for i in range(count):
            height = sizes.get(f"{name}:{i}", 0)
            if i in by_index:
                r = by_index[i]["A"].shape[0]
                up[row : row + height, column : column + r] = by_index[i]["B"]
                column += r
            row += height
        out[f"{name}.lora_down.weight"] = torch.cat(downs)
        out[f"{name}.lora_up.weight"] = up
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out


def kohya_names_for_paths(paths: set[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for path in paths:
        parts = path.split(".", 2)
        if len(parts) == 3 and parts[0] in BLOCKS and parts[2] in BLOCKS[parts[0]][1]:
            block, mapping = BLOCKS[parts[0]]
            bfl, index = mapping[parts[2]]
            out[path] = (to_kohya("lora_unet", f"{block}.{parts[1]}.{bfl}"), index)
    return out
