"""A dataset from storage to a kohya folder on local scratch: crops applied, captions from tags, repeats in names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.kohya_layout import REG_ROOT, caption_for, image_bytes, mask_bytes, mask_path, place
from core.masks import CONDITIONING_ROOT
from core.models import Dataset, Image
from core.storage import Storage


@dataclass(frozen=True)
class Materialised:
    train_dir: Path
    reg_dir: Path | None
    images: int
    validation_dir: Path | None = None  # the held-out images (validation_split), scored but never trained on
    masks_dir: Path | None = None  # masked loss: conditioning_data_dir, each mask mirroring its image's folder


def materialise(dataset: Dataset, images: list[Image], storage: Storage, root: Path, concept: str,
                held: set[str] | frozenset[str] = frozenset(), reads: str = "tags",
                with_masks: bool = False) -> Materialised:
    """`reads`: what the job's model reads, tags or sentences (each image's .txt is caption_for it);
    `with_masks`: masked loss, so the images' masks are written too."""
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
        if with_masks and (mask := mask_bytes(spot.image, storage)) is not None:
            target = root / mask_path(spot)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(mask)
    if with_masks:  # the trainer finds no mask for an image without one, and trains it whole
        (root / CONDITIONING_ROOT).mkdir(parents=True, exist_ok=True)
    has_reg = any(i.is_reg for i in images)
    return Materialised(train_dir, root / REG_ROOT if has_reg else None, len(images),
                        validation_dir if held else None, root / CONDITIONING_ROOT if with_masks else None)
