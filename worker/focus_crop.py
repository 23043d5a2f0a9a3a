"""Focus crop: the largest box of the wanted aspect, placed on the subject instead of the centre.

The subject is the faces OpenCV's Haar cascade finds; without faces, the salient region of a spectral-residual
saliency map (Hou & Zhang, 2007), which singles out what differs from the image's overall texture."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from core.geometry import Box, center_box, fit_box_around

DETECT_SIDE = 640  # faces are searched on a copy at most this large: fast, and enough for a crop
SALIENCY_SIDE = 64  # spectral residual works on a thumbnail by design


@dataclass(frozen=True)
class Focus:
    box: Box
    method: Literal["faces", "saliency", "center"]


@lru_cache(maxsize=1)
def _face_cascade():  # noqa: ANN202 - cv2.CascadeClassifier
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("opencv's frontal-face Haar cascade is missing from this installation")
    return cascade


def faces(image: Image.Image) -> list[tuple[float, float, float, float]]:
    """Face boxes (x, y, w, h) in the image's own pixels."""
    import cv2

    scale = min(1.0, DETECT_SIDE / max(image.size))
    small = image.convert("L").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    grey = cv2.equalizeHist(np.asarray(small))
    min_side = max(24, round(min(small.size) * 0.06))
    found = _face_cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    return [(x / scale, y / scale, w / scale, h / scale) for x, y, w, h in found]


def saliency_map(image: Image.Image) -> np.ndarray:
    """Spectral residual saliency of a SALIENCY_SIDE-wide thumbnail, normalised to 0–1."""
    width = SALIENCY_SIDE
    height = max(8, round(image.height * width / image.width))
    grey = np.asarray(image.convert("L").resize((width, height), Image.Resampling.BILINEAR), np.float64)
    spectrum = np.fft.fft2(grey)
    log_amplitude = np.log(np.abs(spectrum) + 1e-9)
    padded = np.pad(log_amplitude, 1, mode="edge")
    local_mean = sum(padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)) / 9
    residual = np.exp(log_amplitude - local_mean) * np.exp(1j * np.angle(spectrum))
    raw = np.abs(np.fft.ifft2(residual)) ** 2
    smooth = Image.fromarray((raw / (raw.max() or 1.0) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2.5))
    values = np.asarray(smooth, np.float64)
    return values / (values.max() or 1.0)


def _salient_part(image: Image.Image) -> np.ndarray | None:
    """The saliency map where it is clearly salient (above half the peak), 0 elsewhere; None when nothing stands
    out (a flat map)."""
    sal = saliency_map(image)
    if sal.max() <= 0 or sal.std() < 0.05:
        return None
    return np.where(sal >= 0.5, sal, 0.0)


def salient_centre(image: Image.Image) -> tuple[float, float] | None:
    """The weighted centre of the clearly salient part, in the image's own pixels."""
    weights = _salient_part(image)
    if weights is None:
        return None
    ys, xs = np.indices(weights.shape)
    total = weights.sum()
    cx, cy = (xs * weights).sum() / total + 0.5, (ys * weights).sum() / total + 0.5
    return cx * image.width / weights.shape[1], cy * image.height / weights.shape[0]


def salient_box(image: Image.Image) -> Box | None:
    """The box around the clearly salient part, in the image's own pixels."""
    sal = _salient_part(image)
    if sal is None:
        return None
    ys, xs = np.nonzero(sal)
    sx, sy = image.width / sal.shape[1], image.height / sal.shape[0]
    x0, y0 = int(xs.min() * sx), int(ys.min() * sy)
    return {"x": x0, "y": y0, "width": int((xs.max() + 1) * sx) - x0, "height": int((ys.max() + 1) * sy) - y0}


def _as_box(face: tuple[float, float, float, float]) -> Box:
    x, y, w, h = face
    return {"x": round(x), "y": round(y), "width": round(w), "height": round(h)}


def subject_boxes(image: Image.Image, source: Literal["subject", "faces"]) -> list[Box]:
    """What a mask should keep: the faces (source "faces"), or the subject the focus crop centres on, the salient
    region together with any faces; [] when nothing is found."""
    found = [_as_box(face) for face in faces(image)]
    if source == "faces":
        return found
    region = salient_box(image)
    return found + ([region] if region is not None else [])


def focus_box(image: Image.Image, aspect_w: int, aspect_h: int) -> Focus:
    found = faces(image)
    if found:
        x0 = min(f[0] for f in found)
        y0 = min(f[1] for f in found)
        x1 = max(f[0] + f[2] for f in found)
        y1 = max(f[1] + f[3] for f in found)
        return Focus(fit_box_around(image.width, image.height, aspect_w, aspect_h, (x0 + x1) / 2, (y0 + y1) / 2),
                     "faces")
    centre = salient_centre(image)
    if centre is not None:
        return Focus(fit_box_around(image.width, image.height, aspect_w, aspect_h, *centre), "saliency")
    return Focus(center_box(image.width, image.height, aspect_w, aspect_h), "center")
