"""Reading configurations: sd-scripts TOML (flat or sectioned) and its dataset_config TOML, kohya_ss GUI JSON,
LoRA_Easy_Training_Scripts JSON, `--set k=v`. Each reader gives flat TrainConfig values plus what it left out."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.job.config import ConfigError, TrainConfig, build_config

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


# sd-scripts' names for the two data-loader options that TrainConfig names after torch's DataLoader
SD_SCRIPTS_RENAMES: dict[str, str] = {"max_data_loader_n_workers": "num_workers",
                                      "persistent_data_loader_workers": "persistent_workers"}

KOHYA_GUI_RENAMES: dict[str, str] = {
    "epoch": "max_train_epochs", "optimizer": "optimizer_type", "max_resolution": "resolution",
    "lora_network_weights": "network_weights", **SD_SCRIPTS_RENAMES,
}
KOHYA_GUI_ONLY = frozenset({  # GUI state with no training meaning
    "LoRA_type", "additional_parameters", "num_cpu_threads_per_process", "model_list", "use_wandb", "wandb_api_key",
    "sample_every_n_steps", "save_every_n_steps", "save_last_n_steps", "save_last_n_steps_state", "mem_eff_attn",
    "block_alphas", "block_dims", "block_lr_zero_threshold", "conv_alphas", "conv_dims", "down_lr_weight",
    "mid_lr_weight", "up_lr_weight", "stop_text_encoder_training", "vae_batch_size",
})
ZERO_MEANS_OFF = frozenset({
    "min_snr_gamma", "multires_noise_iterations", "clip_skip", "save_every_n_epochs", "sample_every_n_epochs",
    "max_train_epochs", "save_last_n_epochs", "noise_offset", "max_train_steps", "lr_scheduler_num_cycles",
})
LYCORIS_GUI_TYPES = {"LyCORIS/LoCon": "locon", "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr"}
LORA_TYPES_WITH_CONV = {"LoCon", "Kohya LoCon", *LYCORIS_GUI_TYPES}
# the GUI's LyCORIS options, passed on as network_args (pre-flight names those lorabake does not offer)
LYCORIS_GUI_FLAGS = ("dora_wd", "decompose_both", "use_tucker", "use_scalar", "train_norm", "rescaled", "bypass_mode")
SUBSET_LAYOUT_KEYS = frozenset({"image_dir", "num_repeats", "is_reg", "class_tokens", "metadata_file"})

# an sd-scripts config's pointers to other files: read by the CLI, never job parameters
FILE_KEYS = frozenset({"dataset_config", "config_file"})

# dataset_config TOML: blueprint keys (general / datasets / subsets) that are training parameters
DATASET_KEYS: dict[str, str] = {
    "batch_size": "train_batch_size", **{k: k for k in (
        "resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
        "bucket_no_upscale", "caption_extension", "shuffle_caption", "keep_tokens", "caption_dropout_rate",
        "caption_dropout_every_n_epochs", "caption_tag_dropout_rate", "color_aug", "flip_aug", "random_crop")},
}


@dataclass
class DatasetLayout:
    """What a dataset_config says about the data itself: repeats per subset folder, which are regularization."""

    subsets: list[dict[str, Any]] = field(default_factory=list)  # {"image_dir", "num_repeats", "is_reg", ...}


@dataclass
class ReadValues:
    values: dict[str, Any]
    ignored: list[str] = field(default_factory=list)  # "key: reason" for what was read but deliberately not used


@dataclass
class LoadedConfig:
    config: TrainConfig
    ignored: list[str] = field(default_factory=list)  # keys read but deliberately not used, with the reason


def load_config_file(path: str | Path, overrides: list[str] | None = None) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.about("config file", f"{path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        values, ignored = lora_easy_values(_parse_json(text, path))
    else:
        values, ignored = toml_values(_parse_toml(text, path)), []
    values.update(parse_overrides(overrides or []))
    ignored += _read_linked_files(values, path.parent)
    return LoadedConfig(build_config(values), ignored)


def _read_linked_files(values: dict[str, Any], base: Path) -> list[str]:
    """An sd-scripts config's dataset_config (its folders become train_data_dir / reg_data_dir) and a sample_prompts
    file, each relative to the config's folder as lorabake's export writes them."""
    values.pop("config_file", None)
    if isinstance(values.get("sample_prompts"), str) and (base / values["sample_prompts"]).is_file():
        values["sample_prompts"] = str(base / values["sample_prompts"])
    linked = values.pop("dataset_config", None)
    if linked is None:
        return []
    where = base / linked
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.about("dataset_config", f"{where}: {exc.strerror}") from None
    read, layout = dataset_config_values(_parse_toml(text, where))
    for key, value in read.values.items():
        values.setdefault(key, value)
    for key, is_reg in (("train_data_dir", False), ("reg_data_dir", True)):
        root = _subset_root([s for s in layout.subsets if bool(s.get("is_reg")) == is_reg], base)
        if root is not None:
            values.setdefault(key, root)
    return read.ignored


def _subset_root(subsets: list[dict[str, Any]], base: Path) -> str | None:
    """The one folder that holds these subsets as kohya `N_concept` folders (N = the subset's num_repeats)."""
    roots = set()
    for subset in subsets:
        folder = Path(str(subset.get("image_dir", "")))
        repeats = subset.get("num_repeats", 1)
        if not folder.name.startswith(f"{repeats}_"):
            raise ConfigError.about("dataset_config", f"subset {folder}: lorabake reads kohya folders named N_concept, "
                               f"and this folder's name does not start with its num_repeats ({repeats}_)")
        roots.add(folder.parent)
    if len(roots) > 1:
        raise ConfigError.about("dataset_config", f"the subsets lie in {len(roots)} different folders; lorabake reads "
                           "one folder of N_concept subfolders (and one for regularization images)")
    return str(base / roots.pop()) if roots else None


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError.about("config file", f"{path}: not valid TOML ({exc})") from None


def _parse_json(text: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError.about("config file", f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError.about("config file", f"{path}: expected a JSON object")
    return data


def toml_values(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts' `--config_file` accepts keys at top level or one level down in any section."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for inner_key, inner_value in value.items():
                _put_once(flat, SD_SCRIPTS_RENAMES.get(inner_key, inner_key), inner_value)
        else:
            _put_once(flat, SD_SCRIPTS_RENAMES.get(key, key), value)
    return flat


def _gui_number(value: Any) -> Any:
    """The GUI stores many numbers as text ("0.0001", "75") and unset ones as ""."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def kohya_gui_values(data: dict[str, Any]) -> ReadValues:
    """A kohya_ss GUI LoRA config (JSON saved by its LoRA tab) as TrainConfig values."""
    out = ReadValues({})
    lora_type = data.get("LoRA_type", "Standard")
    lycoris_args = _gui_lycoris_args(data) if lora_type in LYCORIS_GUI_TYPES else []
    if lycoris_args:
        out.values["network_module"] = "lycoris.kohya"
    for key, raw in data.items():
        value = _gui_number(raw)
        if value == "" or value is None or key in LYCORIS_GUI_FLAGS or key == "factor":
            continue
        if key == "LoRA_type" and value not in ("Standard", *LORA_TYPES_WITH_CONV):
            out.ignored.append(f"LoRA_type: {value} is not offered; lorabake trains LoRA, LoCon, LoHa, LoKr and "
                               f"DoRA")
        elif key in ("conv_dim", "conv_alpha") and lora_type not in LORA_TYPES_WITH_CONV:
            continue  # the GUI keeps these even when the LoRA type does not use them
        elif key == "lr_warmup":
            if value:
                out.values["lr_warmup_steps"] = float(value) / 100  # a percentage of the steps in the GUI
        elif key == "xformers":
            attention = {True: "xformers", False: "none"}.get(value, value)
            out.values["xformers"], out.values["sdpa"] = attention == "xformers", attention == "sdpa"
        elif key == "optimizer_args" or key == "network_args":
            out.values[key] = str(value).split() + (lycoris_args if key == "network_args" else [])
        elif key in KOHYA_GUI_ONLY:
            if key != "LoRA_type" and value not in (0, False):
                out.ignored.append(f"{key}: a kohya_ss GUI option with no training parameter here")
        elif key in ZERO_MEANS_OFF and value == 0:
            continue
        else:
            out.values[KOHYA_GUI_RENAMES.get(key, key)] = value
    if lycoris_args and "network_args" not in out.values:
        out.values["network_args"] = lycoris_args
    return out


def _gui_lycoris_args(data: dict[str, Any]) -> list[str]:
    """network_args for a GUI LyCORIS type, as the GUI writes them when it launches sd-scripts."""
    args = [f"algo={LYCORIS_GUI_TYPES[data['LoRA_type']]}"]
    args += [f"{key}=True" for key in LYCORIS_GUI_FLAGS if _gui_number(data.get(key)) is True]
    factor = _gui_number(data.get("factor", -1))
    if data["LoRA_type"] == "LyCORIS/LoKr" and factor not in (-1, "", None):
        args.append(f"factor={factor}")
    return args


def dataset_config_values(data: dict[str, Any]) -> tuple[ReadValues, DatasetLayout]:
    """sd-scripts' dataset_config TOML: [general], [[datasets]] and their [[datasets.subsets]].

    Training values come from general, then the first dataset, then its first subset (later wins); subsets keep
    their folders, repeats and reg flags for the layout. Values that differ between subsets cannot be per-subset
    here and are reported."""
    out, layout = ReadValues({}), DatasetLayout()
    levels = [data.get("general", {})]
    datasets = data.get("datasets", [])
    if len(datasets) > 1:
        out.ignored.append(f"datasets: {len(datasets)} datasets; only the first is used (one per job here)")
    if datasets:
        levels.append({k: v for k, v in datasets[0].items() if k != "subsets"})
        subsets = datasets[0].get("subsets", [])
        layout.subsets = [dict(s) for s in subsets]
        levels.extend(subsets[:1])
        for subset in subsets[1:]:
            for key, value in subset.items():
                first = subsets[0].get(key)
                if key in DATASET_KEYS and first is not None and value != first:
                    out.ignored.append(f"{key}: differs between subsets; the first subset's {first!r} is used")
    seen = {key for table in levels + layout.subsets for key in table}
    out.ignored.extend(f"{key}: not a dataset option this server uses" for key in sorted(seen)
                       if key not in DATASET_KEYS and key not in SUBSET_LAYOUT_KEYS)
    for level in levels:
        for key, value in level.items():
            if key == "resolution" and isinstance(value, list):
                value = ",".join(map(str, value))  # [768, 512] → "768,512"
            if key in DATASET_KEYS:
                out.values[DATASET_KEYS[key]] = value
    return out, layout


def _put_once(flat: dict[str, Any], key: str, value: Any) -> None:
    if key in flat and flat[key] != value:
        raise ConfigError.about(key, f'parameter "{key}" is given twice with different values')
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
            raise ConfigError.about("--set", f'"{item}": expected key=value')
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out
