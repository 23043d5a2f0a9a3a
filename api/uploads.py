"""Upload validation: the real type from the bytes, size and pixel caps, EXIF orientation, a re-encode without
metadata, thumbnail; display names without control characters."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from core import masks
from core.phash import phash

THUMB_SIZE = 320
MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg"}
FORMAT_NAMES = {"png": "PNG", "jpg": "JPEG"}


class RejectedUpload(ValueError):
    """The reason a file was refused, worded for the person who sent it."""


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    thumb: bytes
    format: str
    width: int
    height: int
    sha256: str
    phash: str
    mask: bytes | None = None  # the upload's alpha channel as a mask (core/masks.py), when it had transparent pixels


def display_name(filename: str, limit: int = 255) -> str:
    """A file name as shown and stored: printable characters only (no NUL, no control codes), at most `limit`."""
    return "".join(ch for ch in filename if ch.isprintable())[:limit].strip() or "upload"


def sniff(head: bytes) -> str | None:
    return next((fmt for magic, fmt in MAGIC.items() if head.startswith(magic)), None)


def _decoded(raw: bytes, max_bytes: int, max_pixels: int) -> tuple[Image.Image, str]:
    """The picture, checked (its real type, its size and pixel caps, decodable) and upright (EXIF orientation),
    with its format."""
    if not raw:
        raise RejectedUpload("empty file")
    if len(raw) > max_bytes:
        raise RejectedUpload(f"file is larger than {max_bytes // (1024 * 1024)} MB")
    fmt = sniff(raw[:8])
    if fmt is None:
        raise RejectedUpload("not a PNG or JPEG image (checked from the file's content, not its name)")
    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only; the pixel count is checked before decoding
    except Image.DecompressionBombError as exc:
        raise RejectedUpload("image has too many pixels (a possible decompression bomb)") from exc
    except ValueError as exc:  # text or ICC chunks that decompress past Pillow's limit
        raise RejectedUpload(f"{FORMAT_NAMES[fmt]} metadata expands too far ({exc}): a possible zip bomb") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise RejectedUpload(f"damaged or unreadable {FORMAT_NAMES[fmt]} file ({exc})") from exc
    if image.width * image.height > max_pixels:
        raise RejectedUpload(f"image is {image.width}×{image.height}, more than {max_pixels:,} pixels "
                             "(a possible decompression bomb)")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise RejectedUpload(f"damaged or unreadable {FORMAT_NAMES[fmt]} file ({exc})") from exc
    return ImageOps.exif_transpose(image), fmt


def clean_image(raw: bytes, max_bytes: int, max_pixels: int) -> CleanImage:
    image, fmt = _decoded(raw, max_bytes, max_pixels)
    if min(image.size) < 64:
        raise RejectedUpload(f"image is {image.width}×{image.height}; both sides must be at least 64 pixels")
    alpha = masks.alpha_mask(image)
    image = _to_rgb(image)
    image.info.clear()  # re-encoded without ICC profile, text chunks, comments or EXIF
    data = _encode(image, fmt)
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    thumb_out = io.BytesIO()
    thumb.save(thumb_out, "WEBP", quality=80)
    return CleanImage(data, thumb_out.getvalue(), fmt, image.width, image.height, hashlib.sha256(data).hexdigest(),
                      phash(thumb), masks.png(alpha, image.width, image.height) if alpha is not None else None)


def clean_mask(raw: bytes, image_size: tuple[int, int], max_bytes: int, max_pixels: int) -> bytes:
    """A mask sent for an image: a PNG or JPEG of the image's shape (any size: it is scaled to the image), read as
    its alpha channel when it has transparent pixels, else as its brightness (white trained, black ignored)."""
    picture, _ = _decoded(raw, max_bytes, max_pixels)
    if not masks.same_shape(picture.size, image_size):
        raise RejectedUpload(f"the mask is {picture.width}×{picture.height} and the image {image_size[0]}×"
                             f"{image_size[1]}: a mask must have its image's shape (any size)")
    return masks.png(masks.as_mask(picture), *image_size)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, "PNG", optimize=False)
    else:
        image.save(out, "JPEG", quality=95, subsampling=0)
    return out.getvalue()
