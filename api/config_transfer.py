"""Training configurations in and out: sd-scripts, kohya_ss GUI and LoRA_Easy files → job parameters with a
report; a job → the sd-scripts config and dataset_config TOML files that reproduce it."""

from __future__ import annotations

import json
import tomllib
from pathlib import PurePosixPath
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, Field

from api.training import PLACEHOLDER_PATHS, SERVICE_KEYS
from core.kohya_layout import effective_repeats, mask_path, place
from core.models import Dataset, Image, Job
from core.settings import Settings
from trainer.families import family_info, refused_keys, resolve_family
from trainer.job.config import KNOWN_KEYS, OURS_KEYS, ConfigError, TrainConfig, build_config, unknown_keys
from trainer.job.config_io import (
    DATASET_KEYS,
    LORA_EASY_RENAMES,
    LORA_EASY_SCRIPT_ONLY,
    SD_SCRIPTS_RENAMES,
    ReadValues,
    dataset_config_values,
    kohya_gui_values,
    lora_easy_values,
    toml_values,
)

Format = Literal["sd-scripts", "kohya_ss", "lora_easy"]
DATASET_DIR = "dataset"  # where config.toml expects the unzipped dataset export


class ConfigFileError(ValueError):
    """The file cannot be read at all; the message names it and why."""


class NoExporter(ValueError):
    """The job's family has no outside tool that trains it; the message says why."""


class KeyNote(BaseModel):
    key: str
    message: str


class ImportedConfig(BaseModel):
    format: Format
    params: dict[str, Any]
    sample_prompts: list[str] = Field(default_factory=list)
    base_model_hint: str | None = None  # the file's pretrained_model_name_or_path, for the user to match
    family_hint: str | None = None  # the model family the file trains (its script's flags and keys)
    default_repeats: int | None = None
    subsets: list[dict[str, Any]] = Field(default_factory=list)
    ignored: list[KeyNote] = Field(default_factory=list)
    unknown: list[KeyNote] = Field(default_factory=list)
    problems: list[KeyNote] = Field(default_factory=list)


def _note(text: str) -> KeyNote:
    key, _, message = text.partition(": ")
    return KeyNote(key=key, message=message or text)


def _is_json(text: str) -> bool:
    return text.lstrip().startswith("{")


def _parse(text: str, filename: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if _is_json(text) else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"{filename}: not valid {'JSON' if _is_json(text) else 'TOML'} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{filename}: expected a table of parameters")
    return data


def detect_format(text: str, data: dict[str, Any]) -> Format:
    if not _is_json(text):
        return "sd-scripts"
    if "LoRA_type" in data or "max_resolution" in data:
        return "kohya_ss"
    if set(data) & (set(LORA_EASY_RENAMES) | LORA_EASY_SCRIPT_ONLY):
        return "lora_easy"
    return "kohya_ss"


def read_values(text: str, filename: str) -> tuple[Format, ReadValues]:
    data = _parse(text, filename)
    fmt = detect_format(text, data)
    if fmt == "sd-scripts":
        try:
            return fmt, ReadValues(toml_values(data))
        except ConfigError as exc:
            raise ConfigFileError(f"{filename}: {'; '.join(exc.messages)}") from None
    if fmt == "lora_easy":
        return fmt, ReadValues(*lora_easy_values(data))
    return fmt, kohya_gui_values(data)


def import_config(text: str, filename: str, dataset_text: str | None = None,
                  dataset_filename: str = "dataset_config.toml") -> ImportedConfig:
    fmt, read = read_values(text, filename)
    values, ignored = dict(read.values), list(read.ignored)
    out = ImportedConfig(format=fmt, params={})
    if dataset_text is not None:
        dataset_read, layout = dataset_config_values(_parse(dataset_text, dataset_filename))
        values.update(dataset_read.values)
        ignored.extend(dataset_read.ignored)
        out.subsets = [{k: s.get(k) for k in ("image_dir", "num_repeats", "is_reg")} for s in layout.subsets]
        train = [s for s in layout.subsets if not s.get("is_reg")]
        out.default_repeats = int(train[0].get("num_repeats", 1)) if train else None
    prompts = values.pop("sample_prompts", None)
    if isinstance(prompts, list):
        out.sample_prompts = [str(p) for p in prompts][:8]
    elif prompts:
        ignored.append("sample_prompts: a prompt file path; paste its prompts into the job instead")
    out.base_model_hint = values.get("pretrained_model_name_or_path") or None
    out.family_hint = _family_of(values)
    for key in sorted(values):
        if key in SERVICE_KEYS:
            ignored.append(f"{key}: set by the service (paths, resuming and the base model's family)")
        elif key in KNOWN_KEYS:
            out.params[key] = values[key]
    out.unknown = [KeyNote(key=p.field, message=p.message) for p in unknown_keys(set(values) - SERVICE_KEYS)]
    out.ignored = [_note(i) for i in ignored]
    try:
        checked = build_config({**out.params, **PLACEHOLDER_PATHS}).model_dump()
        out.params = {key: checked[key] for key in out.params}  # as validated: "512" for 512, 0.1 for "0.1"
    except ConfigError as exc:
        out.problems = [KeyNote(key=p.field, message=p.message) for p in exc.problems]
    return out


