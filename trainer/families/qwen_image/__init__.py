"""Qwen-Image as the registry sees it (no torch): a 20 B double-stream MMDiT trained with flow matching on 2×2
latent patches, conditioned on the last hidden layer of Qwen2.5-VL 7B (read through its image-description system
prompt, variable length with a mask), with Wan's 16-channel VAE normalized per channel.
The torch side is trainer/families/qwen_image/model.py.

In bf16 its transformer alone is ~41 GB; on a 24 GB card it trains with a quantized frozen base (`base_weights`
nf4 or int8), its text encoder's outputs cached and gradient checkpointing on.
"""

from __future__ import annotations

from typing import Any

from trainer.families.declare import FamilyInfo, ModelSize, ShiftSchedule
from trainer.families.flow_params import (
    DIT_CROPS,
    DIT_RULES,
    FLOW_DEFAULTS,
    FLOW_PARAMS,
    FLOW_THEMES,
    TRANSFORMER_ONLY,
    musubi_only,
)

# musubi-tuner's recommendation for Qwen-Image LoRAs: a fixed shift of 2.2 (its own dynamic shift is flux_shift)
DEFAULTS: dict[str, Any] = {**FLOW_DEFAULTS, "network_module": "networks.lora_qwen_image",
                            "timestep_sampling": "shift", "discrete_flow_shift": 2.2}

FAMILIES = (
    FamilyInfo(
        name="qwen_image", label="Qwen-Image", runtime="trainer.families.qwen_image.model:QwenImage",
        pipeline_classes=("QwenImagePipeline",), resolution=1024, crop_sizes=DIT_CROPS, text_encoders=1,
        defaults=DEFAULTS, params=FLOW_PARAMS, rules=(*DIT_RULES, TRANSFORMER_ONLY), themes=FLOW_THEMES,
        captions="sentences", network_module="networks.lora_qwen_image", tiny="trainer.families.qwen_image.tiny",
        exporter=musubi_only("Qwen-Image"), declared_by=lambda cfg: cfg.network_module == "networks.lora_qwen_image",
        # its scheduler's resolution-dependent shift (scheduler_config.json of Qwen/Qwen-Image)
        schedule=ShiftSchedule(dynamic=True, base_shift=0.5, max_shift=0.9, base_tokens=256, max_tokens=8192),
        render_defaults={"steps": 50, "cfg_scale": 4.0},  # its pipeline's defaults: 50 steps, true CFG 4
        size=ModelSize(transformer=20_430_401_088, blocks=60, hidden=3072, lora_width=6_635_520,
                       text_encoder=8_292_166_656, vae=126_892_531, text_tokens=256),  # Qwen2.5-VL 7B
    ),
)
