"""Stable Diffusion module names as sd-scripts writes them into LoRA files.

SD1/2 UNets use diffusers paths; sd-scripts builds SDXL's UNet in the original SGM layout (input_blocks /
middle_block / output_blocks), so diffusers paths are mapped there.
"""

from __future__ import annotations

import re

from trainer.networks.names import UNET_PREFIX, to_kohya

RESNET_SGM_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}

_DOWN = re.compile(r"^down_blocks\.(\d+)\.(attentions|resnets|downsamplers)\.(\d+)\.?(.*)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.(attentions|resnets|upsamplers)\.(\d+)\.?(.*)$")
_MID = re.compile(r"^mid_block\.(attentions|resnets)\.(\d+)\.?(.*)$")


def te_prefixes(family: str) -> list[str]:
    return ["lora_te1", "lora_te2"] if family == "sdxl" else ["lora_te"]


def _resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    renamed = RESNET_SGM_NAMES.get(head, head)
    return f"{renamed}.{tail}" if tail else renamed


def sgm_path(path: str, layers_per_block: int, up_blocks_with_attention: set[int]) -> str:
    """diffusers SDXL UNet module path → the SGM path sd-scripts uses."""
    per_level = layers_per_block + 1
    if m := _DOWN.match(path):
        level, kind, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * per_level}.0.op"
        block = 1 + level * per_level + index
        inner = "1" if kind == "attentions" else "0"
        rest = _resnet_rest(rest) if kind == "resnets" else rest
        return f"input_blocks.{block}.{inner}.{rest}"
    if m := _MID.match(path):
        kind, index, rest = m[1], int(m[2]), m[3]
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{0 if index == 0 else 2}.{_resnet_rest(rest)}"
    if m := _UP.match(path):
        level, kind, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            inner = 2 if level in up_blocks_with_attention else 1
            return f"output_blocks.{level * per_level + layers_per_block}.{inner}.{rest}"
        block = level * per_level + index
        inner = "1" if kind == "attentions" else "0"
        rest = _resnet_rest(rest) if kind == "resnets" else rest
        return f"output_blocks.{block}.{inner}.{rest}"
    return path


def unet_name(path: str, family: str, layers_per_block: int = 2,
              up_blocks_with_attention: set[int] | None = None) -> str:
    if family == "sdxl":
        path = sgm_path(path, layers_per_block, up_blocks_with_attention or set())
    return to_kohya(UNET_PREFIX, path)
