"""Basic-mode presets: a theme × a base family fills every pro parameter. No torch."""

from __future__ import annotations

from typing import Any, Literal

from trainer.families import FAMILIES as FAMILY_REGISTRY
from trainer.families import family_info, refused_keys
from trainer.job.config import Family, TrainConfig, build_config

Theme = Literal["anime_character", "real_person", "2_5d", "style", "standard"]
THEMES: tuple[Theme, ...] = ("anime_character", "real_person", "2_5d", "style", "standard")
FAMILIES: tuple[Family, ...] = tuple(FAMILY_REGISTRY)

_THEMES: dict[Theme, dict[str, Any]] = {
    # Characters: the trigger word stays first, tags are shuffled so the others do not stick to it.
    "anime_character": {"network_dim": 16, "network_alpha": 8, "unet_lr": 1e-4, "text_encoder_lr": 5e-5,
                        "shuffle_caption": True, "keep_tokens": 1, "clip_skip": 2, "min_snr_gamma": 5.0},
    "real_person": {"network_dim": 32, "network_alpha": 16, "unet_lr": 1e-4, "text_encoder_lr": 5e-5,
                    "shuffle_caption": True, "keep_tokens": 1, "noise_offset": 0.05, "min_snr_gamma": 5.0},
    "2_5d": {"network_dim": 32, "network_alpha": 16, "unet_lr": 1e-4, "text_encoder_lr": 5e-5,
             "shuffle_caption": True, "keep_tokens": 1, "clip_skip": 2, "min_snr_gamma": 5.0},
    # Styles: LoCon reaches the texture-carrying convolutions; captions matter less than for characters.
    "style": {"network_dim": 32, "network_alpha": 16, "conv_dim": 8, "conv_alpha": 4, "unet_lr": 1e-4,
              "text_encoder_lr": 5e-5, "shuffle_caption": True, "caption_dropout_rate": 0.05,
              "noise_offset": 0.05, "min_snr_gamma": 5.0},
    "standard": {"network_dim": 16, "network_alpha": 8, "unet_lr": 1e-4, "text_encoder_lr": 5e-5,
                 "shuffle_caption": True, "keep_tokens": 1},
}

_COMMON: dict[str, Any] = {
    "optimizer_type": "AdamW", "lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 1,
    "lr_warmup_steps": 0.05, "learning_rate": 1e-4, "train_batch_size": 2, "max_train_epochs": 10,
    "save_every_n_epochs": 1, "sample_every_n_epochs": 1, "enable_bucket": True, "bucket_reso_steps": 64,
    "cache_latents": True, "flip_aug": False, "sdpa": True, "sample_sampler": "euler_a", "seed": 42,
    "caption_extension": ".txt", "max_token_length": 225,
}


def preset_values(theme: Theme, family: Family) -> dict[str, Any]:
    """Common values, then the theme's, then the family's defaults (FamilyInfo.defaults), then the family's own
    take on the theme (FamilyInfo.themes). Keys the family refuses are left out."""
    if theme not in _THEMES:
        raise KeyError(f"unknown preset theme {theme!r}")
    info = family_info(family)
    values = {**_COMMON, **_THEMES[theme], **info.defaults, **info.themes.get(theme, {}),
              "model_family": info.name}
    refused = refused_keys(family)
    return {k: v for k, v in values.items() if k not in refused or v == TrainConfig.model_fields[k].default}


def preset_config(theme: Theme, family: Family, **overrides: Any) -> TrainConfig:
    return build_config({**preset_values(theme, family), **overrides})
