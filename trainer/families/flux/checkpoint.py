"""FLUX.1 transformer weights between the original (BFL) single-file layout and diffusers' module layout.

One name map, used both ways: sd-scripts and ComfyUI keep FLUX as `double_blocks.*` / `single_blocks.*` files with
fused qkv (and q, k, v, mlp-in as `linear1`), diffusers splits them. lorabake reads such a file into a diffusers
transformer built from a local config, whatever its width (diffusers' own converter assumes the full-size 3072),
and writes one, so the tiny model is tested as a single file too.
"""

from __future__ import annotations

import torch

from trainer.families.flux.names import BLOCKS

TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
}
NORMS = {
    "transformer_blocks": {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                           "attn.norm_added_q": "txt_attn.norm.query_norm",
                           "attn.norm_added_k": "txt_attn.norm.key_norm"},
    "single_transformer_blocks": {"attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"},
}
SWAPPED = "final_layer.adaLN_modulation.1"  # BFL: (shift, scale); diffusers: (scale, shift)
PREFIX = "model.diffusion_model."


def bfl_key(key: str) -> tuple[str, int]:
    """A diffusers parameter key → (the BFL key it lives in, its part index in that fused tensor)."""
    module, _, param = key.rpartition(".")
    parts = module.split(".", 2)
    if len(parts) == 3 and parts[0] in BLOCKS:
        block, mapping = BLOCKS[parts[0]]
        if parts[2] in mapping:
            name, index = mapping[parts[2]]
            return f"{block}.{parts[1]}.{name}.{param}", index
        if parts[2] in NORMS[parts[0]]:
            return f"{block}.{parts[1]}.{NORMS[parts[0]][parts[2]]}.scale", 0
    if module in TOP:
        return f"{TOP[module]}.{param}", 0
    raise KeyError(f"no single-file name for {key}")


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _groups(keys: list[str]) -> dict[str, list[str]]:
    """BFL key → the diffusers keys that make it, in part order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for key in keys:
        target, index = bfl_key(key)
        out.setdefault(target, []).append((index, key))
    return {target: [k for _, k in sorted(parts)] for target, parts in out.items()}


def to_bfl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for target, keys in _groups(list(state)).items():
        tensor = torch.cat([state[k] for k in keys], dim=0) if len(keys) > 1 else state[keys[0]]
        out[target] = _swap_halves(tensor) if target.startswith(SWAPPED) else tensor.contiguous()
    return out


def from_bfl(checkpoint: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split a BFL checkpoint into the keys (and shapes) of `like`, a diffusers transformer's state dict."""
    checkpoint = {k.removeprefix(PREFIX): v for k, v in checkpoint.items()}
    out = {}
    for target, keys in _groups(list(like)).items():
        if target not in checkpoint:
            raise KeyError(f"the single file has no {target}")
        tensor = checkpoint[target]
        tensor = _swap_halves(tensor) if target.startswith(SWAPPED) else tensor
        row = 0
        for key in keys:
            rows = like[key].shape[0]
            out[key] = tensor[row : row + rows]
            row += rows
        if row != tensor.shape[0]:
            raise ValueError(f"{target}: {tensor.shape[0]} rows in the file, the model's config needs {row}")
    return out
