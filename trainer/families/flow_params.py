"""The parameters every flow-matching DiT family shares (sd-scripts' flux_train_network.py vocabulary): how noise
levels are drawn and weighted, and the memory options for a large transformer. No torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from trainer.families.declare import Exporter, Param, Rule
from trainer.job.args import arg_value

if TYPE_CHECKING:
    from trainer.job.config import TrainConfig

FLOW = "Flow matching"
MEMORY = "Memory (large transformers)"
TimestepSampling = Literal["sigma", "uniform", "sigmoid", "shift", "flux_shift"]
# "uniform" and "none" weight every timestep alike; sd-scripts takes both and writes back what was given
BaseWeights = Literal["bf16", "fp8", "int8", "nf4"]
WeightingScheme = Literal["none", "uniform", "sigma_sqrt", "logit_normal", "mode", "cosmap"]

FLOW_PARAMS = (
    Param("timestep_sampling", TimestepSampling, "sigma",
          "How noise levels are drawn: flux_shift (the model's own resolution-dependent shift), shift (a fixed "
          "discrete_flow_shift), sigmoid, uniform; sigma is sd-scripts' default.", FLOW),
    Param("sigmoid_scale", float, 1.0, "Spread of the sigmoid-based samplings (sigmoid, shift, flux_shift).", FLOW,
          bounds={"gt": 0}),
    Param("discrete_flow_shift", float, 3.0,
          "Shift of the noise schedule for sigma and shift sampling; 3.1582 is common for FLUX.1, 3 for Z-Image.",
          FLOW, bounds={"gt": 0}),
    Param("model_prediction_type", Literal["raw", "additive", "sigma_scaled"], "sigma_scaled",
          "raw trains the velocity as predicted (recommended); sigma_scaled and additive rewrite the prediction "
          "first.", FLOW),
    Param("weighting_scheme", WeightingScheme, "none",
          "SD3-style loss weighting and noise-level density (with sigma sampling).", FLOW),
    Param("logit_mean", float, 0.0, "Mean of logit_normal noise levels.", FLOW),
    Param("logit_std", float, 1.0, "Spread of logit_normal noise levels.", FLOW, bounds={"gt": 0}),
    Param("mode_scale", float, 1.29, "Scale of the mode weighting scheme.", FLOW),
    Param("base_weights", BaseWeights, "bf16",
          "How the frozen transformer's weights are stored: bf16 as trained; fp8 or int8 (half the memory, "
          "near-identical output), nf4 (a quarter, QLoRA's 4-bit NormalFloat: Qwen-Image in 24 GB). The LoRA "
          "itself trains in full precision and its file is the same whatever is chosen.", MEMORY, ours=True),
    Param("fp8_base", bool, False, "sd-scripts' name for base_weights fp8.", MEMORY),
    Param("fp8_base_unet", bool, False,
          "sd-scripts' name for fp8 on the transformer only (text encoders stay as they are).", MEMORY),
    Param("blocks_to_swap", int | None, None,
          "Transformer blocks kept in CPU memory and streamed in: less VRAM, slower.", MEMORY,
          bounds={"ge": 0, "le": 57}),
    Param("cpu_offload_checkpointing", bool, False, "Gradient-checkpoint activations kept in CPU memory.", MEMORY),
)
# families whose text encoder is Qwen3 (Z-Image, FLUX.2 [klein]) take it as one file too
QWEN3 = Param("qwen3", str | None, None, path=True,
              elsewhere="a Qwen3 text-encoder file; this model has its own text encoders")
# the flow's square first, then the usual 1-megapixel training buckets
DIT_CROPS = ("1024x1024", "768x1024", "1024x768", "832x1216", "1216x832", "896x1152", "1152x896")
# for families whose (Qwen3) text encoder lorabake does not train
TRANSFORMER_ONLY = Rule(lambda c: not c.network_train_unet_only, "error", "network_train_unet_only",
                        "lorabake trains this model's transformer only (its text encoder stays frozen, as in "
                        "ai-toolkit and musubi-tuner): set network_train_unet_only")
# over every flow family's presets: what sd-scripts' DDPM-era defaults get wrong for a DiT
FLOW_DEFAULTS = {
    "resolution": "1024", "min_bucket_reso": 512, "max_bucket_reso": 2048, "mixed_precision": "bf16",
    "network_train_unet_only": True, "cache_text_encoder_outputs": True, "gradient_checkpointing": True,
    "model_prediction_type": "raw", "text_encoder_lr": None, "shuffle_caption": False, "caption_dropout_rate": 0.0,
    "sample_sampler": "euler", "keep_tokens": 0, "optimizer_type": "AdamW", "learning_rate": 1e-4, "unet_lr": 1e-4,
}
# rank 16–32; no LoCon (DiT blocks are Linear)
FLOW_THEMES = {
    "anime_character": {"network_dim": 16, "network_alpha": 16},
    "real_person": {"network_dim": 32, "network_alpha": 16},
    "2_5d": {"network_dim": 32, "network_alpha": 16},
    "style": {"network_dim": 32, "network_alpha": 16, "conv_dim": None, "conv_alpha": None},
    "standard": {"network_dim": 16, "network_alpha": 16},
}


def stored_as(cfg: TrainConfig) -> str:
    """How the frozen transformer is stored: base_weights, or fp8 when sd-scripts' fp8 flags ask for it."""
    return "fp8" if cfg.fp8_base or cfg.fp8_base_unet else cfg.base_weights


# pre-flight for every DiT family (each adds its own)
DIT_RULES = (
    Rule(lambda c: (c.fp8_base or c.fp8_base_unet) and c.base_weights not in ("bf16", "fp8"), "error",
         "base_weights", "fp8_base asks for fp8 weights: leave it off to store them as int8 or nf4"),
    Rule(lambda c: bool(c.blocks_to_swap) and c.cpu_offload_checkpointing, "error", "blocks_to_swap",
         "cannot be combined with cpu_offload_checkpointing"),
    Rule(lambda c: c.cpu_offload_checkpointing, "error", "cpu_offload_checkpointing",
         "lorabake does not offload checkpointed activations yet: use fp8_base and gradient_checkpointing"),
    Rule(lambda c: c.mixed_precision == "fp16", "warning", "mixed_precision",
         "large DiT models overflow in fp16; bf16 is what they were trained in"),
    Rule(lambda c: bool(c.conv_dim or arg_value(c.network_args, "conv_dim")), "warning", "conv_dim",
         "this model's blocks have no convolutions, so there is nothing for conv_dim to train (as in sd-scripts)"),
)


def musubi_only(label: str) -> Exporter:
    """The exporter of a family that sd-scripts does not train: musubi-tuner does, but through its own steps."""
    return Exporter(reason=f"kohya-ss/sd-scripts does not train {label}, and musubi-tuner, which does, takes its own "
                           "dataset, caching and training steps rather than one config file; use `lorabake train` "
                           "with the job's parameters instead")