def export_config(job: Job, dataset: Dataset, images: list[Image], settings: Settings) -> dict[str, str]:
    """config.toml, dataset_config.toml and (when the job has them) sample_prompts.txt for the tool the family's
    exporter names; NoExporter when it names none."""
    model = settings.model_named(job.base_model)
    config = TrainConfig(**{**job.params, **PLACEHOLDER_PATHS})
    family = family_info(resolve_family(config))
    exporter = family.exporter
    if not exporter.available:
        raise NoExporter(f"{family.label} jobs cannot be exported: {exporter.reason}")
    refused = refused_keys(family.name)
    values = {k: v for k, v in config.model_dump().items() if v is not None and k not in OURS_KEYS
              and k not in DATASET_KEYS.values() and k not in SERVICE_KEYS and k not in refused}
    for theirs, ours in SD_SCRIPTS_RENAMES.items():
        values[theirs] = values.pop(ours)
    for key in ("conv_dim", "conv_alpha"):  # sd-scripts has no such options: networks read them from network_args
        if key in values:
            values["network_args"] = [*values.get("network_args", []), f"{key}={values.pop(key)}"]
    if "v_parameterization" not in refused:
        values["v_parameterization"] = config.v_parameterization
    values.update(pretrained_model_name_or_path=model.location if model else job.base_model, output_dir="output",
                  output_name=job.name, save_model_as="safetensors", dataset_config="dataset_config.toml",
                  **exporter.flags)
    files: dict[str, str] = {}
    if job.sample_prompts:
        files["sample_prompts.txt"] = "\n".join(job.sample_prompts) + "\n"
        values["sample_prompts"] = "sample_prompts.txt"
    header = (f"# lorabake job {job.id} ({job.name}, {family.label}) for {exporter.tool}.\n"
              f"# Unzip the dataset export into ./{DATASET_DIR}, then run:\n"
              f"#   accelerate launch {exporter.script} --config_file config.toml\n")
    files["config.toml"] = header + tomli_w.dumps(dict(sorted(values.items())))
    files["dataset_config.toml"] = dataset_config_toml(config, dataset, images)
    return files


def _family_of(values: dict[str, Any]) -> str | None:
    try:
        return resolve_family(TrainConfig(**{k: v for k, v in values.items() if k in KNOWN_KEYS}))
    except (ValueError, KeyError):
        return None


def dataset_config_toml(config: TrainConfig, dataset: Dataset, images: list[Image]) -> str:
    dumped = config.model_dump()
    general = {ours: dumped[ours] for ours in DATASET_KEYS.values() if dumped.get(ours) is not None
               and ours not in ("resolution", "train_batch_size")}
    width, _, height = config.resolution.partition(",")
    entry: dict[str, Any] = {"resolution": [int(width), int(height or width)], "batch_size": config.train_batch_size}
    folders: dict[str, dict[str, Any]] = {}
    for spot in place(dataset, images, dataset.name):
        subset = {"image_dir": f"{DATASET_DIR}/{spot.folder}", "num_repeats": effective_repeats(spot.image, dataset)}
        if spot.image.is_reg:
            subset["is_reg"] = True
        folders.setdefault(spot.folder, subset)
        if config.masked_loss and spot.image.mask_key:  # the export's masks, named like their images
            folders[spot.folder]["conditioning_data_dir"] = f"{DATASET_DIR}/{PurePosixPath(mask_path(spot)).parent}"
    entry["subsets"] = list(folders.values())
    return tomli_w.dumps({"general": general, "datasets": [entry]})
