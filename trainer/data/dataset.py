"""kohya dataset folders: `N_concept/` (N repeats, concept = class token) with images and caption files."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from trainer.data.captions import split_tags

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
FOLDER_PATTERN = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    caption: str
    repeats: int
    folder: str  # the folder name, as ss_tag_frequency and ss_dataset_dirs key it
    is_reg: bool
    width: int
    height: int


@dataclass
class DatasetScan:
    images: list[ImageRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[ImageRecord]:
        return [r for r in self.images if not r.is_reg]

    @property
    def reg(self) -> list[ImageRecord]:
        return [r for r in self.images if r.is_reg]

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """Per folder, regularization ones too, the lower-cased comma-separated tags counted once per image."""
        out: dict[str, Counter[str]] = {}
        for record in self.images:
            out.setdefault(record.folder, Counter()).update(tag.lower() for tag in split_tags(record.caption))
        return {folder: dict(counts) for folder, counts in out.items()}

    def dataset_dirs(self, reg: bool = False) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for record in self.images:
            if record.is_reg != reg:
                continue
            entry = out.setdefault(record.folder, {"n_repeats": record.repeats, "img_count": 0})
            entry["img_count"] += 1
        return out


def scan_dataset(train_dir: str | Path, reg_dir: str | Path | None, caption_extension: str = ".txt") -> DatasetScan:
    scan = DatasetScan()
    _scan_root(Path(train_dir), False, caption_extension, scan)
    if reg_dir:
        _scan_root(Path(reg_dir), True, caption_extension, scan)
    if not scan.train:
        scan.warnings.append(f"no training images found under {train_dir} (folders must be named N_concept)")
    return scan


def _scan_root(root: Path, is_reg: bool, caption_extension: str, scan: DatasetScan) -> None:
    if not root.is_dir():
        scan.warnings.append(f"{root} is not a folder")
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        match = FOLDER_PATTERN.match(folder.name)
        if not match:
            scan.warnings.append(f"{folder.name}: ignored, the folder name does not start with a repeat count (N_)")
            continue
        repeats, class_token = int(match.group(1)), match.group(2).strip()
        if repeats < 1:
            scan.warnings.append(f"{folder.name}: ignored, repeat count 0")
            continue
        missing = 0
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            caption_path = path.with_suffix(caption_extension)
            if caption_path.is_file():
                caption = caption_path.read_text(encoding="utf-8").strip()
            else:
                caption = class_token
                missing += 1
            with Image.open(path) as image:
                width, height = image.size
            scan.images.append(ImageRecord(path, caption, repeats, folder.name, is_reg, width, height))
        if missing and not is_reg:
            scan.warnings.append(
                f"{folder.name}: {missing} image(s) have no {caption_extension} caption; "
                f'the class token "{class_token}" is used instead'
            )
