"""FLUX.1 and Chroma as the registry sees them (no torch): their parameters, presets and rules.
The torch side is trainer/families/flux/model.py."""

from __future__ import annotations

from typing import Any, Literal

from trainer.families.declare import Exporter, FamilyInfo, ModelSize, Param, Rule, ShiftSchedule
from trainer.families.flow_params import DIT_CROPS, DIT_RULES, FLOW, FLOW_DEFAULTS, FLOW_PARAMS, FLOW_THEMES

TEXT = "FLUX.1 / Chroma text"
FLUX_PARAMS = (
    *FLOW_PARAMS,
    Param("model_type", Literal["flux", "chroma"] | None, None, identity=True,
          elsewhere="sd-scripts' FLUX.1 / Chroma switch; this model is chosen by its files"),
    Param("clip_l", str | None, None, path=True),
    Param("t5xxl", str | None, None, path=True),
    Param("ae", str | None, None, path=True),
    # sd-scripts defaults to 3.5, the value for inference; a LoRA trained at 3.5 learns against an over-guided
    # model and looks burnt at normal settings. FLUX.1-dev is trained at 1.0; Chroma has no guidance input.
    Param("guidance_scale", float, 1.0,
          "Guidance fed to FLUX.1-dev's guidance embedding while training: 1.0 (3.5 is for inference and burns the "
          "LoRA in); Chroma has none.", FLOW,
          bounds={"ge": 0}),
    Param("t5xxl_max_token_length", int | None, None,
          "T5 caption length in tokens; empty = 512 (dev, Chroma) or 256 (schnell).", TEXT,
          bounds={"ge": 8, "le": 512}),
    Param("apply_t5_attn_mask", bool, False, "Mask T5's padding in attention; Chroma requires it.", TEXT),
)
FLUX_DEFAULTS: dict[str, Any] = {
    **FLOW_DEFAULTS, "network_module": "networks.lora_flux", "timestep_sampling": "flux_shift",
    "guidance_scale": 1.0,
}
FLUX_RULES = (
    Rule(lambda c: c.guidance_scale > 1.0, "warning", "guidance_scale",
         "values above 1.0 train against an over-guided model (3.5 is for inference): the LoRA tends to look burnt"),
    Rule(lambda c: c.cache_text_encoder_outputs and c.network_flag("train_t5xxl"),
         "error", "cache_text_encoder_outputs", "cannot cache T5 outputs while train_t5xxl trains T5"),
    Rule(lambda c: c.network_flag("split_qkv"), "error", "network_args",
         "split_qkv is not supported: lorabake trains the fused qkv module as sd-scripts writes it"),
    *DIT_RULES,
)
RUNTIME = "trainer.families.flux.model:Flux"
CHROMA_RUNTIME = "trainer.families.flux.model:Chroma"
TINY = "trainer.families.flux.tiny"
TEXT_KEYS = ("t5xxl_max_token_length", "apply_t5_attn_mask")
# FLUX.1's resolution-dependent shift (its scheduler config): μ from 0.5 at 256 packed tokens to 1.15 at 4096
SCHEDULE = ShiftSchedule(dynamic=True, base_shift=0.5, max_shift=1.15, base_tokens=256, max_tokens=4096)


def _sd_scripts(**flags: Any) -> Exporter:
    return Exporter("kohya-ss/sd-scripts", "flux_train_network.py", flags)


FAMILIES = (
    FamilyInfo(
        name="chroma", label="Chroma", runtime=CHROMA_RUNTIME, pipeline_classes=("ChromaPipeline",), resolution=1024,
        crop_sizes=DIT_CROPS, text_encoders=1,
        defaults={**FLUX_DEFAULTS, "model_type": "chroma", "timestep_sampling": "sigmoid", "guidance_scale": 0.0,
                  "apply_t5_attn_mask": True},
        exporter=_sd_scripts(model_type="chroma"), params=FLUX_PARAMS, themes=FLOW_THEMES,
        rules=(*FLUX_RULES[1:],
               Rule(lambda c: not c.apply_t5_attn_mask, "error", "apply_t5_attn_mask",
                    "Chroma was trained with T5 padding masked: set apply_t5_attn_mask = true"),
               Rule(lambda c: c.guidance_scale != 0, "warning", "guidance_scale",
                    "Chroma has no guidance input: the value is ignored")),
        declared_by=lambda cfg: cfg.model_type == "chroma", captions="sentences", text_keys=TEXT_KEYS,
        schedule=SCHEDULE, network_module="networks.lora_flux", tiny=TINY,
        size=ModelSize(transformer=8_899_983_424, blocks=57, hidden=3072, lora_width=3_502_080,
                       text_encoder=4_762_310_656, vae=83_819_683, text_tokens=512),  # T5-XXL's encoder
    ),
    FamilyInfo(
        name="flux", label="FLUX.1", runtime=RUNTIME, pipeline_classes=("FluxPipeline",), resolution=1024,
        crop_sizes=DIT_CROPS, text_encoders=2, defaults=FLUX_DEFAULTS, exporter=_sd_scripts(), params=FLUX_PARAMS,
        rules=FLUX_RULES, themes=FLOW_THEMES, captions="sentences", text_keys=TEXT_KEYS, schedule=SCHEDULE,
        declared_by=lambda cfg: cfg.model_type == "flux" or cfg.network_module == "networks.lora_flux",
        network_module="networks.lora_flux", tiny=TINY,
        size=ModelSize(transformer=11_901_408_320, blocks=57, hidden=3072, lora_width=4_786_176,
                       text_encoder=4_885_371_136, vae=83_819_683, text_tokens=512),  # T5-XXL + CLIP-L
    ),
)
