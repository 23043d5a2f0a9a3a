"""A dataset from storage to a kohya folder on local scratch: crops applied, captions from tags, repeats in names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.kohya_layout import REG_ROOT, caption_for, image_bytes, place
from core.models import Dataset, Image
from core.storage import Storage


@dataclass(frozen=True)
class Materialised:
    train_dir: Path
    reg_dir: Path | None
    images: int
    validation_dir: Path | None = None  # the held-out images (validation_split), scored but never trained on


def materialise(dataset: Dataset, images: list[Image], storage: Storage, root: Path, concept: str,
                held: set[str] | frozenset[str] = frozenset(), reads: str = "tags") -> Materialised:
    """`reads`: what the job's model reads, tags or sentences (each image's .txt is caption_for it)."""
    train_dir, validation_dir = root / "train", root / "validation"
    for spot in place(dataset, images, concept):
        # train/10_name/… for training images, reg/1_name/… for regularization images, validation/… held out
        parent = validation_dir if spot.image.id in held else root if spot.image.is_reg else train_dir
        folder = parent / spot.folder
        folder.mkdir(parents=True, exist_ok=True)
        if spot.image.crop:
            (folder / f"{spot.stem}.{spot.image.format}").write_bytes(image_bytes(spot.image, storage))
        else:
            storage.download_to(spot.image.storage_key, folder / f"{spot.stem}.{spot.image.format}")
        (folder / f"{spot.stem}.txt").write_text(caption_for(spot.image, reads), encoding="utf-8")
    has_reg = any(i.is_reg for i in images)
    return Materialised(train_dir, root / REG_ROOT if has_reg else None, len(images),
                        validation_dir if held else None)
