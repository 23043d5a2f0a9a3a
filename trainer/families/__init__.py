"""The registry of model families: what each one is, in data that needs no torch.

Each family package (trainer/families/<name>/__init__.py) declares its FamilyInfo entries: parameters, presets,
rules, schedule, exporter. TrainConfig, the pro-mode catalog, the service's allow-list and pre-flight's refusals are
derived from them. The trainer asks `runtime(name)` for the torch side, imported on first use. Adding a family is
one package and one line in PACKAGES; see docs/adding-a-family.md.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.families.declare import FamilyInfo, Param

if TYPE_CHECKING:
    from trainer.families.base import ModelFamily
    from trainer.job.config import TrainConfig

# The registry: one entry per family package, in the order flags and folders are matched (SDXL before SD 2 before
# SD 1.5; FLUX.1's network_module last, as it is the loosest sign).
PACKAGES = ("sd", "flux", "zimage", "flux2", "qwen_image")
FAMILIES: dict[str, FamilyInfo] = {
    info.name: info for package in PACKAGES
    for info in importlib.import_module(f"trainer.families.{package}").FAMILIES
}
DEFAULT_FAMILY = "sd15"  # what a model with no other sign of its family is taken for (sd-scripts does the same)
COMMON_NETWORK_MODULES = ("networks.lora", "lycoris.kohya")
NETWORK_MODULES = tuple(dict.fromkeys([*COMMON_NETWORK_MODULES, *(i.network_module for i in FAMILIES.values())]))


def family_fields() -> dict[str, tuple[Any, Any]]:
    """Every family's declared parameters as pydantic fields; two families declaring one key must agree on it."""
    declared: dict[str, Param] = {}
    for info in FAMILIES.values():
        for item in info.params:
            if declared.setdefault(item.name, item) != item:
                raise TypeError(f"{item.name} is declared differently by two families ({info.name})")
    return {name: item.field() for name, item in declared.items()}


class UnknownFamily(KeyError):
    pass


def family_info(name: str) -> FamilyInfo:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def folder_family(location: str) -> str | None:
    """The family of a local diffusers folder, from model_index.json (and its text encoder's config)."""
    folder = Path(location)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for info in FAMILIES.values():
        if index.get("_class_name") in info.pipeline_classes and info.matches_folder(folder, index):
            return info.name
    return None


def location_family(location: str) -> str:
    """The family of the model at a location: its folder's, else the default."""
    return folder_family(location) or DEFAULT_FAMILY


def resolve_family(cfg: TrainConfig) -> str:
    """model_family if given, else sd-scripts' flags (sdxl, v2, model_type, network_module), else the files."""
    if cfg.model_family:
        return family_info(cfg.model_family).name
    for info in FAMILIES.values():
        if info.declared_by(cfg):
            return info.name
    return location_family(cfg.pretrained_model_name_or_path)


@cache
def refused_keys(name: str) -> dict[str, str]:
    """Keys that do not apply to this family: its own refusals and the keys other families declare and it does not
    (with the declaration's reason, else which families they apply to)."""
    info = family_info(name)
    out = dict(info.refuses)
    owners: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for other in FAMILIES.values():
        for item in other.params:
            if item.name not in info.own_keys:
                owners.setdefault(item.name, []).append(other.label)
                reasons.setdefault(item.name, item.elsewhere)
    for key, labels in owners.items():
        out.setdefault(key, reasons[key] or f"applies to {' and '.join(sorted(labels))} models only")
    return out


def applicable_keys(name: str, keys: set[str]) -> set[str]:
    refused = refused_keys(name)
    return {key for key in keys if key not in refused}


def _resolve(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@cache
def runtime(name: str) -> ModelFamily:
    """The torch side of a family (imported on first use)."""
    info = family_info(name)
    return _resolve(info.runtime)(info)
