"""The registry of model families: what each one is, in data that needs no torch.

The API validates, counts steps, fills presets, crops and exports configs from these entries alone; the trainer
asks `runtime(name)` for the torch side (trainer/families/sd.py, flux.py), which it imports on first use.
Adding a family is one entry here and one runtime module; see docs/adding-a-family.md.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainer.job.config import arg_value

if TYPE_CHECKING:
    from trainer.families.base import ModelFamily
    from trainer.job.config import TrainConfig


@dataclass(frozen=True)
class Rule:
    """A pre-flight finding that applies to one family: `when(cfg)` true → `level` on `field`."""

    when: Callable[[TrainConfig], bool]
    level: Literal["error", "warning"]
    field: str
    message: str


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    label: str
    runtime: str  # "module:Class" of its ModelFamily
    pipeline_classes: tuple[str, ...]  # model_index.json `_class_name`s a diffusers folder of this family has
    resolution: int  # the training size its presets use
    crop_sizes: tuple[str, ...]  # "WxH" choices for the workbench's crop tool
    text_encoders: int  # how many text encoders a text_encoder_lr list may address
    defaults: dict[str, Any]  # over every preset theme
    own_keys: frozenset[str] = frozenset()  # parameters that mean something only for this family group
    refuses: dict[str, str] = field(default_factory=dict)  # key → why it does not apply
    rules: tuple[Rule, ...] = ()
    themes: dict[str, dict[str, Any]] = field(default_factory=dict)  # per preset theme, over the defaults
    script: str = "train_network.py"  # the sd-scripts script that trains it
    export_flags: dict[str, Any] = field(default_factory=dict)  # how sd-scripts is told the family
    declared_by: Callable[[TrainConfig], bool] = lambda cfg: False  # sd-scripts flags that name this family
    # modules LyCORIS's full preset adds by name, as they are called in sd-scripts' model of this family
    lycoris_names: tuple[str, ...] = ()
    matches_folder: Callable[[Path, dict], bool] = lambda folder, index: True
    # what its text encoder was trained to read: CLIP reads comma-separated tags well, T5 reads sentences
    captions: Literal["tags", "sentences"] = "tags"


def _text_encoder_act(folder: Path) -> str:
    try:
        return json.loads((folder / "text_encoder" / "config.json").read_text()).get("hidden_act", "")
    except (OSError, json.JSONDecodeError):
        return ""


FLOW_KEYS = frozenset({
    "model_type", "clip_l", "t5xxl", "ae", "timestep_sampling", "sigmoid_scale", "discrete_flow_shift",
    "model_prediction_type", "weighting_scheme", "logit_mean", "logit_std", "mode_scale", "guidance_scale",
    "t5xxl_max_token_length", "apply_t5_attn_mask", "fp8_base", "fp8_base_unet", "blocks_to_swap",
    "cpu_offload_checkpointing",
})
DDPM_ONLY = {
    "v2": "an SD2 flag; FLUX models are chosen by their files (and model_type)",
    "sdxl": "an SDXL flag; FLUX models are chosen by their files (and model_type)",
    "v_parameterization": "FLUX is trained with flow matching, not v-prediction",
    "clip_skip": "FLUX takes T5's last layer and CLIP-L's pooled output: there is no layer to skip",
    "max_token_length": "applies to CLIP prompts in 75-token chunks; FLUX uses t5xxl_max_token_length",
    "min_snr_gamma": "weights DDPM timesteps by SNR; flow matching uses weighting_scheme instead",
    "multires_noise_iterations": "DDPM noise shaping; sd-scripts' FLUX training does not use it",
    "noise_offset": "DDPM noise shaping; sd-scripts' FLUX training does not use it",
    "xformers": "FLUX attention runs on PyTorch's SDPA",
}
# sd-scripts' SD 1.x/2.x UNet keeps diffusers' names; its SDXL UNet (input_blocks …, time_embed) has none of these
SD_LYCORIS_NAMES = ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2")
# the flow's own list (DESIGN.md) first, then SDXL's common training buckets
SDXL_CROPS = ("1024x1024", "768x1024", "1024x768", "832x1216", "1216x832", "896x1152", "1152x896")
SD_DEFAULTS: dict[str, Any] = {"mixed_precision": "bf16"}
FLUX_DEFAULTS: dict[str, Any] = {
    "resolution": "1024", "min_bucket_reso": 512, "max_bucket_reso": 2048, "mixed_precision": "bf16",
    "network_module": "networks.lora_flux", "network_train_unet_only": True, "cache_text_encoder_outputs": True,
    "gradient_checkpointing": True, "timestep_sampling": "flux_shift", "model_prediction_type": "raw",
    "guidance_scale": 1.0, "clip_skip": None, "max_token_length": None, "min_snr_gamma": None,
    "noise_offset": None, "text_encoder_lr": None, "shuffle_caption": False, "caption_dropout_rate": 0.0,
    "sample_sampler": "euler", "keep_tokens": 0, "optimizer_type": "AdamW", "learning_rate": 1e-4, "unet_lr": 1e-4,
}
FLUX_THEMES: dict[str, dict[str, Any]] = {  # rank 16–32 as PARAMETERS.md says; no LoCon (FLUX blocks are Linear)
    "anime_character": {"network_dim": 16, "network_alpha": 16},
    "real_person": {"network_dim": 32, "network_alpha": 16},
    "2_5d": {"network_dim": 32, "network_alpha": 16},
    "style": {"network_dim": 32, "network_alpha": 16, "conv_dim": None, "conv_alpha": None},
    "standard": {"network_dim": 16, "network_alpha": 16},
}
FLUX_RULES = (
    Rule(lambda c: c.guidance_scale > 1.0, "warning", "guidance_scale",
         "values above 1.0 train against an over-guided model (3.5 is for inference): the LoRA tends to look burnt"),
    Rule(lambda c: c.cache_text_encoder_outputs and c.network_flag("train_t5xxl"),
         "error", "cache_text_encoder_outputs", "cannot cache T5 outputs while train_t5xxl trains T5"),
    Rule(lambda c: bool(c.blocks_to_swap) and c.cpu_offload_checkpointing, "error", "blocks_to_swap",
         "cannot be combined with cpu_offload_checkpointing"),
    Rule(lambda c: c.cpu_offload_checkpointing, "error", "cpu_offload_checkpointing",
         "lorabake does not offload checkpointed activations yet: use fp8_base and gradient_checkpointing"),
    Rule(lambda c: c.network_flag("split_qkv"), "error", "network_args",
         "split_qkv is not supported: lorabake trains the fused qkv module as sd-scripts writes it"),
    Rule(lambda c: c.mixed_precision == "fp16", "warning", "mixed_precision",
         "FLUX overflows in fp16; bf16 is what it was trained in"),
    Rule(lambda c: bool(c.conv_dim or arg_value(c.network_args, "conv_dim")), "warning", "conv_dim",
         "FLUX's blocks have no convolutions, so there is nothing for conv_dim to train (as in sd-scripts)"),
)

FAMILIES: dict[str, FamilyInfo] = {
    "sdxl": FamilyInfo(
        name="sdxl", label="SDXL", runtime="trainer.families.sd.model:StableDiffusion",
        pipeline_classes=("StableDiffusionXLPipeline",), resolution=1024,
        crop_sizes=SDXL_CROPS, text_encoders=2,
        defaults={**SD_DEFAULTS, "resolution": "1024", "min_bucket_reso": 512, "max_bucket_reso": 2048,
                  "network_train_unet_only": True, "cache_text_encoder_outputs": False,
                  "gradient_checkpointing": True, "clip_skip": None, "text_encoder_lr": None},
        refuses={"v2": "an SD2 flag; this base model is SDXL"},
        rules=(Rule(lambda c: c.mixed_precision == "fp16", "warning", "mixed_precision",
                    "SDXL's VAE overflows in fp16: lorabake keeps the VAE in float32 (use bf16 if you can)"),),
        script="sdxl_train_network.py", declared_by=lambda cfg: cfg.sdxl,
    ),
    "sd2": FamilyInfo(
        name="sd2", label="SD 2.x", runtime="trainer.families.sd.model:StableDiffusion",
        pipeline_classes=("StableDiffusionPipeline",), resolution=768,
        crop_sizes=("768x768", "640x960", "960x640"), text_encoders=1,
        defaults={**SD_DEFAULTS, "resolution": "768", "v_parameterization": True, "min_bucket_reso": 384,
                  "max_bucket_reso": 1280},
        refuses={"sdxl": "an SDXL flag; this base model is SD 2.x"},
        export_flags={"v2": True}, declared_by=lambda cfg: cfg.v2, lycoris_names=SD_LYCORIS_NAMES,
        matches_folder=lambda folder, index: _text_encoder_act(folder) == "gelu",
    ),
    "sd15": FamilyInfo(
        name="sd15", label="SD 1.5", runtime="trainer.families.sd.model:StableDiffusion",
        pipeline_classes=("StableDiffusionPipeline",), resolution=512,
        crop_sizes=("512x512", "512x768", "768x512"), text_encoders=1,
        defaults={**SD_DEFAULTS, "resolution": "512", "min_bucket_reso": 256, "max_bucket_reso": 1024},
        refuses={"sdxl": "an SDXL flag; this base model is SD 1.5", "v2": "an SD2 flag; this base model is SD 1.5"},
        rules=(Rule(lambda c: c.v_parameterization, "warning", "v_parameterization",
                    "SD1.x models predict noise, not v: this is only right for v-prediction models"),),
        lycoris_names=SD_LYCORIS_NAMES,
    ),
    "chroma": FamilyInfo(
        name="chroma", label="Chroma", runtime="trainer.families.flux.model:Flux",
        pipeline_classes=("ChromaPipeline",), resolution=1024,
        crop_sizes=SDXL_CROPS, text_encoders=1,
        defaults={**FLUX_DEFAULTS, "model_type": "chroma", "timestep_sampling": "sigmoid", "guidance_scale": 0.0,
                  "apply_t5_attn_mask": True},
        own_keys=FLOW_KEYS, refuses=DDPM_ONLY, themes=FLUX_THEMES,
        rules=(*FLUX_RULES[1:],
               Rule(lambda c: not c.apply_t5_attn_mask, "error", "apply_t5_attn_mask",
                    "Chroma was trained with T5 padding masked: set apply_t5_attn_mask = true"),
               Rule(lambda c: c.guidance_scale != 0, "warning", "guidance_scale",
                    "Chroma has no guidance input: the value is ignored")),
        script="flux_train_network.py", export_flags={"model_type": "chroma"},
        declared_by=lambda cfg: cfg.model_type == "chroma", captions="sentences",
    ),
    "flux": FamilyInfo(
        name="flux", label="FLUX.1", runtime="trainer.families.flux.model:Flux",
        pipeline_classes=("FluxPipeline",), resolution=1024,
        crop_sizes=SDXL_CROPS, text_encoders=2,
        defaults=FLUX_DEFAULTS, own_keys=FLOW_KEYS, refuses=DDPM_ONLY, rules=FLUX_RULES, themes=FLUX_THEMES,
        script="flux_train_network.py", captions="sentences",
        declared_by=lambda cfg: cfg.model_type == "flux" or cfg.network_module == "networks.lora_flux",
    ),
}


class UnknownFamily(KeyError):
    pass


def family_info(name: str) -> FamilyInfo:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def folder_family(location: str) -> str | None:
    """The family of a local diffusers folder, from model_index.json (and its text encoder's config)."""
    folder = Path(location)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for info in FAMILIES.values():
        if index.get("_class_name") in info.pipeline_classes and info.matches_folder(folder, index):
            return info.name
    return None


def resolve_family(cfg: TrainConfig) -> str:
    """model_family if given, else sd-scripts' flags (sdxl, v2, model_type, network_module), else the files."""
    if cfg.model_family:
        return family_info(cfg.model_family).name
    for info in FAMILIES.values():
        if info.declared_by(cfg):
            return info.name
    return folder_family(cfg.pretrained_model_name_or_path) or "sd15"


@cache
def refused_keys(name: str) -> dict[str, str]:
    """Keys that do not apply to this family: its own refusals and every other family group's own keys."""
    info = family_info(name)
    out = dict(info.refuses)
    owners: dict[str, list[str]] = {}
    for other in FAMILIES.values():
        for key in other.own_keys - info.own_keys:
            owners.setdefault(key, []).append(other.label)
    for key, labels in owners.items():
        out.setdefault(key, f"applies to {' and '.join(sorted(labels))} models only")
    return out


def applicable_keys(name: str, keys: set[str]) -> set[str]:
    refused = refused_keys(name)
    return {key for key in keys if key not in refused}


@cache
def runtime(name: str) -> ModelFamily:
    """The torch side of a family (imported on first use)."""
    info = family_info(name)
    module_name, _, class_name = info.runtime.partition(":")
    return getattr(importlib.import_module(module_name), class_name)(info)
