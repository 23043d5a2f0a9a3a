"""A kohya-layout zip (`N_concept/` folders with captions, an optional `reg/` tree) → a dataset.

Safe by construction: the archive is read entry by entry into memory and never extracted; its paths only decide
repeats and pairing, never where anything is written; every image goes through the upload validator."""

from __future__ import annotations

import stat
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import BinaryIO, Literal

from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.ingest import store_image
from api.schemas import clean_tags
from api.uploads import RejectedUpload, clean_mask
from core import masks
from core.kohya_layout import CONCEPT_FOLDER, MAX_REPEATS, REG_ROOT, reads_as_sentences
from core.masks import CONDITIONING_ROOT
from core.models import Dataset, Image
from core.settings import Settings
from core.storage import Storage

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
# .txt: tags or a sentence, whichever it reads as; .caption: a sentence (sd-scripts' captioning); .tags: tags
# (what lorabake's export writes beside a sentence)
CAPTION_EXTENSIONS = (".txt", ".caption", ".tags")
TAG_SUMMARY = "tag_occurrence.txt"  # written by our export beside the concept folders
SMALL_ENTRY = 64 * 1024  # below this a high compression ratio is harmless (short captions compress well)


class HostileArchive(ValueError):
    """The archive is refused as a whole; each problem names its entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class EntryReport(BaseModel):
    entry: str
    status: Literal["imported", "skipped", "rejected"]
    reason: str = ""
    image_id: str | None = None


@dataclass
class KohyaImage:
    info: zipfile.ZipInfo
    repeats: int
    concept: str
    is_reg: bool
    texts: dict[str, zipfile.ZipInfo] = field(default_factory=dict)  # caption files by extension
    mask: zipfile.ZipInfo | None = None  # its mask in the conditioning folder (sd-scripts' conditioning_data_dir)


@dataclass
class KohyaArchive:
    images: list[KohyaImage] = field(default_factory=list)
    report: list[EntryReport] = field(default_factory=list)

    def train_repeats(self) -> int | None:
        counts = Counter(i.repeats for i in self.images if not i.is_reg)
        return counts.most_common(1)[0][0] if counts else None


def _path_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "path leaves the archive (..)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if "\x00" in name:
        return "NUL character in the name"
    for part in name.replace("\\", "/").split("/")[:-1]:
        if (match := CONCEPT_FOLDER.match(part)) and int(match.group(1)) > MAX_REPEATS:
            return f"folder {part[:40]} asks for {match.group(1)[:20]} repeats; at most {MAX_REPEATS}"
    if info.flag_bits & 0x1:
        return "encrypted entry"
    return None


def check_archive(archive: zipfile.ZipFile, settings: Settings) -> list[zipfile.ZipInfo]:
    """The entries, or HostileArchive naming every entry that makes the archive unsafe."""
    infos = archive.infolist()
    if len(infos) > settings.import_max_entries:
        raise HostileArchive([f"archive has {len(infos):,} entries; at most {settings.import_max_entries:,}"])
    problems: list[str] = []
    for info in infos:
        if reason := _path_problem(info):
            problems.append(f"{info.filename}: {reason}")
        elif info.file_size > SMALL_ENTRY and info.file_size > settings.import_max_ratio * max(1, info.compress_size):
            problems.append(f"{info.filename}: expands {info.file_size / max(1, info.compress_size):,.0f}× "
                            f"(more than {settings.import_max_ratio:.0f}×: a zip bomb)")
    total = sum(i.file_size for i in infos)
    if total > settings.import_max_bytes:
        problems.append(f"archive expands to {total / 1024**3:.1f} GiB; at most "
                        f"{settings.import_max_bytes / 1024**3:.1f} GiB")
    if problems:
        raise HostileArchive(problems)
    return infos


def _concept_of(parts: tuple[str, ...]) -> tuple[int, str, bool] | None:
    """(repeats, concept, is_reg) from the innermost `N_concept` folder of a path, or None."""
    for index in range(len(parts) - 2, -1, -1):
        if match := CONCEPT_FOLDER.match(parts[index]):
            is_reg = any(p.lower() == REG_ROOT for p in parts[:index])
            return max(1, int(match.group(1))), match.group(2), is_reg
    return None


def _mask_of(path: PurePosixPath) -> str | None:
    """For an entry inside a `conditioning/` folder: the path (lowercased, no extension) of the image it masks."""
    parts = list(path.parts)
    lowered = [p.lower() for p in parts]
    if CONDITIONING_ROOT not in lowered[:-1]:
        return None
    del parts[lowered.index(CONDITIONING_ROOT)]
    return str(PurePosixPath(*parts).with_suffix("")).lower()


def read_layout(infos: list[zipfile.ZipInfo]) -> KohyaArchive:
    layout = KohyaArchive()
    captions: dict[str, dict[str, zipfile.ZipInfo]] = {}
    masks: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.is_dir():
            continue
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.parts[0] == "__MACOSX" or path.name.startswith("."):
            layout.report.append(EntryReport(entry=info.filename, status="skipped", reason="hidden or system file"))
            continue
        if len(path.parts) == 1 and path.name == TAG_SUMMARY:
            layout.report.append(EntryReport(entry=info.filename, status="skipped", reason="tag summary"))
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS and (masked := _mask_of(path)) is not None:
            masks[masked] = info
            continue
        if suffix in CAPTION_EXTENSIONS:
            captions.setdefault(str(path.with_suffix("")).lower(), {}).setdefault(suffix, info)
            continue
        concept = _concept_of(path.parts)
        if suffix not in IMAGE_EXTENSIONS:
            layout.report.append(EntryReport(entry=info.filename, status="skipped", reason="not an image or caption"))
        elif concept is None:
            layout.report.append(EntryReport(entry=info.filename, status="skipped",
                                             reason="not inside an N_concept folder (e.g. 10_mychar/)"))
        else:
            layout.images.append(KohyaImage(info, *concept))
    paired: set[str] = set()
    for image in layout.images:
        stem = str(PurePosixPath(image.info.filename.replace("\\", "/")).with_suffix("")).lower()
        image.texts = captions.get(stem, {})
        image.mask = masks.pop(stem, None)
        paired.add(stem)
    for info in masks.values():
        layout.report.append(EntryReport(entry=info.filename, status="skipped", reason="mask without an image"))
    for stem, files in captions.items():
        if stem not in paired:
            for info in files.values():
                layout.report.append(EntryReport(entry=info.filename, status="skipped",
                                                 reason="caption without an image"))
    return layout


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most `limit` bytes, and never more than the entry declared: a lying size header is refused."""
    with archive.open(info) as handle:
        data = handle.read(min(limit, info.file_size) + 1)
    if len(data) > info.file_size:
        raise RejectedUpload("entry is larger than its header says")
    if len(data) > limit:
        raise RejectedUpload(f"file is larger than {limit // (1024 * 1024)} MB")
    return data


