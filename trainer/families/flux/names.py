"""sd-scripts' lora_flux module names for diffusers' FLUX modules, and LoRA files in other layouts turned into them.

lora_flux names the original (BFL) layout: `lora_unet_double_blocks_{i}_img_attn_qkv` is one fused Linear there,
three (to_q, to_k, to_v) in diffusers, or one (to_qkv) once its projections are fused. Each diffusers module maps
to (kohya name, part index in the fused module); the parts of a module are taken in index order.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.networks.names import TEXT_CLASSES, text_encoder_name, to_kohya
from trainer.networks.network import Candidate
from trainer.networks.peft import PEFT_KEY, peft_to_fused

T5_CLASSES = frozenset({"T5Attention", "T5DenseGatedActDense"})
DOUBLE = {  # diffusers module path in transformer_blocks.{i} → (BFL name, part index in the fused module)
    "norm1.linear": ("img_mod.lin", 0), "norm1_context.linear": ("txt_mod.lin", 0),
    "attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2), "attn.to_qkv": ("img_attn.qkv", 0),
    "attn.to_added_qkv": ("txt_attn.qkv", 0), "attn.to_out.0": ("img_attn.proj", 0),
    "attn.to_add_out": ("txt_attn.proj", 0), "ff.net.0.proj": ("img_mlp.0", 0), "ff.net.2": ("img_mlp.2", 0),
    "ff_context.net.0.proj": ("txt_mlp.0", 0), "ff_context.net.2": ("txt_mlp.2", 0),
}
SINGLE = {  # in single_transformer_blocks.{i}
    "norm.linear": ("modulation.lin", 0), "attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1),
    "attn.to_v": ("linear1", 2), "attn.to_qkv": ("linear1", 0), "proj_mlp": ("linear1", 3),
    "linear1": ("linear1", 0),  # held by lorabake once its projections are fused (fuse_frozen_projections)
    "proj_out": ("linear2", 0),
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




def peft_to_kohya(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers/PEFT FLUX LoRA (`transformer.….lora_A/B.weight`) → lora_flux's fused modules."""
    names = kohya_names_for_paths({m[1] for key in weights if (m := PEFT_KEY.match(key))})

    def name_of(key: str, path: str) -> tuple[str, int]:
        if key.startswith("text_encoder."):
            return text_encoder_name("lora_te1", path), 0
        # a module lora_flux has no name for keeps a kohya-style name, so loading reports it as unmatched
        return names.get(path, (to_kohya("lora_unet", path), 0))

    return peft_to_fused(weights, name_of)


def kohya_names_for_paths(paths: set[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for path in paths:
        parts = path.split(".", 2)
        if len(parts) == 3 and parts[0] in BLOCKS and parts[2] in BLOCKS[parts[0]][1]:
            block, mapping = BLOCKS[parts[0]]
            bfl, index = mapping[parts[2]]
            out[path] = (to_kohya("lora_unet", f"{block}.{parts[1]}.{bfl}"), index)
    return out
