"""Reading configurations: sd-scripts TOML (flat or sectioned), LoRA_Easy_Training_Scripts JSON, `--set k=v`."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, TrainConfig, build_config

LORA_EASY_RENAMES: dict[str, str] = {
    "base_model": "pretrained_model_name_or_path",
    "img_folder": "train_data_dir",
    "reg_img_folder": "reg_data_dir",
    "output_folder": "output_dir",
    "change_output_name": "output_name",
    "net_dim": "network_dim",
    "alpha": "network_alpha",
    "scheduler": "lr_scheduler",
    "cosine_restarts": "lr_scheduler_num_cycles",
    "scheduler_power": "lr_scheduler_power",
    "warmup_lr_ratio": "lr_warmup_steps",
    "unet_only": "network_train_unet_only",
    "text_only": "network_train_text_encoder_only",
    "test_seed": "seed",
    "train_resolution": "resolution",
    "buckets": "enable_bucket",
    "min_bucket_resolution": "min_bucket_reso",
    "max_bucket_resolution": "max_bucket_reso",
    "shuffle_captions": "shuffle_caption",
    "max_clip_token_length": "max_token_length",
    "num_epochs": "max_train_epochs",
    "max_steps": "max_train_steps",
    "batch_size": "train_batch_size",
    "gradient_acc_steps": "gradient_accumulation_steps",
    "save_as": "save_model_as",
    "no_meta": "no_metadata",
    "log_dir": "logging_dir",
    "lora_model_for_resume": "network_weights",
    "load_previous_save_state": "resume",
}
LORA_EASY_SCRIPT_ONLY = frozenset({
    "save_json_folder", "load_json_path", "json_load_skip_list", "multi_run_folder", "save_json_only",
    "tag_occurrence_txt_file", "sort_tag_occurrence_alphabetically",
})


@dataclass
class LoadedConfig:
    config: TrainConfig
    ignored: list[str] = field(default_factory=list)  # keys read but deliberately not used, with the reason


def load_config_file(path: str | Path, overrides: list[str] | None = None) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: {exc.strerror}"]) from None
    if path.suffix.lower() == ".json":
        values, ignored = lora_easy_values(_parse_json(text, path))
    else:
        values, ignored = toml_values(_parse_toml(text, path)), []
    values.update(parse_overrides(overrides or []))
    return LoadedConfig(build_config(values), ignored)


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path}: not valid TOML ({exc})"]) from None


def _parse_json(text: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"config file {path}: not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: expected a JSON object"])
    return data


def toml_values(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts' `--config_file` accepts keys at top level or one level down in any section."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for inner_key, inner_value in value.items():
                _put_once(flat, inner_key, inner_value)
        else:
            _put_once(flat, key, value)
    return flat


def _put_once(flat: dict[str, Any], key: str, value: Any) -> None:
    if key in flat and flat[key] != value:
        raise ConfigError([f'parameter "{key}" is given twice with different values'])
    flat[key] = value


def lora_easy_values(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in data.items():
        if key in LORA_EASY_SCRIPT_ONLY:
            ignored.append(f"{key}: a LoRA_Easy_Training_Scripts script option, not a training parameter")
            continue
        if value is None:
            continue
        if key == "use_8bit_adam":
            if value:
                values["optimizer_type"] = "AdamW8bit"
            continue
        values[LORA_EASY_RENAMES.get(key, key)] = value
    return values, ignored


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` with the value read as a TOML value when it is one (numbers, booleans, lists), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f'--set "{item}": expected key=value'])
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out
