"""Crop boxes: the largest box of an aspect ratio inside an image, centred or placed around a point."""

from __future__ import annotations

Box = dict[str, int]  # {"x", "y", "width", "height"} in the image's pixels, as images.crop stores it


def largest_size(width: int, height: int, aspect_w: int, aspect_h: int) -> tuple[int, int]:
    if width * aspect_h > height * aspect_w:  # wider than the target: trim the sides
        return max(8, round(height * aspect_w / aspect_h)), height
    return width, max(8, round(width * aspect_h / aspect_w))


def center_box(width: int, height: int, aspect_w: int, aspect_h: int) -> Box:
    """The largest box of the aspect aspect_w:aspect_h centred in a width × height image."""
    box_w, box_h = largest_size(width, height, aspect_w, aspect_h)
    return {"x": (width - box_w) // 2, "y": (height - box_h) // 2, "width": box_w, "height": box_h}


def fit_box_around(width: int, height: int, aspect_w: int, aspect_h: int, cx: float, cy: float) -> Box:
    """The largest box of the aspect, centred on (cx, cy) as far as the image's edges allow."""
    box_w, box_h = largest_size(width, height, aspect_w, aspect_h)
    x = min(max(0, round(cx - box_w / 2)), width - box_w)
    y = min(max(0, round(cy - box_h / 2)), height - box_h)
    return {"x": x, "y": y, "width": box_w, "height": box_h}
