"""Which auto-taggers this server has: WD14-style folders (model.onnx + selected_tags.csv) and hub ids.

Listing only: nothing here loads a model, so the API can answer without onnxruntime. The worker loads them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from core.settings import Settings


class Listed(Protocol):
    """A tagger or captioner as the server lists it."""

    name: str
    installed: bool


Entry = TypeVar("Entry", bound=Listed)
MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"


@dataclass(frozen=True)
class TaggerEntry:
    name: str  # what a request names: the folder name, or the hub id
    source: Literal["folder", "hub"]
    location: str
    installed: bool  # both files are on this server; a hub tagger that is not downloads on first use


def hub_file(repo_id: str, filename: str) -> Path | None:
    """A hub repository's file from the local Hugging Face cache (main revision), None when it is not there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def hub_files(repo_id: str) -> tuple[Path, Path] | None:
    """A hub tagger's model and tag list when both are in the cache."""
    model, tags = hub_file(repo_id, MODEL_FILE), hub_file(repo_id, TAGS_FILE)
    return (model, tags) if model is not None and tags is not None else None


def _complete(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / TAGS_FILE).is_file()


def list_taggers(settings: Settings) -> list[TaggerEntry]:
    entries: list[TaggerEntry] = []
    root = settings.taggers_dir
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if _complete(folder):
                entries.append(TaggerEntry(folder.name, "folder", str(folder.resolve()), True))
    for repo_id in settings.taggers_from_hub:
        entries.append(TaggerEntry(repo_id, "hub", repo_id, hub_files(repo_id) is not None))
    return entries


def named_or_first_installed(entries: list[Entry], name: str | None) -> Entry | None:
    """The entry of that name, or without a name the first installed one (taggers and captioners alike)."""
    if name is None:
        return next((e for e in entries if e.installed), None)
    return next((e for e in entries if e.name == name), None)


def find_tagger(settings: Settings, name: str | None) -> TaggerEntry | None:
    return named_or_first_installed(list_taggers(settings), name)


def no_tagger_message(settings: Settings) -> str:
    return (f"no auto-tagger is installed on this server: put a WD14-style tagger ({MODEL_FILE} and {TAGS_FILE}) "
            f"in a folder under {settings.taggers_dir}, or list a hub id in LORABAKE_TAGGERS_FROM_HUB")


# sd-scripts' default WD14 tagger (tag_images_by_wd14_tagger.py): what `make run` fetches when the network allows.
DEFAULT_HUB_TAGGER = "SmilingWolf/wd-v1-4-convnext-tagger-v2"


def _reachable(endpoint: str, timeout_s: float) -> None:
    """Raises OSError when the hub's host cannot be resolved or connected to within the timeout."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname or "", port), timeout=min(timeout_s, 5.0)):
        pass


def fetch_hub_tagger(repo_id: str = DEFAULT_HUB_TAGGER, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Makes sure the hub tagger's two files are in the local Hugging Face cache, downloading them when missing and
    the network allows. Returns whether it can be used, and a line saying so."""
    if hub_files(repo_id) is not None:
        return True, f"auto-tagger {repo_id}: ready (from the Hugging Face cache)"
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.utils import logging as hub_logging

        _reachable(constants.ENDPOINT, timeout_s)  # offline machines answer at once, not after the hub's retries
        hub_logging.set_verbosity_error()
        for name in (TAGS_FILE, MODEL_FILE):
            hf_hub_download(repo_id, name, etag_timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - offline, blocked, a hub error: all mean "not now"
        return False, (f"auto-tagger {repo_id} could not be fetched ({type(exc).__name__}): images are not tagged "
                       "automatically until a tagger is installed; the workbench tells users so")
    return True, f"auto-tagger {repo_id}: downloaded"
