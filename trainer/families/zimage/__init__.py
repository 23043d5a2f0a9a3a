"""Z-Image (Base and Turbo) as the registry sees them (no torch): a 6 B single-stream DiT trained with flow matching
on 2×2 latent patches, a Qwen3 text encoder read through its chat template, FLUX's 16-channel VAE.
The torch side is trainer/families/zimage/model.py.

Turbo is Base distilled to ~8 steps without CFG. Training a LoRA on Turbo directly also trains away that
distillation: after a few hundred steps the LoRA's images need more steps and look soft. Two remedies are
offered: a de-distillation adapter (`training_adapter`, a LoRA made for this, merged into Turbo while training and
left out of the file; set on the base model by the operator) — the LoRA then keeps Turbo's 8-step look — or
training on Z-Image Base, whose LoRAs also apply to Turbo, since Turbo keeps Base's weights' layout and meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.families.declare import FamilyInfo, ModelSize, Param, Rule, ShiftSchedule
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

ZIMAGE_PARAMS = (*FLOW_PARAMS, QWEN3)
TURBO_PARAMS = (
    *ZIMAGE_PARAMS,
    Param("training_adapter", str | None, None, path=True,
          elsewhere="a de-distillation adapter for Z-Image Turbo; this model is not distilled"),
)
DEFAULTS: dict[str, Any] = {
    **FLOW_DEFAULTS, "network_module": "networks.lora_zimage", "timestep_sampling": "shift",
    "discrete_flow_shift": 3.0,
}
RUNTIME = "trainer.families.zimage.model:ZImage"
TINY = "trainer.families.zimage.tiny"
SCHEDULE = ShiftSchedule(shift=3.0)  # its scheduler's fixed shift (no resolution-dependent μ)
NO_EXPORTER = musubi_only("Z-Image")
TURBO_DISTILLATION = Rule(
    lambda c: not c.training_adapter, "warning", "training_adapter",
    "Z-Image Turbo is step-distilled: a LoRA trained on it directly also trains the distillation away (after a few "
    "hundred steps its images need more steps and look soft). Train on Z-Image Base (its LoRAs apply to Turbo too), "
    "or have the operator set training_adapter, a de-distillation adapter merged into Turbo only while training")


RULES = (*DIT_RULES, TRANSFORMER_ONLY)
SIZE = ModelSize(transformer=6_154_908_736, blocks=34, hidden=3840, lora_width=2_980_352, text_encoder=4_022_468_096,
                 vae=83_819_683, text_tokens=256)  # Qwen3-4B


def _is_turbo(folder: Path, index: dict) -> bool:
    return "turbo" in folder.absolute().name.lower()


FAMILIES = (
    FamilyInfo(
        name="zimage_turbo", label="Z-Image Turbo", runtime=RUNTIME, pipeline_classes=("ZImagePipeline",),
        resolution=1024, crop_sizes=DIT_CROPS, text_encoders=1, defaults=DEFAULTS, exporter=NO_EXPORTER,
        params=TURBO_PARAMS, rules=(*RULES, TURBO_DISTILLATION), themes=FLOW_THEMES, captions="sentences",
        schedule=SCHEDULE, network_module="networks.lora_zimage", tiny=TINY, matches_folder=_is_turbo, size=SIZE,
        declared_by=lambda cfg: cfg.network_module == "networks.lora_zimage" and bool(cfg.training_adapter),
        render_defaults={"steps": 9, "cfg_scale": 0.0},  # distilled: 8 transformer steps, no CFG
    ),
    FamilyInfo(
        name="zimage", label="Z-Image", runtime=RUNTIME, pipeline_classes=("ZImagePipeline",), resolution=1024,
        crop_sizes=DIT_CROPS, text_encoders=1, defaults=DEFAULTS, exporter=NO_EXPORTER, params=ZIMAGE_PARAMS,
        rules=RULES, themes=FLOW_THEMES, captions="sentences", schedule=SCHEDULE,
        network_module="networks.lora_zimage", tiny=TINY, size=SIZE,
        declared_by=lambda cfg: cfg.network_module == "networks.lora_zimage",
        render_defaults={"steps": 28, "cfg_scale": 4.0},
    ),
)
