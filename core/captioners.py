"""Which vision-language captioners this server has: transformers model folders under var/captioners and hub ids.

Listing only (no torch): the API answers from here; the worker loads them (worker/captioning.py). A folder's
architecture is its config.json `model_type`; the worker has one class per architecture it can run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.settings import Settings
from core.taggers import hub_file, named_or_first_installed

CONFIG = "config.json"


@dataclass(frozen=True)
class CaptionerEntry:
    name: str  # the folder name, or the hub id
    source: Literal["folder", "hub"]
    location: str
    installed: bool  # on this server; a hub captioner that is not downloads on first use (where the network allows)
    architecture: str | None  # config.json's model_type (florence2, qwen2_5_vl …); None until a hub one is fetched


def architecture(config: Path | None) -> str | None:
    try:
        return json.loads(config.read_text()).get("model_type") if config else None
    except (OSError, json.JSONDecodeError):
        return None


def list_captioners(settings: Settings) -> list[CaptionerEntry]:
    entries: list[CaptionerEntry] = []
    root = settings.captioners_folder
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if (p / CONFIG).is_file()):
            entries.append(CaptionerEntry(folder.name, "folder", str(folder.resolve()), True,
                                          architecture(folder / CONFIG)))
    for repo_id in settings.captioners_from_hub:
        config = hub_file(repo_id, CONFIG)
        entries.append(CaptionerEntry(repo_id, "hub", repo_id, config is not None, architecture(config)))
    return entries


def find_captioner(settings: Settings, name: str | None) -> CaptionerEntry | None:
    return named_or_first_installed(list_captioners(settings), name)


def no_captioner_message(settings: Settings) -> str:
    return (f"no captioner is installed on this server: put a Florence-2 or Qwen2.5-VL model folder (transformers "
            f"layout) under {settings.captioners_folder}, or list hub ids in LORABAKE_CAPTIONERS_FROM_HUB")
