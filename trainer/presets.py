"""Basic-mode presets: a theme × a base family fills every pro parameter. No torch."""

from __future__ import annotations

from typing import Any, Literal

from trainer.config import Family, TrainConfig, build_config

Theme = Literal["anime_character", "real_person", "2_5d", "style", "standard"]
THEMES: tuple[Theme, ...] = ("anime_character", "real_person", "2_5d", "style", "standard")
FAMILIES: tuple[Family, ...] = ("sd15", "sd2", "sdxl")

_FAMILY_DEFAULTS: dict[Family, dict[str, Any]] = {
    "sd15": {"resolution": "512", "min_bucket_reso": 256, "max_bucket_reso": 1024, "mixed_precision": "bf16"},
    "sd2": {"resolution": "768", "v2": True, "v_parameterization": True, "min_bucket_reso": 384,
            "max_bucket_reso": 1280, "mixed_precision": "bf16"},
    "sdxl": {"resolution": "1024", "sdxl": True, "min_bucket_reso": 512, "max_bucket_reso": 2048,
             "mixed_precision": "bf16", "network_train_unet_only": True, "cache_text_encoder_outputs": False,
             "gradient_checkpointing": True},
}

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
    if theme not in _THEMES:
        raise KeyError(f"unknown preset theme {theme!r}")
    if family not in _FAMILY_DEFAULTS:
        raise KeyError(f"unknown base family {family!r}")
    values = {**_COMMON, **_THEMES[theme], **_FAMILY_DEFAULTS[family]}
    if family == "sdxl":
        values.pop("clip_skip", None)  # SDXL always conditions on the penultimate layer
        values["text_encoder_lr"] = None
    return values


def preset_config(theme: Theme, family: Family, **overrides: Any) -> TrainConfig:
    return build_config({**preset_values(theme, family), **overrides})
