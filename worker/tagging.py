"""Auto-tagging with WD14-style ONNX taggers (onnxruntime), behind an interface a captioner can also fill."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from core.taggers import MODEL_FILE, TAGS_FILE, TaggerEntry, hub_files

RATING, GENERAL, CHARACTER = 9, 0, 4  # the `category` column of selected_tags.csv
DEFAULT_SIDE = 448


class TaggerError(RuntimeError):
    """A tagger that cannot be loaded or run; the message names the file and the problem."""


@dataclass(frozen=True)
class TagOptions:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_ratings: bool = False
    underscores_to_spaces: bool = True
    blacklist: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Labels:
    """What a labeler says of one image: tags (most confident first) and, for captioners, a sentence."""

    tags: list[str]
    caption: str = ""


class Labeler(Protocol):
    """A tagger or a captioner (worker/captioning.py): images in, labels out, in order; `hints` are each image's
    current tags, for captioners that read them."""

    def label(self, images: list[Image.Image], hints: list[list[str]] | None = None) -> list[Labels]: ...


@dataclass(frozen=True)
class TagVocabulary:
    names: list[str]
    categories: list[int]

    @classmethod
    def read(cls, path: Path) -> TagVocabulary:
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as exc:
            raise TaggerError(f"{path}: {exc.strerror}") from None
        if not rows or not {"name", "category"} <= set(rows[0]):
            raise TaggerError(f"{path}: expected a CSV with name and category columns (selected_tags.csv)")
        return cls([r["name"] for r in rows], [int(r["category"]) for r in rows])


def readable_tag(tag: str) -> str:
    """`long_hair` → `long hair`; kaomoji such as `^_^` or `o_o` keep their underscore."""
    return tag.replace("_", " ") if re.search(r"[A-Za-z]{2}", tag) else tag


class WD14Tagger:
    """model.onnx takes N × side × side × 3 float32 BGR pixels in 0–255 and returns N × tags probabilities."""

    def __init__(self, model_path: Path, tags_path: Path, options: TagOptions) -> None:
        import onnxruntime

        self.vocabulary = TagVocabulary.read(tags_path)
        try:
            self.session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise TaggerError(f"{model_path}: not a usable ONNX model ({exc})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        self.side = shape[1] if isinstance(shape[1], int) else DEFAULT_SIDE
        self.batch = shape[0] if isinstance(shape[0], int) else 8
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.vocabulary.names):
            raise TaggerError(f"{model_path}: the model scores {outputs[-1]} tags but {tags_path.name} lists "
                              f"{len(self.vocabulary.names)}")
        self.options = options

    def pixels(self, image: Image.Image) -> np.ndarray:
        """Alpha over white, padded to a white square, resized, RGB → BGR, as the WD14 models were trained."""
        rgba = image.convert("RGBA")
        side = max(rgba.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2), rgba)
        canvas = canvas.resize((self.side, self.side), Image.Resampling.BICUBIC)
        return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]

    def scores(self, images: list[Image.Image]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch):
            batch = np.stack([self.pixels(i) for i in images[start:start + self.batch]])
            out.append(self.session.run(None, {self.input_name: batch})[0])
        return np.concatenate(out)

    def tags_from(self, probabilities: np.ndarray) -> list[str]:
        opts, vocab = self.options, self.vocabulary
        picked: list[tuple[float, int, str]] = []  # (score, category order, tag)
        best_rating: tuple[float, str] | None = None
        for name, category, score in zip(vocab.names, vocab.categories, probabilities, strict=True):
            score = float(score)
            if category == RATING:
                if best_rating is None or score > best_rating[0]:
                    best_rating = (score, name)
            elif category == CHARACTER and score >= opts.character_threshold:
                picked.append((score, 0, name))
            elif category not in (RATING, CHARACTER) and score >= opts.general_threshold:
                picked.append((score, 1, name))
        picked.sort(key=lambda item: (item[1], -item[0]))  # characters first, then the most confident
        names = [name for _, _, name in picked]
        if opts.include_ratings and best_rating is not None:
            names.append(best_rating[1])
        if opts.underscores_to_spaces:
            names = [readable_tag(n) for n in names]
        blocked = opts.blacklist | {readable_tag(b) for b in opts.blacklist}
        return [n for n in names if n not in blocked]

    def label(self, images: list[Image.Image], hints: list[list[str]] | None = None) -> list[Labels]:
        return [Labels(self.tags_from(row)) for row in self.scores(images)]


def tagger_files(entry: TaggerEntry) -> tuple[Path, Path]:
    """model.onnx and selected_tags.csv of a folder tagger, or of a hub tagger: from the Hugging Face cache first,
    downloaded only when missing there and the hub is not switched off (HF_HUB_OFFLINE)."""
    if entry.source == "folder":
        return Path(entry.location) / MODEL_FILE, Path(entry.location) / TAGS_FILE
    from huggingface_hub import constants, hf_hub_download

    if (cached := hub_files(entry.location)) is not None:
        return cached
    problem = "not in the cache, and the hub is switched off (HF_HUB_OFFLINE)"
    if not constants.HF_HUB_OFFLINE:
        try:
            return Path(hf_hub_download(entry.location, MODEL_FILE)), Path(hf_hub_download(entry.location, TAGS_FILE))
        except Exception as exc:  # offline, unknown repo, missing file: all end the same way for the user
            problem = str(exc)
    raise TaggerError(f"{entry.location}: the tagger could not be loaded from the hub or its cache ({problem})")


def load_tagger(entry: TaggerEntry, options: TagOptions) -> Labeler:
    model_path, tags_path = tagger_files(entry)
    return WD14Tagger(model_path, tags_path, options)
