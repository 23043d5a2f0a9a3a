"""Pre-flight checks: known-bad parameter combinations become clear errors or warnings before training.

Imports no torch, so the API runs the same checks before a job is queued.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainer.families import family_info, refused_keys, resolve_family
from trainer.job.config import Family, TrainConfig
from trainer.job.optimizers import OPTIMIZERS
from trainer.networks.spec import network_problems


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    field: str
    message: str
    plain: str = ""  # the same in the words of the basic form, which shows no parameter names

    def __str__(self) -> str:
        return f"{self.level}: {self.field}: {self.message}"


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def family_findings(cfg: TrainConfig, family: str) -> list[Finding]:
    """Keys that do not apply to the family (set to something other than their default), and its own rules."""
    found = []
    defaults = TrainConfig.model_fields
    for key, why in refused_keys(family).items():
        if key in cfg.model_fields_set and getattr(cfg, key) != defaults[key].default:
            found.append(Finding("error", key, f"does not apply to {family_info(family).label}: {why}"))
    found += [Finding(rule.level, rule.field, rule.message) for rule in family_info(family).rules if rule.when(cfg)]
    return found


def check(cfg: TrainConfig, family: Family | None = None) -> list[Finding]:
    family = family or resolve_family(cfg)
    found: list[Finding] = family_findings(cfg, family)

    def error(field: str, message: str) -> None:
        found.append(Finding("error", field, message))

    def warn(field: str, message: str, plain: str = "") -> None:
        found.append(Finding("warning", field, message, plain))

    if cfg.lr_scheduler == "constant" and cfg.lr_warmup_steps > 0:
        error("lr_warmup_steps", "the constant scheduler has no warmup: use constant_with_warmup, or set warmup to 0")
    if cfg.cache_latents and cfg.color_aug:
        error("color_aug", "cache_latents encodes each image once, so color_aug cannot change it: turn one off")
    if cfg.cache_latents and cfg.random_crop:
        error("random_crop", "cache_latents encodes each image once, so random_crop cannot vary: turn one off")
    if cfg.cache_text_encoder_outputs:
        if cfg.train_text_encoder:
            error("cache_text_encoder_outputs", "needs a frozen text encoder: set network_train_unet_only")
        for name in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                     "caption_dropout_every_n_epochs"):
            if getattr(cfg, name):
                error(name, "captions change between epochs, so text-encoder outputs cannot be cached")
    if cfg.bucket_no_upscale and cfg.enable_bucket:
        defaults = TrainConfig.model_fields
        for name in ("min_bucket_reso", "max_bucket_reso"):
            if getattr(cfg, name) != defaults[name].default:
                warn(name, "ignored with bucket_no_upscale: every image gets its own bucket, never upscaled")
    if cfg.network_train_unet_only and cfg.network_train_text_encoder_only:
        error("network_train_text_encoder_only", "cannot be combined with network_train_unet_only: nothing to train")
    optimizer = OPTIMIZERS[cfg.optimizer_type]
    if optimizer.package and not module_available(optimizer.module.split(".")[0]):
        error("optimizer_type", f"{optimizer.name} needs the package {optimizer.package}, which is not installed")
    if cfg.xformers and not module_available("xformers"):
        error("xformers", "the package xformers is not installed: use sdpa (PyTorch's own attention)")
    for field, message in network_problems(cfg):
        error(field, message)
    if cfg.dim_from_weights and not cfg.network_weights:
        error("dim_from_weights", "needs network_weights (the file to take the rank from)")
    if isinstance(cfg.text_encoder_lr, list) and len(cfg.text_encoder_lr) > family_info(family).text_encoders:
        error("text_encoder_lr", f"{len(cfg.text_encoder_lr)} values given, the model has fewer text encoders")
    if cfg.keep_tokens and not (cfg.shuffle_caption or cfg.caption_tag_dropout_rate):
        warn("keep_tokens", "has no effect without shuffle_caption or caption_tag_dropout_rate")
    if cfg.lr_scheduler == "adafactor" and cfg.optimizer_type != "Adafactor":
        error("lr_scheduler", "the adafactor scheduler only works with optimizer_type Adafactor")
    if cfg.sample_every_n_epochs and not cfg.sample_prompts:
        warn("sample_prompts", "sample_every_n_epochs is set but there are no sample prompts",
             "No preview prompt: no previews are rendered after each epoch. Write one to watch the LoRA learn.")
    usual = optimizer.usual_max_lr
    for name in ("learning_rate", "unet_lr", "text_encoder_lr"):
        value = getattr(cfg, name)
        rates = value if isinstance(value, list) else [value]
        if any(rate is not None and rate > 10 * usual for rate in rates):
            warn(name, f"{max(r for r in rates if r is not None):g} is far above what {cfg.optimizer_type} trains "
                 f"a LoRA with (up to about {usual:g}): the LoRA will likely burn (noise, blown colours)",
                 "The learning rate is far above what this optimizer is used with: the LoRA will likely be ruined.")
    if cfg.masked_loss and not (cfg.alpha_mask or cfg.conditioning_data_dir):
        error("masked_loss", "needs masks: set alpha_mask (each image's alpha channel) or conditioning_data_dir "
              "(mask images named like the training images)")
    if not cfg.masked_loss and (cfg.alpha_mask or cfg.conditioning_data_dir):
        warn("alpha_mask" if cfg.alpha_mask else "conditioning_data_dir", "has no effect without masked_loss")
    if cfg.conditioning_data_dir and not Path(cfg.conditioning_data_dir).is_dir():
        error("conditioning_data_dir", f"{cfg.conditioning_data_dir} is not a folder")
    if not cfg.ema_decay:
        defaults = TrainConfig.model_fields
        for name in ("ema_warmup", "ema_every_n_steps", "ema_on_cpu", "save_ema"):
            if getattr(cfg, name) != defaults[name].default:
                warn(name, "has no effect without ema_decay (the average is off)")
    if cfg.max_bucket_reso < cfg.min_bucket_reso:
        error("max_bucket_reso", "is smaller than min_bucket_reso")
    if cfg.train_data_dir and not Path(cfg.train_data_dir).is_dir():
        error("train_data_dir", f"{cfg.train_data_dir} is not a folder")
    if cfg.reg_data_dir and not Path(cfg.reg_data_dir).is_dir():
        error("reg_data_dir", f"{cfg.reg_data_dir} is not a folder")
    return found


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]
