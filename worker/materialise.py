"""A dataset from storage to a kohya folder on local scratch: crops applied, captions from tags, repeats in names."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from core.models import Dataset, Image
from core.storage import Storage


@dataclass(frozen=True)
class Materialised:
    train_dir: Path
    reg_dir: Path | None
    images: int


def caption_for(image: Image) -> str:
    """Tags in order (trigger word first when it was added at the start), then any free-text caption."""
    parts = list(image.tags)
    if image.caption.strip():
        parts.append(image.caption.strip())
    return ", ".join(parts)


def concept_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _-]+", "", text).strip() or "concept"


def materialise(dataset: Dataset, images: list[Image], storage: Storage, root: Path,
                concept: str) -> Materialised:
    train_dir, reg_dir = root / "train", root / "reg"
    name = concept_name(concept)
    for image in images:
        repeats = image.repeats or (1 if image.is_reg else dataset.default_repeats)
        folder = (reg_dir if image.is_reg else train_dir) / f"{repeats}_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{image.id}.{image.format}"
        if image.crop:
            box = image.crop
            with PILImage.open(io.BytesIO(storage.get_bytes(image.storage_key))) as pil:
                cropped = pil.crop((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]))
                cropped.save(target)
        else:
            storage.download_to(image.storage_key, target)
        (folder / f"{image.id}.txt").write_text(caption_for(image), encoding="utf-8")
    has_reg = any(i.is_reg for i in images)
    return Materialised(train_dir, reg_dir if has_reg else None, len(images))