def image_texts(archive: zipfile.ZipFile, image: KohyaImage) -> tuple[list[str], str, str]:
    """(tags, sentence, note) from the image's caption files: `.tags` are tags; `.caption` and `.txt` are
    whichever they read as (prose or a tag list). Without any, sd-scripts trains on the folder's concept, and so do
    we."""
    if not image.texts:
        return clean_tags([image.concept]), "", "no caption file: tagged with the folder's concept"
    read = {suffix: read_entry(archive, info, 1024 * 1024).decode("utf-8-sig", errors="replace").strip()
            for suffix, info in image.texts.items()}
    tags, sentence = read.get(".tags"), None
    for suffix in (".caption", ".txt"):
        if (text := read.get(suffix)) is None:
            continue
        if sentence is None and reads_as_sentences(text.replace("\n", ",").split(",")):
            sentence = " ".join(text.split())
        elif tags is None:
            tags = text
    return clean_tags((tags or "").replace("\n", ",").split(",")), (sentence or "")[:5000], ""


def _import_mask(archive: zipfile.ZipFile, info: zipfile.ZipInfo, image: Image, owner_id: str, session: Session,
                 storage: Storage, settings: Settings) -> str:
    """Stores the image's mask from the archive (committed); a mask that is refused leaves the image imported
    without one, and the report says why. The image's own transparency wins over a mask beside it."""
    if image.mask_key is not None:
        return "with the mask of its transparency"
    try:
        data = clean_mask(read_entry(archive, info, settings.max_upload_bytes), (image.width, image.height),
                          settings.max_upload_bytes, settings.max_image_pixels)
    except (zipfile.BadZipFile, RejectedUpload) as exc:
        return f"its mask {info.filename} was not used: {exc}"
    masks.store(storage, image, owner_id, data)
    session.commit()
    return "with its mask"


@dataclass
class ImportResult:
    dataset: Dataset | None
    report: list[EntryReport]

    @property
    def imported(self) -> int:
        return sum(1 for r in self.report if r.status == "imported")


def import_archive(source: BinaryIO, name: str, owner_id: str, session: Session, storage: Storage,
                   settings: Settings) -> ImportResult:
    """Creates the dataset once its first image is accepted; accepted images are committed one by one."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise HostileArchive([f"not a readable zip file ({exc})"]) from None
    with archive:
        layout = read_layout(check_archive(archive, settings))
        default_repeats = layout.train_repeats() or 10
        dataset: Dataset | None = None
        count = 0
        for image in layout.images:
            entry = image.info.filename
            if count >= settings.max_images_per_dataset:
                layout.report.append(EntryReport(entry=entry, status="rejected", reason=(
                    f"dataset is full ({settings.max_images_per_dataset} images at most)")))
                continue
            try:
                tags, sentence, note = image_texts(archive, image)
                raw = read_entry(archive, image.info, settings.max_upload_bytes)
                if dataset is None:
                    dataset = Dataset(owner_id=owner_id, name=name, default_repeats=default_repeats)
                    session.add(dataset)
                    session.flush()
                usual = 1 if image.is_reg else default_repeats
                stored: Image = store_image(session, storage, settings, dataset, PurePosixPath(entry).name, raw,
                                            tags=tags, caption=sentence, is_reg=image.is_reg,
                                            repeats=None if image.repeats == usual else image.repeats)
                session.commit()
            except (zipfile.BadZipFile, ValueError) as exc:  # ValueError: RejectedUpload, an over-long tag
                layout.report.append(EntryReport(entry=entry, status="rejected", reason=str(exc)))
                continue
            if image.mask is not None:
                said = _import_mask(archive, image.mask, stored, owner_id, session, storage, settings)
                note = "; ".join(filter(None, [note, said]))
            count += 1
            layout.report.append(EntryReport(entry=entry, status="imported", reason=note, image_id=stored.id))
        if count == 0:
            session.rollback()  # a dataset flushed for an image the validator then refused
            dataset = None
    return ImportResult(dataset, layout.report)
