"""Aspect-ratio buckets with sd-scripts' rules. Pure Python: the API uses it to count steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSettings:
    resolution: Size  # (width, height); its area is the largest bucket area
    enabled: bool = False
    min_reso: int = 256
    max_reso: int = 1024
    step: int = 64
    no_upscale: bool = False

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]


def bucket_resolutions(settings: BucketSettings) -> list[Size]:
    """Every (w, h) with w, h multiples of step in [min, max] and w*h ≤ max area, plus the square one."""
    step, area = settings.step, settings.max_area
    side = int(math.sqrt(area) // step) * step
    sizes: set[Size] = {(side, side)}
    width = settings.min_reso
    while width <= settings.max_reso:
        height = min(settings.max_reso, int((area // width) // step) * step)
        if height >= settings.min_reso:
            sizes.add((width, height))
            sizes.add((height, width))
        width += step
    return sorted(sizes)


class BucketAssigner:
    """Chooses the bucket of each image; with no_upscale each image gets a bucket of its own size."""

    def __init__(self, settings: BucketSettings) -> None:
        self.settings = settings
        self.sizes = bucket_resolutions(settings) if settings.enabled and not settings.no_upscale else []
        self._ratios = [w / h for w, h in self.sizes]

    def assign(self, width: int, height: int) -> Size:
        if not self.settings.enabled:
            return self.settings.resolution
        if self.settings.no_upscale:
            return self._own_bucket(width, height)
        ratio = width / height
        best = min(range(len(self.sizes)), key=lambda i: abs(self._ratios[i] - ratio))
        return self.sizes[best]

    def _own_bucket(self, width: int, height: int) -> Size:
        step, area = self.settings.step, self.settings.max_area
        if width * height > area:
            ratio = width / height
            width_f = math.sqrt(area * ratio)
            height_f = area / width_f
            by_width = self._floor(width_f), self._floor(self._floor(width_f) / ratio)
            by_height = self._floor(self._floor(height_f) * ratio), self._floor(height_f)
            err_w = abs(by_width[0] / by_width[1] - ratio)
            err_h = abs(by_height[0] / by_height[1] - ratio)
            return by_width if err_w <= err_h else by_height
        return max(step, width // step * step), max(step, height // step * step)

    def _floor(self, value: float) -> int:
        step = self.settings.step
        return max(step, int(value // step) * step)


def resize_for_bucket(width: int, height: int, bucket: Size) -> Size:
    """The size the image is scaled to so it covers the bucket; the overhang is cropped."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    return max(bw, round(width * scale)), max(bh, round(height * scale))
