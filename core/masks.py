"""Masks for masked loss as the service keeps them: one grayscale PNG per image, at the image's size, white where
the image is trained and black where it is not. They come from an upload's alpha channel, from a mask file sent
beside the image (or in an imported zip's conditioning folder), or from the subject box a worker finds; they go to
the trainer and to exports as sd-scripts' `conditioning_data_dir` layout: an image of the same name, cropped as
its image is. No torch here."""

from __future__ import annotations

import io
from collections.abc import Iterable

from PIL import Image, ImageDraw, ImageFilter

from core import keys
from core.geometry import Box
from core.models import Image as ImageRow
from core.storage import Storage

CONDITIONING_ROOT = "conditioning"  # the export's and import's folder of masks, mirroring the image folders
ASPECT_TOLERANCE = 0.02  # a mask's width ÷ height may differ this much from its image's (rounding in resizes)


def alpha_mask(image: Image.Image) -> Image.Image | None:
    """The alpha channel of an image that has transparent pixels, as a mask; None for an opaque image."""
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None


def as_mask(picture: Image.Image) -> Image.Image:
    """A picture read as a mask: its alpha channel when it has transparent pixels, else its brightness."""
    return alpha_mask(picture) or picture.convert("L")


def png(mask: Image.Image, width: int, height: int) -> bytes:
    """The mask at the image's size, as a grayscale PNG."""
    out = io.BytesIO()
    fitted = mask.convert("L")
    if fitted.size != (width, height):
        fitted = fitted.resize((width, height), Image.Resampling.BILINEAR)
    fitted.save(out, "PNG")
    return out.getvalue()


def same_shape(mask_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
    (mw, mh), (iw, ih) = mask_size, image_size
    return abs(mw / mh - iw / ih) <= ASPECT_TOLERANCE * (iw / ih)


def box_mask(width: int, height: int, boxes: Iterable[Box], grow: float = 0.15) -> Image.Image:
    """White boxes on black, each grown by `grow` of its size on every side and kept inside the image, with edges
    softened a little so the loss fades out instead of stopping at a line."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        dx, dy = box["width"] * grow, box["height"] * grow
        draw.rectangle((max(0, box["x"] - dx), max(0, box["y"] - dy), min(width, box["x"] + box["width"] + dx),
                        min(height, box["y"] + box["height"] + dy)), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(1.0, min(width, height) / 100)))


def cropped_png(mask_data: bytes, crop: dict | None) -> bytes:
    """The stored mask cut by the image's crop box, as the trained picture is cut."""
    if not crop:
        return mask_data
    with Image.open(io.BytesIO(mask_data)) as mask:
        part = mask.convert("L").crop((crop["x"], crop["y"], crop["x"] + crop["width"], crop["y"] + crop["height"]))
        out = io.BytesIO()
        part.save(out, "PNG")
    return out.getvalue()


def store(storage: Storage, image: ImageRow, owner_id: str, data: bytes) -> None:
    """Keeps `data` (a mask PNG) as the image's mask, replacing any; the caller commits the row."""
    image.mask_key = keys.mask(owner_id, image.dataset_id, image.id)
    storage.put_bytes(image.mask_key, data, "image/png")
