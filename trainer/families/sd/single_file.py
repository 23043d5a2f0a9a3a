"""Write an SD1.x/2.x diffusers model as one original-layout (LDM) checkpoint, as A1111 and ComfyUI keep them.

`lorabake models make-tiny --single-file` uses it, so single-file loading is tested on the tiny model offline.
The UNet block mapping is the SGM one that sd-scripts' SDXL LoRA names use (`kohya_names.sgm_path`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from trainer.families.sd.names import sgm_path

UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out", "group_norm": "norm"}


def unet_key(key: str, layers_per_block: int, up_with_attention: set[int]) -> str:
    module, _, param = key.rpartition(".")
    for old, new in UNET_TOP.items():
        if module == old:
            return f"model.diffusion_model.{new}.{param}"
    return f"model.diffusion_model.{sgm_path(module, layers_per_block, up_with_attention)}.{param}"


def vae_key(key: str, n_levels: int) -> str:
    key = re.sub(r"^(encoder)\.down_blocks\.(\d+)\.resnets\.(\d+)", r"\1.down.\2.block.\3", key)
    key = re.sub(r"^(encoder)\.down_blocks\.(\d+)\.downsamplers\.0", r"\1.down.\2.downsample", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)",
                 lambda m: f"decoder.up.{n_levels - 1 - int(m[1])}.block.{m[2]}", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0",
                 lambda m: f"decoder.up.{n_levels - 1 - int(m[1])}.upsample", key)
    key = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}", key)
    key = re.sub(r"^(encoder|decoder)\.mid_block\.attentions\.0", r"\1.mid.attn_1", key)
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out", r"\1.norm_out", key)
    for old, new in {**VAE_RESNET, **VAE_ATTENTION}.items():
        key = key.replace(f".{old}.", f".{new}.")
    return f"first_stage_model.{key}"


def to_ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    unet_cfg = pipe.unet.config
    up_with_attention = {i for i, kind in enumerate(unet_cfg.up_block_types) if "CrossAttn" in kind}
    out: dict[str, torch.Tensor] = {}
    for key, value in pipe.unet.state_dict().items():
        out[unet_key(key, unet_cfg.layers_per_block, up_with_attention)] = value
    levels = len(pipe.vae.config.block_out_channels)
    for key, value in pipe.vae.state_dict().items():
        new = vae_key(key, levels)
        if ".attn_1." in new and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1×1 convolutions
        out[new] = value
    for key, value in pipe.text_encoder.state_dict().items():
        out[f"cond_stage_model.transformer.text_model.{key.removeprefix('text_model.')}"] = value
    return {k: v.contiguous() for k, v in out.items()}


def write_single_file(pipe, path: str | Path) -> Path:
    path = Path(path)
    save_file(to_ldm_state_dict(pipe), str(path))
    return path
