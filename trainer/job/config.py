"""Training configuration in sd-scripts vocabulary: the fields every family shares, plus what each family declares
(trainer/families/*/__init__.py). Each field carries its help line, its pro-mode group (None: only the service or
the CLI sets it), whether it names a path and whether it is lorabake's own; the catalog, the service's allow-list
and the exporters read these instead of keeping lists of names.

Imports no torch: the API validates job parameters and counts steps with this module alone.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator, model_validator

from trainer.families import NETWORK_MODULES, family_fields
from trainer.families.declare import param
from trainer.job.args import arg_flag, arg_value, int_arg
from trainer.job.optimizers import OPTIMIZERS

OptimizerName = Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]
SchedulerName = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "adafactor"
]
SamplerName = Literal["euler_a", "euler", "ddim", "dpm++ 2m", "dpm++ 2m karras"]
Family = str  # a name in trainer.families.FAMILIES
NetworkModule = Literal[NETWORK_MODULES]  # type: ignore[valid-type]


MAX_STEPS = 10_000_000  # optimizer steps of one run: far past any real LoRA, well inside every integer column


@dataclass(frozen=True)
class FieldProblem:
    """One problem with one key (or command-line option), in words for the user."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """Configuration problems, each naming the key it is about; they stay structured up to the API's answer."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))

    @classmethod
    def about(cls, field: str, message: str) -> ConfigError:
        return cls([FieldProblem(field, message)])

    @property
    def messages(self) -> list[str]:
        return [str(problem) for problem in self.problems]


EMA = "Weight averaging (EMA)"


class CommonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Model
    pretrained_model_name_or_path: str = param("", path=True)
    vae: str | None = param(None, path=True)
    # lorabake: local diffusers folder describing a single-file model
    pretrained_model_config: str | None = param(None, path=True, ours=True)
    # lorabake: a name in trainer.families.FAMILIES; None = from sd-scripts' flags and the files
    model_family: str | None = param(None, ours=True, identity=True)

    # Network
    network_module: NetworkModule = param("networks.lora",
        "networks.lora (and the family's own, as networks.lora_flux): kohya's LoRA (LoCon with conv_dim). "
        "lycoris.kohya: LyCORIS's LoCon, LoHa, LoKr and DoRA, chosen by algo in network_args.",
        'Network')
    network_dim: int = param(4,
        'LoRA rank: the size of the learned update. Larger learns more detail and makes a bigger file.',
        'Network', ge=1, le=1024)
    network_alpha: float = param(1.0,
        'Scales the LoRA output by alpha / dim. 0 means alpha = dim (scale 1).',
        'Network', ge=0)
    conv_dim: int | None = param(None,
        'LoCon: also train the 3×3 convolutions with this rank (texture and style). Empty = off (lycoris.kohya: '
        'network_dim).',
        'Network', ge=1, le=1024)
    conv_alpha: float | None = param(None,
        'Scale for the convolution LoRA, as network_alpha is for the rest.',
        'Network', ge=0)
    network_args: list[str] = param([],
        'Extra "key=value" network options, as in sd-scripts; for lycoris.kohya: algo=locon|loha|lokr, dora_wd=True '
        '(DoRA), factor=N (LoKr).',
        'Network')
    network_train_unet_only: bool = param(False, 'Leave the text encoder alone; only the UNet learns.', 'Network')
    network_train_text_encoder_only: bool = param(False,
        'Leave the UNet alone; only the text encoder learns.',
        'Network')
    network_weights: str | None = param(None, path=True)
    dim_from_weights: bool = param(False,
        "Take the rank from a starting LoRA's weights (only when the run starts from one).",
        'Network')

    # Optimisation
    learning_rate: float = param(1e-4, 'Fallback learning rate for any part without its own.', 'Optimisation', ge=0)
    unet_lr: float | None = param(None, 'Learning rate of the UNet LoRA.', 'Optimisation', ge=0)
    text_encoder_lr: float | list[float] | None = param(None,
        'Learning rate of the text-encoder LoRA; 0 leaves the text encoder out.',
        'Optimisation')
    optimizer_type: OptimizerName = param("AdamW",
        'The optimizer; AdamW8bit and Lion8bit save memory on CUDA.',
        'Optimisation')
    optimizer_args: list[str] = param([],
        'Extra optimizer options as "key=value", e.g. weight_decay=0.01.',
        'Optimisation')
    use_8bit_adam: bool = param(False, 'Old name for optimizer AdamW8bit.', 'Optimisation')
    lr_scheduler: SchedulerName = param("constant",
        'How the learning rate changes over the run. constant with warmup is refused (sd-scripts errors on it).',
        'Optimisation')
    lr_warmup_steps: float = param(0,
        'Steps of linear warm-up; a value below 1 is a fraction of all optimizer steps.',
        'Optimisation', ge=0, le=MAX_STEPS)
    lr_scheduler_num_cycles: int = param(1, 'Hard restarts of cosine_with_restarts.', 'Optimisation', ge=1, le=1000)
    lr_scheduler_power: float = param(1.0, 'Exponent of the polynomial scheduler.', 'Optimisation')
    # lorabake: images scored after every epoch for a validation loss (a kohya folder); the service fills it with the
    # share of the dataset that validation_split holds out of training
    validation_data_dir: str | None = param(None, path=True)
    validation_split: float = param(0.0,
        'Share of the training images held out (chosen by the seed) and scored after every epoch at fixed noise: the '
        'validation loss beside the training loss. 0 = off.',
        'Data and captions', ge=0, le=0.5)
    # lorabake: a run continued with a fresh schedule starts its learning-rate schedule again at this step
    lr_restart_step: int | None = param(None, ours=True, ge=0, le=MAX_STEPS)
    max_train_steps: int = param(1600,
        'Optimizer steps to train when no epoch count is set.',
        'Optimisation', ge=1, le=MAX_STEPS)
    max_train_epochs: int | None = param(None,
        'Epochs to train; when set it decides the step count (max_train_steps is ignored).',
        'Optimisation', ge=1, le=10_000)
    gradient_accumulation_steps: int = param(1,
        'Steps summed before one optimizer step; step counts are after it.',
        'Optimisation', ge=1, le=1024)
    train_batch_size: int = param(1,
        'Images per step. Larger is faster per image and needs more memory.',
        'Optimisation', ge=1, le=256)
    gpus: int = param(1,
        'GPUs (one process each) that train the run together: each takes its own batch and the gradients are '
        'averaged, so a step sees train_batch_size × gradient_accumulation_steps × gpus images and an epoch has '
        'that many times fewer steps. The server caps it.',
        'Optimisation', ours=True, ge=1, le=16)
    max_grad_norm: float = param(1.0, 'Gradients are clipped to this norm; 0 turns clipping off.', 'Optimisation', ge=0)
    seed: int = param(42,
        'Makes training and preview images repeatable.',
        'Optimisation', ge=-(2**63) + 1, le=2**63 - 1)
    prior_loss_weight: float = param(1.0, 'Loss multiplier for regularization images.', 'Optimisation', ge=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = param("no",
        'Number format for the forward pass; bf16 on recent GPUs.',
        'Optimisation')
    gradient_checkpointing: bool = param(False,
        'Recompute activations in the backward pass: much less memory, ~20–30 % slower.',
        'Optimisation')
    sdpa: bool = param(True, "PyTorch's fused attention (fast, low memory).", 'Optimisation')

    # Data and captions
    train_data_dir: str = param("", path=True)
    reg_data_dir: str | None = param(None, path=True)
    caption_extension: str = param(".txt",
        'Caption file extension in sd-scripts layouts (lorabake writes .txt).',
        'Data and captions')
    shuffle_caption: bool = param(False,
        'Shuffle the comma-separated tags each time an image is used.',
        'Data and captions')
    keep_tokens: int = param(0,
        'The first N tags (not CLIP tokens) stay first and are never shuffled or dropped: put the trigger word there.',
        'Data and captions', ge=0, le=255)
    caption_dropout_rate: float = param(0.0,
        'Chance that an image is trained with an empty caption.',
        'Data and captions', ge=0, le=1)
    caption_dropout_every_n_epochs: int = param(0,
        'Every Nth epoch trains with all captions empty.',
        'Data and captions', ge=0, le=10_000)
    caption_tag_dropout_rate: float = param(0.0,
        'Chance that each tag (outside keep_tokens) is left out.',
        'Data and captions', ge=0, le=1)
    resolution: str = param("512",
        'Training size, "512" or "768,512"; also the largest bucket area.',
        'Data and captions')
    enable_bucket: bool = param(False,
        'Group images by aspect ratio instead of center-cropping them all to a square.',
        'Data and captions')
    min_bucket_reso: int = param(256, 'Smallest bucket side.', 'Data and captions', ge=8, le=8192)
    max_bucket_reso: int = param(1024, 'Largest bucket side.', 'Data and captions', ge=8, le=8192)
    bucket_reso_steps: int = param(64, 'Bucket sides are multiples of this.', 'Data and captions', ge=8, le=1024)
    bucket_no_upscale: bool = param(False,
        'One bucket per image and never upscaled; min/max bucket sizes are then ignored.',
        'Data and captions')
    cache_latents: bool = param(False,
        'Encode each image once with the VAE (faster); not with color_aug or random_crop.',
        'Data and captions')
    cache_latents_to_disk: bool = param(False, 'Keep the cached latents on disk between runs.', 'Data and captions')
    cache_text_encoder_outputs: bool = param(False,
        'Encode captions once; only when the text encoder is not trained and captions are not shuffled or dropped.',
        'Data and captions')
    cache_text_encoder_outputs_to_disk: bool = param(False,
        "Keep cached text-encoder outputs on disk (FLUX's T5 outputs are large).",
        'Data and captions', ours=True)
    masked_loss: bool = param(False,
        "Weight the loss by a mask per image (white is trained, black ignored): the subject, not its background.",
        'Data and captions')
    alpha_mask: bool = param(False, "With masked_loss: an image's alpha channel is its mask.", 'Data and captions')
    conditioning_data_dir: str | None = param(None, path=True)  # with masked_loss: masks named like the images
    color_aug: bool = param(False, 'Random hue and gamma changes.', 'Data and captions')
    flip_aug: bool = param(False, 'Random horizontal flips (not for asymmetric subjects).', 'Data and captions')
    random_crop: bool = param(False, 'Random instead of center crops inside each bucket.', 'Data and captions')
    num_workers: int = param(0, 'Data-loading processes.', 'Data and captions', ge=0, le=64)
    persistent_workers: bool = param(False, 'Keep data-loading processes between epochs.', 'Data and captions')

    # Saving and samples
    output_dir: str = param("output", path=True)
    output_name: str = param("last")
    save_every_n_epochs: int | None = param(None,
        'Save a LoRA file every N epochs (each one appears as an epoch card).',
        'Saving and previews', ge=1, le=10_000)
    save_last_n_epochs: int | None = param(None,
        'Keep only the newest N saved epochs.',
        'Saving and previews', ge=1, le=10_000)
    save_model_as: Literal["safetensors", "ckpt", "pt"] = param("safetensors",
        'File format; safetensors is what A1111, ComfyUI, Forge and diffusers load safely.',
        'Saving and previews')
    save_precision: Literal["float", "fp16", "bf16"] | None = param(None,
        'Number format of the saved file; empty keeps the training format.',
        'Saving and previews')
    save_state: bool = param(False)
    resume: str | None = param(None, path=True)
    # An exponential moving average of the LoRA's weights (lorabake's own; sd-scripts has none for networks)
    ema_decay: float | None = param(None,
        "Keep an exponential moving average of the LoRA's weights with this decay (0.999 is common; empty: off). "
        "The average is smoother than the last step's weights and often generalizes better.",
        EMA, ours=True, gt=0, lt=1)
    ema_warmup: bool = param(False,
        "Ramp the decay up over the first updates (1 − (1 + n)^−2/3, capped at ema_decay), so the average does not "
        "stay near the untrained weights.", EMA, ours=True)
    ema_every_n_steps: int = param(1, "Update the average every N optimizer steps.", EMA, ours=True, ge=1, le=10_000)
    ema_on_cpu: bool = param(False, "Keep the average in CPU memory: less GPU memory, a copy per update.", EMA,
                             ours=True)
    save_ema: Literal["ema", "raw", "both"] = param("ema",
        "With ema_decay: what each saved epoch holds, the averaged weights or the raw ones; both writes the raw ones "
        "beside them in a -raw file (the CLI; the service keeps one file per epoch). Previews show the same.",
        EMA, ours=True)
    training_comment: str | None = param(None, 'Text stored in the file as ss_training_comment.', 'Saving and previews')
    no_metadata: bool = param(False, 'Write only the minimal metadata keys.', 'Saving and previews')
    logging_dir: str | None = param(None, path=True)
    sample_every_n_epochs: int | None = param(None,
        'Render the preview prompts every N epochs.',
        'Saving and previews', ge=1, le=10_000)
    sample_at_first: bool = param(False, 'Also render previews before training starts.', 'Saving and previews')
    sample_sampler: SamplerName = param("euler_a",
        'Sampler for previews; euler_a looks right on every family.',
        'Saving and previews')
    sample_prompts: str | list[str] | None = param(None, ours=True)
    sample_images_per_prompt: int = param(4,
        'Preview images per prompt and epoch.',
        'Saving and previews', ours=True, ge=1, le=16)

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
    def _legacy_aliases(self) -> CommonConfig:
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
        value = self.conv_dim or int_arg(self.network_args, "conv_dim")
        return value or (self.network_dim if self.network_module == "lycoris.kohya" else None)

    @property
    def effective_conv_alpha(self) -> float:
        value = self.conv_alpha
        if value is None:
            arg = arg_value(self.network_args, "conv_alpha")
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


class TrainConfig(create_model("FamilyFields", __base__=CommonConfig, **family_fields())):  # type: ignore[misc]
    """CommonConfig plus every family's declared parameters (a family refuses the others' in pre-flight)."""


KNOWN_KEYS = frozenset(TrainConfig.model_fields)


def _extra(key: str) -> dict[str, Any]:
    return TrainConfig.model_fields[key].json_schema_extra or {}  # type: ignore[return-value]


# What a user may set (pro mode, imported configs): a field with a group that names no path. Everything else —
# paths, the base model's identity, lorabake's bookkeeping — only the service sets.
USER_KEYS = frozenset(k for k in KNOWN_KEYS if _extra(k).get("group") and not _extra(k).get("path"))
PATH_KEYS = frozenset(k for k in KNOWN_KEYS if _extra(k).get("path"))
IDENTITY_KEYS = frozenset(k for k in KNOWN_KEYS if _extra(k).get("identity"))  # set from the chosen base model
OURS_KEYS = frozenset(k for k in KNOWN_KEYS if _extra(k).get("ours"))  # lorabake's own: other tools do not know them

def unknown_keys(keys: list[str] | set[str]) -> list[FieldProblem]:
    problems = []
    for key in sorted(keys):
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        problems.append(FieldProblem(key, f'unknown parameter "{key}"{hint}'))
    return problems


def build_config(values: dict[str, Any]) -> TrainConfig:
    """Validate a flat dict of sd-scripts parameters; every problem is reported with its key."""
    unknown = unknown_keys(set(values))
    if unknown:
        raise ConfigError(unknown)
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc)) from None


def validation_problems(exc: ValidationError) -> list[FieldProblem]:
    return [FieldProblem(".".join(str(p) for p in err["loc"]) or "config", err["msg"]) for err in exc.errors()]
