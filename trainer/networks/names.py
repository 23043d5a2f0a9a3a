"""Module names as sd-scripts writes them into LoRA files: a prefix plus the module path with dots turned into
underscores. Text-encoder names keep the `text_model` level that transformers 5 dropped from CLIPTextModel."""

from __future__ import annotations

UNET_PREFIX = "lora_unet"
# the CLIP text-encoder modules sd-scripts adapts (their Linear layers), in every family that has CLIP
TEXT_CLASSES = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP"})


def to_kohya(prefix: str, path: str) -> str:
    return f"{prefix}_{path}".replace(".", "_")


def text_encoder_name(prefix: str, module_path: str) -> str:
    path = module_path.removeprefix("text_model.")
    return to_kohya(prefix, f"text_model.{path}")
