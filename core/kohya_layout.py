"""The kohya folder layout a dataset becomes: `N_concept/` folders of images and `.txt` captions, reg under `reg/`.

Used by the worker (a training folder on scratch) and by the dataset export (a zip for sd-scripts users)."""

from __future__ import annotations

import io
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image as PILImage

from core import masks
from core.models import Dataset, Image
from core.storage import Storage

REG_ROOT = "reg"
CONCEPT_FOLDER = re.compile(r"^(\d+)_(.+)$")  # "10_alice": 10 repeats of the concept "alice"
MAX_REPEATS = 1000  # per image or dataset: more is a typo (or an attack on the step count)


@dataclass(frozen=True)
class Placement:
    image: Image
    folder: str  # "10_alice" or "reg/1_woman"
    stem: str  # file name without extension, unique within the folder


def concept_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _-]+", "", text).strip() or "concept"


def caption_for(image: Image, reads: str = "tags") -> str:
    """The text an image trains on. A model that reads sentences (FamilyInfo.captions) gets the image's sentence
    when it has one; one that reads tags gets its tags in order (trigger word first when it was added at the
    start), then any sentence."""
    sentence = image.caption.strip()
    if reads == "sentences" and sentence:
        return sentence
    return ", ".join([*image.tags, *([sentence] if sentence else [])])


def caption_files(image: Image) -> dict[str, str]:
    """The text files an export writes beside an image, by extension: `.txt` holds its sentence when it has one
    (what ai-toolkit and musubi-tuner read), else its tags (sd-scripts' WD14 layout); `.tags` holds the tags of an
    image that has both (sd-scripts reads them with caption_extension = ".tags")."""
    sentence, tags = image.caption.strip(), ", ".join(image.tags)
    if sentence:
        return {".txt": sentence, **({".tags": tags} if tags else {})}
    return {".txt": tags}


def reads_as_sentences(parts: list[str]) -> bool:
    """Comma-separated parts that are mostly phrases of four words or more (prose), not short tags."""
    parts = [p for p in parts if p.strip()]
    return bool(parts) and sum(len(p.split()) for p in parts) / len(parts) >= 4


def effective_repeats(image: Image, dataset: Dataset) -> int:
    return image.repeats or (1 if image.is_reg else dataset.default_repeats)


def place(dataset: Dataset, images: Iterable[Image], concept: str,
          stem_of: Callable[[Image], str] | None = None) -> list[Placement]:
    """Where each image goes. `stem_of(image)` names the files (default: the image id); clashes get `-2`, `-3`…"""
    name = concept_name(concept)
    taken: set[tuple[str, str]] = set()
    out: list[Placement] = []
    for image in images:
        folder = f"{effective_repeats(image, dataset)}_{name}"
        if image.is_reg:
            folder = f"{REG_ROOT}/{folder}"
        base = stem_of(image) if stem_of else image.id
        stem, n = base, 1
        while (folder, stem.lower()) in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add((folder, stem.lower()))
        out.append(Placement(image, folder, stem))
    return out


def readable_stem(image: Image) -> str:
    stem = PurePosixPath(image.filename).stem
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or image.id


def image_bytes(image: Image, storage: Storage) -> bytes:
    """The stored file, or, when a crop box is set, the cropped picture in the same format."""
    data = storage.get_bytes(image.storage_key)
    if not image.crop:
        return data
    box = image.crop
    with PILImage.open(io.BytesIO(data)) as pil:
        cropped = pil.crop((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]))
        out = io.BytesIO()
        if image.format == "png":
            cropped.save(out, "PNG")
        else:
            cropped.save(out, "JPEG", quality=95, subsampling=0)
    return out.getvalue()


def mask_bytes(image: Image, storage: Storage) -> bytes | None:
    """The image's mask cut as its picture is (a PNG beside it in `conditioning/`), or None without one."""
    return masks.cropped_png(storage.get_bytes(image.mask_key), image.crop) if image.mask_key else None


def mask_path(spot: Placement) -> str:
    """Where an image's mask goes: sd-scripts' conditioning_data_dir layout, mirroring the image folders."""
    return f"{masks.CONDITIONING_ROOT}/{spot.folder}/{spot.stem}.png"


def tag_counts(tag_lists: Iterable[list[str]]) -> list[tuple[str, int]]:
    """Each tag with the number of images carrying it, most frequent first (ties by name)."""
    counter: Counter[str] = Counter()
    for tags in tag_lists:
        counter.update(tags)
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def tag_occurrence(tag_lists: Iterable[list[str]]) -> str:
    """The tag summary file: `count tag` lines, most frequent first."""
    return "".join(f"{count} {tag}\n" for tag, count in tag_counts(tag_lists))


def held_out(images: Iterable[Image], share: float, seed: int) -> set[str]:
    """The training images a job keeps apart for its validation loss: `share` of them (at least one, never all),
    chosen by the job's seed, so the API's step count and the worker's folders agree."""
    train = sorted(i.id for i in images if not i.is_reg)
    if share <= 0 or len(train) < 2:
        return set()
    count = min(len(train) - 1, max(1, round(share * len(train))))
    return set(random.Random(seed).sample(train, count))


def trigger_words(images: list[Image]) -> list[str]:
    """The words a user put in front of every caption (the run keeps them first with keep_tokens): the tags that
    open every training image's caption in the same order. Without such a prefix, the tag found on every image
    nearest the front. Generic tags a tagger adds everywhere ("photograph", "solo") are not at the front."""
    captions = [list(i.tags) for i in images if not i.is_reg and i.tags]
    if not captions:
        return []
    prefix: list[str] = []
    for column in zip(*captions, strict=False):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    if prefix:
        return prefix[:3]
    common = set(captions[0]).intersection(*captions[1:])
    if not common:
        return []
    return [min(common, key=lambda tag: (sum(c.index(tag) for c in captions), tag))]
