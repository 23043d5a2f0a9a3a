"""Every training parameter a user may set, grouped, with one line on what it really does.

All of it — which keys, their group, help line, type, default, choices and bounds — is read off the trainer's own
TrainConfig fields (common ones and each family's declarations), so the form can never offer a value the trainer
would refuse, nor miss a parameter a family adds. Paths and the base model's identity are the service's: left out.
"""

from __future__ import annotations

from typing import Any

from trainer.families import FAMILIES, refused_keys
from trainer.job.config import USER_KEYS, TrainConfig


def _field_spec(key: str, schema: dict[str, Any], default: Any) -> dict[str, Any]:
    options = schema.get("anyOf", [schema])
    types = sorted({o["type"] for o in options if "type" in o and o["type"] != "null"})
    choices = [value for o in options for value in o.get("enum", [])]
    spec: dict[str, Any] = {"key": key, "types": types, "nullable": any(o.get("type") == "null" for o in options),
                            "default": default}
    if choices:
        spec["choices"] = choices
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        for option in options:
            if bound in option:
                spec[bound] = option[bound]
    return spec


def catalog() -> list[dict[str, Any]]:
    """Groups of parameters; each says which families it applies to (the form shows only those)."""
    properties = TrainConfig.model_json_schema()["properties"]
    defaults = TrainConfig().model_dump()
    refused = {name: refused_keys(name) for name in FAMILIES}
    groups: dict[str, list[dict[str, Any]]] = {}
    for key, info in TrainConfig.model_fields.items():
        if key not in USER_KEYS:
            continue
        group = info.json_schema_extra["group"]  # type: ignore[index]
        groups.setdefault(group, []).append({
            **_field_spec(key, properties[key], defaults[key]), "help": info.description,
            "families": [name for name in FAMILIES if key not in refused[name]]})
    return [{"group": group, "params": params} for group, params in groups.items()]


def families(offered: list[str] | None = None) -> list[dict[str, Any]]:
    """What the web needs to know of each family: its name, training size, crop sizes and whether it reads tags or
    sentences; with `offered` (the families of the server's base models, first model first), just those, in that
    order."""
    names = list(dict.fromkeys(offered)) if offered is not None else list(FAMILIES)
    return [{"name": info.name, "label": info.label, "resolution": info.resolution,
             "crop_sizes": list(info.crop_sizes), "captions": info.captions}
            for info in (FAMILIES[n] for n in names if n in FAMILIES)]
