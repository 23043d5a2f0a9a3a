"""Training configuration in sd-scripts vocabulary.

Imports no torch: the API validates job parameters and counts steps with this module alone.
See ../shared/docs/PARAMETERS.md for what every field means.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

OptimizerName = Literal[
    "AdamW", "AdamW8bit", "Lion", "Lion8bit", "SGDNesterov", "Prodigy", "DAdaptAdam", "Adafactor"
]
SchedulerName = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "adafactor"
]
SamplerName = Literal["euler_a", "euler", "ddim", "dpm++ 2m", "dpm++ 2m karras"]
Family = str  # a name in trainer.families.FAMILIES
TimestepSampling = Literal["sigma", "uniform", "sigmoid", "shift", "flux_shift"]
# "uniform" and "none" weight every timestep alike; sd-scripts takes both and writes back what was given
WeightingScheme = Literal["none", "uniform", "sigma_sqrt", "logit_normal", "mode", "cosmap"]


MAX_STEPS = 10_000_000  # optimizer steps of one run: far past any real LoRA, well inside every integer column


class ConfigError(ValueError):
    """A configuration problem; every message names the key it is about."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("; ".join(messages))


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Model
    pretrained_model_name_or_path: str = ""
    v2: bool = False
    v_parameterization: bool = False
    sdxl: bool = False
    vae: str | None = None
    pretrained_model_config: str | None = None  # lorabake: local diffusers folder describing a single-file model
    model_family: str | None = None  # lorabake: sd15 | sd2 | sdxl | flux | chroma; None = from flags and files

    # FLUX.1 / Chroma (flux_train_network.py); refused for families that do not use them
    model_type: Literal["flux", "chroma"] | None = None
    clip_l: str | None = None
    t5xxl: str | None = None
    ae: str | None = None
    timestep_sampling: TimestepSampling = "sigma"
    sigmoid_scale: float = Field(1.0, gt=0)
    discrete_flow_shift: float = Field(3.0, gt=0)
    model_prediction_type: Literal["raw", "additive", "sigma_scaled"] = "sigma_scaled"
    weighting_scheme: WeightingScheme = "none"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    mode_scale: float = 1.29
    # sd-scripts defaults to 3.5, the value for inference; a LoRA trained at 3.5 learns against an over-guided
    # model and looks burnt at normal settings. FLUX.1-dev is trained at 1.0; Chroma has no guidance input.
    guidance_scale: float = Field(1.0, ge=0)
    t5xxl_max_token_length: int | None = Field(None, ge=8, le=512)
    apply_t5_attn_mask: bool = False
    fp8_base: bool = False
    fp8_base_unet: bool = False
    blocks_to_swap: int | None = Field(None, ge=0, le=57)
    cpu_offload_checkpointing: bool = False

    # Network
    network_module: Literal["networks.lora", "networks.lora_flux", "lycoris.kohya"] = "networks.lora"
    network_dim: int = Field(4, ge=1, le=1024)
    network_alpha: float = Field(1.0, ge=0)
    conv_dim: int | None = Field(None, ge=1, le=1024)
    conv_alpha: float | None = Field(None, ge=0)
    network_args: list[str] = Field(default_factory=list)
    network_train_unet_only: bool = False
    network_train_text_encoder_only: bool = False
    network_weights: str | None = None
    dim_from_weights: bool = False

    # Optimisation
    learning_rate: float = Field(1e-4, ge=0)
    unet_lr: float | None = Field(None, ge=0)
    text_encoder_lr: float | list[float] | None = None
    optimizer_type: OptimizerName = "AdamW"
    optimizer_args: list[str] = Field(default_factory=list)
    use_8bit_adam: bool = False
    lr_scheduler: SchedulerName = "constant"
    lr_warmup_steps: float = Field(0, ge=0, le=MAX_STEPS)
    lr_scheduler_num_cycles: int = Field(1, ge=1, le=1000)
    lr_scheduler_power: float = 1.0
    # lorabake: images scored after every epoch for a validation loss (a kohya folder); the service fills it with the
    # share of the dataset that validation_split holds out of training
    validation_data_dir: str | None = None
    validation_split: float = Field(0.0, ge=0, le=0.5)
    # lorabake: a run continued with a fresh schedule starts its learning-rate schedule again at this step
    lr_restart_step: int | None = Field(None, ge=0, le=MAX_STEPS)
    max_train_steps: int = Field(1600, ge=1, le=MAX_STEPS)
    max_train_epochs: int | None = Field(None, ge=1, le=10_000)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    train_batch_size: int = Field(1, ge=1, le=256)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = Field(42, ge=-(2**63) + 1, le=2**63 - 1)
    min_snr_gamma: float | None = Field(None, gt=0)
    noise_offset: float | None = Field(None, ge=0)
    multires_noise_iterations: int | None = Field(None, ge=1, le=64)
    multires_noise_discount: float = Field(0.3, gt=0, le=1)
    prior_loss_weight: float = Field(1.0, ge=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    sdpa: bool = True
    xformers: bool = False

    # Data and captions
    train_data_dir: str = ""
    reg_data_dir: str | None = None
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = Field(0, ge=0, le=255)
    caption_dropout_rate: float = Field(0.0, ge=0, le=1)
    caption_dropout_every_n_epochs: int = Field(0, ge=0, le=10_000)
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1)
    max_token_length: Literal[75, 150, 225] | None = None
    clip_skip: int | None = Field(None, ge=1, le=12)
    resolution: str = "512"
    enable_bucket: bool = False
    min_bucket_reso: int = Field(256, ge=8, le=8192)
    max_bucket_reso: int = Field(1024, ge=8, le=8192)
    bucket_reso_steps: int = Field(64, ge=8, le=1024)
    bucket_no_upscale: bool = False
    cache_latents: bool = False
    cache_latents_to_disk: bool = False
    cache_text_encoder_outputs: bool = False
    cache_text_encoder_outputs_to_disk: bool = False
    color_aug: bool = False
    flip_aug: bool = False
    random_crop: bool = False
    num_workers: int = Field(0, ge=0, le=64)
    persistent_workers: bool = False

    # Saving and samples
    output_dir: str = "output"
    output_name: str = "last"
    save_every_n_epochs: int | None = Field(None, ge=1, le=10_000)
    save_last_n_epochs: int | None = Field(None, ge=1, le=10_000)
    save_model_as: Literal["safetensors", "ckpt", "pt"] = "safetensors"
    save_precision: Literal["float", "fp16", "bf16"] | None = None
    save_state: bool = False
    resume: str | None = None
    training_comment: str | None = None
    no_metadata: bool = False
    logging_dir: str | None = None
    sample_every_n_epochs: int | None = Field(None, ge=1, le=10_000)
    sample_at_first: bool = False
    sample_sampler: SamplerName = "euler_a"
    sample_prompts: str | list[str] | None = None
    sample_images_per_prompt: int = Field(4, ge=1, le=16)

    @field_validator("caption_extension")
    @classmethod
    def _dotted_extension(cls, value: str) -> str:
        return value if value.startswith(".") else f".{value}"

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_text(cls, value: Any) -> str:
        if isinstance(value, int):
            return str(value)
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value).replace(" ", "")

    @field_validator("resolution")
    @classmethod
    def _resolution_valid(cls, value: str) -> str:
        parts = value.split(",")
        if len(parts) not in (1, 2) or not all(p.isdigit() and 32 <= int(p) <= 8192 for p in parts):
            raise ValueError('must be "N" or "W,H" with sizes from 32 to 8192 pixels')
        return value

    @model_validator(mode="after")
    def _legacy_aliases(self) -> TrainConfig:
        if self.use_8bit_adam and self.optimizer_type == "AdamW":
            object.__setattr__(self, "optimizer_type", "AdamW8bit")
        return self

    # Derived values -------------------------------------------------------------------------------
    @property
    def resolution_wh(self) -> tuple[int, int]:
        parts = [int(p) for p in self.resolution.split(",")]
        return (parts[0], parts[-1])

    @property
    def effective_alpha(self) -> float:
        return self.network_alpha if self.network_alpha else float(self.network_dim)

    @property
    def effective_conv_dim(self) -> int | None:
        """The rank of 3×3 convolutions, None when they are not trained (LyCORIS trains them at network_dim)."""
        value = self.conv_dim or _int_arg(self.network_args, "conv_dim")
        return value or (self.network_dim if self.network_module == "lycoris.kohya" else None)

    @property
    def effective_conv_alpha(self) -> float:
        value = self.conv_alpha
        if value is None:
            arg = _arg(self.network_args, "conv_alpha")
            lycoris = self.network_alpha if self.network_module == "lycoris.kohya" else 1.0
            value = float(arg) if arg is not None else lycoris
        return value if value else float(self.effective_conv_dim or 1)

    def network_flag(self, key: str) -> bool:
        """A true/false network_args entry as sd-scripts reads it ("True", "true", "1")."""
        return arg_flag(self.network_args, key)

    @property
    def unet_learning_rate(self) -> float:
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    def text_encoder_learning_rates(self, count: int) -> list[float]:
        value = self.text_encoder_lr
        if value is None:
            return [self.learning_rate] * count
        if isinstance(value, list):
            if len(value) == 1:
                return value * count
            return list(value[:count]) + [value[-1]] * max(0, count - len(value))
        return [value] * count

    @property
    def train_text_encoder(self) -> bool:
        return not self.network_train_unet_only

    @property
    def train_unet(self) -> bool:
        return not self.network_train_text_encoder_only


def _arg(args: list[str], key: str) -> str | None:
    for item in args:
        name, _, value = item.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def arg_value(args: list[str] | None, key: str) -> str | None:
    """The value of `key=value` in a network_args-style list."""
    return _arg(args or [], key)


def arg_flag(args: list[str] | None, key: str) -> bool:
    return (arg_value(args, key) or "").lower() in ("true", "1", "yes")


def _int_arg(args: list[str], key: str) -> int | None:
    value = _arg(args, key)
    return int(value) if value else None


KNOWN_KEYS = frozenset(TrainConfig.model_fields)


def unknown_key_messages(keys: list[str] | set[str]) -> list[str]:
    messages = []
    for key in sorted(keys):
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        messages.append(f'unknown parameter "{key}"{hint}')
    return messages


def build_config(values: dict[str, Any]) -> TrainConfig:
    """Validate a flat dict of sd-scripts parameters; every problem is reported with its key."""
    messages = unknown_key_messages(set(values))
    if messages:
        raise ConfigError(messages)
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(validation_messages(exc)) from None


def validation_messages(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "config"
        out.append(f"{key}: {err['msg']}")
    return out
