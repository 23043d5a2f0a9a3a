"""FLUX.2 [klein] (4B and 9B) as the registry sees them (no torch): double and single stream blocks trained with
flow matching on 2×2-patchified latents, a Qwen3 text encoder (three of its layers stacked), FLUX.2's VAE.
The torch side is trainer/families/flux2/model.py."""

from __future__ import annotations

from typing import Any

from trainer.families.declare import FamilyInfo, ModelSize, ShiftSchedule
from trainer.families.flow_params import (
    DIT_CROPS,
    DIT_RULES,
    FLOW_DEFAULTS,
    FLOW_PARAMS,
    FLOW_THEMES,
    QWEN3,
    TRANSFORMER_ONLY,
    musubi_only,
)

DEFAULTS: dict[str, Any] = {**FLOW_DEFAULTS, "network_module": "networks.lora_flux_2",
                            "timestep_sampling": "flux_shift"}

FAMILIES = (
    FamilyInfo(
        name="flux2", label="FLUX.2 [klein]", runtime="trainer.families.flux2.model:Flux2",
        pipeline_classes=("Flux2KleinPipeline",), resolution=1024, crop_sizes=DIT_CROPS, text_encoders=1,
        defaults=DEFAULTS, params=(*FLOW_PARAMS, QWEN3), rules=(*DIT_RULES, TRANSFORMER_ONLY), themes=FLOW_THEMES,
        captions="sentences", network_module="networks.lora_flux_2", tiny="trainer.families.flux2.tiny",
        exporter=musubi_only("FLUX.2"),
        declared_by=lambda cfg: cfg.network_module == "networks.lora_flux_2",
        # training noise levels: the resolution-dependent shift of FLUX's scheduler config (FLUX.2's pipeline
        # renders with an empirical μ that also depends on the step count: previews use that)
        schedule=ShiftSchedule(dynamic=True, base_shift=0.5, max_shift=1.15, base_tokens=256, max_tokens=4096),
        render_defaults={"steps": 4, "cfg_scale": 1.0},  # klein is step-distilled: 4 steps, no CFG
        # klein 4B with Qwen3-4B; 9B needs about twice the weights
        size=ModelSize(transformer=3_875_544_576, blocks=25, hidden=3072, lora_width=1_443_840,
                       text_encoder=4_022_468_096, vae=84_046_115, text_tokens=512),
    ),
)
