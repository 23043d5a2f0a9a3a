"""Stable Diffusion 1.x, 2.x and XL as the registry sees them (no torch): their parameters, presets and rules.
The torch side is trainer/families/sd/model.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from trainer.families.declare import Exporter, FamilyInfo, ModelSize, Param, Rule

DDPM = "a DDPM setting (SD's noise schedule); flow-matching models are trained without it"
SD_PARAMS = (
    Param("v2", bool, False, identity=True, elsewhere="an SD2 flag; this model is chosen by its files"),
    Param("sdxl", bool, False, identity=True, ours=True, elsewhere="an SDXL flag; this model is chosen by its files"),
    Param("v_parameterization", bool, False, identity=True,
          elsewhere="flow-matching models predict a velocity, not SD2's v"),
    Param("clip_skip", int | None, None, "Use the text encoder's n-th layer from the end; 2 is usual for anime models.",
          "Data and captions", bounds={"ge": 1, "le": 12},
          elsewhere="this model reads its text encoder's own output layer: there is no CLIP layer to skip"),
    Param("max_token_length", Literal[75, 150, 225] | None, None,
          "Caption length in tokens: empty = 75, or 150 / 225 in 75-token chunks.", "Data and captions",
          elsewhere="applies to CLIP prompts in 75-token chunks; this model's text encoder has its own length"),
    Param("min_snr_gamma", float | None, None,
          "Weights the loss by min(SNR, γ)/SNR so easy, low-noise steps count less; 5 is usual.", "Optimisation",
          bounds={"gt": 0}, elsewhere="weights DDPM timesteps by SNR; flow matching uses weighting_scheme instead"),
    Param("noise_offset", float | None, None,
          "Adds a per-image brightness shift to the noise; 0.05–0.1 helps very dark or bright images.", "Optimisation",
          bounds={"ge": 0}, elsewhere=DDPM),
    Param("multires_noise_iterations", int | None, None,
          "Pyramid (multi-resolution) noise; 6–10 is typical. Empty = off.", "Optimisation",
          bounds={"ge": 1, "le": 64}, elsewhere=DDPM),
    Param("multires_noise_discount", float, 0.3, "How fast pyramid noise fades with each level.", "Optimisation",
          bounds={"gt": 0, "le": 1}, elsewhere=DDPM),
    Param("xformers", bool, False, "xformers attention, where installed.", "Optimisation",
          elsewhere="this model's attention runs on PyTorch's SDPA"),
)


def _text_encoder_act(folder: Path) -> str:
    try:
        return json.loads((folder / "text_encoder" / "config.json").read_text()).get("hidden_act", "")
    except (OSError, json.JSONDecodeError):
        return ""


SD_RUNTIME = "trainer.families.sd.model:StableDiffusion"
SD_TINY = "trainer.families.sd.tiny"
# sd-scripts' SD 1.x/2.x UNet keeps diffusers' names; its SDXL UNet (input_blocks …, time_embed) has none of these
SD_LYCORIS_NAMES = ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2")
# the flow's own list first, then SDXL's common training buckets
SDXL_CROPS = ("1024x1024", "768x1024", "1024x768", "832x1216", "1216x832", "896x1152", "1152x896")
SD_DEFAULTS: dict[str, Any] = {"mixed_precision": "bf16"}
SD_TEXT_KEYS = ("clip_skip", "max_token_length")


# The full-size models' numbers for the memory estimate (tests/test_memory.py builds each architecture to check
# them): UNet, CLIP text encoders (SD 1.5: CLIP-L; SD 2: OpenCLIP-H; SDXL: CLIP-L + bigG), the VAE.
VAE_PARAMS = 83_653_863
SD15_SIZE = ModelSize(transformer=859_520_964, blocks=9, hidden=320, lora_width=423_936, text_encoder=123_060_480,
                      vae=VAE_PARAMS, text_tokens=0, pixels_per_token=8, activation_blocks=18.0)
SD2_SIZE = ModelSize(transformer=865_910_724, blocks=9, hidden=320, lora_width=432_128, text_encoder=340_387_840,
                     vae=VAE_PARAMS, text_tokens=0, pixels_per_token=8, activation_blocks=18.0)
SDXL_SIZE = ModelSize(transformer=2_567_463_684, blocks=7, hidden=320, lora_width=2_659_840,
                      text_encoder=123_060_480 + 694_659_840, vae=VAE_PARAMS, text_tokens=0, pixels_per_token=8,
                      activation_blocks=29.25)


def _sd_scripts(script: str, **flags: Any) -> Exporter:
    return Exporter("kohya-ss/sd-scripts", script, flags)


FAMILIES = (
    FamilyInfo(
        name="sdxl", label="SDXL", runtime=SD_RUNTIME, pipeline_classes=("StableDiffusionXLPipeline",),
        resolution=1024, crop_sizes=SDXL_CROPS, text_encoders=2,
        defaults={**SD_DEFAULTS, "resolution": "1024", "min_bucket_reso": 512, "max_bucket_reso": 2048,
                  "network_train_unet_only": True, "cache_text_encoder_outputs": False,
                  "gradient_checkpointing": True, "clip_skip": None, "text_encoder_lr": None},
        exporter=_sd_scripts("sdxl_train_network.py"), params=SD_PARAMS,
        refuses={"v2": "an SD2 flag; this base model is SDXL"},
        rules=(Rule(lambda c: c.mixed_precision == "fp16", "warning", "mixed_precision",
                    "SDXL's VAE overflows in fp16: lorabake keeps the VAE in float32 (use bf16 if you can)"),),
        declared_by=lambda cfg: cfg.sdxl, text_keys=SD_TEXT_KEYS, tiny=SD_TINY, size=SDXL_SIZE,
    ),
    FamilyInfo(
        name="sd2", label="SD 2.x", runtime=SD_RUNTIME, pipeline_classes=("StableDiffusionPipeline",),
        resolution=768, crop_sizes=("768x768", "640x960", "960x640"), text_encoders=1,
        defaults={**SD_DEFAULTS, "resolution": "768", "v_parameterization": True, "min_bucket_reso": 384,
                  "max_bucket_reso": 1280},
        exporter=_sd_scripts("train_network.py", v2=True), params=SD_PARAMS,
        refuses={"sdxl": "an SDXL flag; this base model is SD 2.x"},
        declared_by=lambda cfg: cfg.v2, lycoris_names=SD_LYCORIS_NAMES, text_keys=SD_TEXT_KEYS, tiny=SD_TINY,
        matches_folder=lambda folder, index: _text_encoder_act(folder) == "gelu", size=SD2_SIZE,
    ),
    FamilyInfo(
        name="sd15", label="SD 1.5", runtime=SD_RUNTIME, pipeline_classes=("StableDiffusionPipeline",),
        resolution=512, crop_sizes=("512x512", "512x768", "768x512"), text_encoders=1,
        defaults={**SD_DEFAULTS, "resolution": "512", "min_bucket_reso": 256, "max_bucket_reso": 1024},
        exporter=_sd_scripts("train_network.py"), params=SD_PARAMS,
        refuses={"sdxl": "an SDXL flag; this base model is SD 1.5", "v2": "an SD2 flag; this base model is SD 1.5"},
        rules=(Rule(lambda c: c.v_parameterization, "warning", "v_parameterization",
                    "SD1.x models predict noise, not v: this is only right for v-prediction models"),),
        lycoris_names=SD_LYCORIS_NAMES, text_keys=SD_TEXT_KEYS, tiny=SD_TINY, size=SD15_SIZE,
    ),
)
