"""Captions in sentences from vision-language models (transformers), behind the Labeler interface the WD14 taggers
fill: images in, one caption each out. One class per architecture (config.json's model_type): Florence-2 (its
fixed caption tasks) and Qwen2.5-VL (a request in words, with an optional instruction and the image's tags as hints).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from core.captioners import CaptionerEntry
from worker.tagging import Labels, TaggerError

MAX_TOKENS = {"short": 48, "detailed": 256}
QWEN_REQUEST = {
    "short": "Describe this image in one sentence.",
    "detailed": "Describe this image in a few sentences: the subject, what it wears or holds, what it does, the "
                "setting, the light and the style. Plain prose, no lists.",
}


class CaptionerError(TaggerError):
    """A captioner that cannot be loaded or run; the message names it and the problem."""


@dataclass(frozen=True)
class CaptionOptions:
    length: Literal["short", "detailed"] = "detailed"
    instruction: str = ""  # added to the request (models that read one: Qwen2.5-VL)
    trigger: str = ""
    trigger_position: Literal["start", "end", "none"] = "start"


MAX_CAPTION = 5000  # what a caption edited by hand may hold (api.schemas.ImagePatch)


def place_trigger(caption: str, trigger: str, position: str) -> str:
    """The trigger word at the start ("sks, a woman …") or end ("… in a park, sks") unless the caption has it;
    unprintable characters out, whitespace collapsed, the length bounded."""
    caption = " ".join("".join(ch for ch in caption if ch.isprintable() and ch != "\ufffd").split())[:MAX_CAPTION]
    if not trigger or position == "none" or trigger.lower() in caption.lower():
        return caption
    return f"{trigger}, {caption}" if position == "start" else f"{caption.rstrip('.')}, {trigger}"


class VisionLanguageCaptioner(ABC):
    def __init__(self, folder: Path, options: CaptionOptions) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        self.options = options
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(self.device).eval()
            self.load_processor(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise CaptionerError(f"{folder.name}: not a usable captioner ({exc})") from None

    @abstractmethod
    def load_processor(self, folder: Path) -> None: ...

    @abstractmethod
    def describe(self, image: Image.Image, hints: list[str]) -> str:
        """One caption for one image."""

    def label(self, images: list[Image.Image], hints: list[list[str]] | None = None) -> list[Labels]:
        import torch

        out = []
        with torch.inference_mode():
            for index, image in enumerate(images):
                caption = self.describe(image.convert("RGB"), hints[index] if hints else [])
                out.append(Labels([], place_trigger(caption, self.options.trigger, self.options.trigger_position)))
        return out


class Florence2Captioner(VisionLanguageCaptioner):
    """Florence-2 reads its task prompts only: <CAPTION> for short, <MORE_DETAILED_CAPTION> for detailed (no
    instruction, no hints)."""

    def load_processor(self, folder: Path) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(folder)

    def describe(self, image: Image.Image, hints: list[str]) -> str:
        task = "<CAPTION>" if self.options.length == "short" else "<MORE_DETAILED_CAPTION>"
        inputs = self.processor(text=[task], images=[image], return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        tokens = self.model.generate(**inputs, max_new_tokens=MAX_TOKENS[self.options.length], num_beams=3,
                                     do_sample=False)
        return self.processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()


class QwenVLCaptioner(VisionLanguageCaptioner):
    """Qwen2.5-VL asked in its chat format: the picture's tokens, then the request, the instruction and the hints."""

    def load_processor(self, folder: Path) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.images = AutoImageProcessor.from_pretrained(folder)

    def request(self, hints: list[str]) -> str:
        parts = [QWEN_REQUEST[self.options.length], self.options.instruction.strip()]
        if hints:
            parts.append(f"Tags another model gave this image (they may be wrong): {', '.join(hints)}.")
        return " ".join(p for p in parts if p)

    def describe(self, image: Image.Image, hints: list[str]) -> str:
        pixels = self.images(images=[image], return_tensors="pt")
        count = int(pixels["image_grid_thw"][0].prod()) // self.images.merge_size**2
        prompt = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                  f"{'<|image_pad|>' * count}<|vision_end|>{self.request(hints)}<|im_end|>\n<|im_start|>assistant\n")
        text = self.tokenizer([prompt], return_tensors="pt")
        tokens = self.model.generate(input_ids=text.input_ids.to(self.device),
                                     attention_mask=text.attention_mask.to(self.device),
                                     pixel_values=pixels["pixel_values"].to(self.device, self.model.dtype),
                                     image_grid_thw=pixels["image_grid_thw"].to(self.device),
                                     max_new_tokens=MAX_TOKENS[self.options.length], do_sample=False)
        return self.tokenizer.decode(tokens[0, text.input_ids.shape[1]:], skip_special_tokens=True).strip()


ARCHITECTURES: dict[str, type[VisionLanguageCaptioner]] = {"florence2": Florence2Captioner,
                                                           "qwen2_5_vl": QwenVLCaptioner}


def captioner_folder(entry: CaptionerEntry) -> Path:
    """A folder captioner's path, or a hub captioner's snapshot: from the Hugging Face cache, downloaded only when
    missing there and the hub is not switched off (HF_HUB_OFFLINE)."""
    if entry.source == "folder":
        return Path(entry.location)
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(entry.location, local_files_only=entry.installed or constants.HF_HUB_OFFLINE))
    except Exception as exc:  # offline, unknown repo, partial cache: all end the same way for the user
        raise CaptionerError(f"{entry.location}: the captioner could not be loaded from the hub or its cache "
                             f"({exc})") from None


def load_captioner(entry: CaptionerEntry, options: CaptionOptions) -> VisionLanguageCaptioner:
    from core.captioners import CONFIG, architecture

    folder = captioner_folder(entry)
    kind = architecture(folder / CONFIG)
    if kind not in ARCHITECTURES:
        raise CaptionerError(f"{entry.name}: a {kind or 'unknown'} model; captioners run {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[kind](folder, options)
