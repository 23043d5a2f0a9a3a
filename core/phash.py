"""Perceptual hashes (the DCT "pHash") and near-duplicate groups within a dataset."""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIDE = 8  # 8 × 8 low frequencies → a 64-bit hash
SAMPLE_SIDE = 32
DEFAULT_MAX_DISTANCE = 8  # of 64 bits: re-encodes and resizes give 0, a 2 % crop ~6, unrelated pictures 25+


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(SAMPLE_SIDE)


def phash(image: Image.Image) -> str:
    """16 hex digits: which of the lowest 8 × 8 DCT frequencies of the 32 × 32 grey image lie above their median."""
    grey = np.asarray(image.convert("L").resize((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.LANCZOS), np.float64)
    low = (_DCT @ grey @ _DCT.T)[:HASH_SIDE, :HASH_SIDE]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_duplicate_groups(hashes: dict[str, str], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[list[str]]:
    """Groups (in first-seen order) of ids whose hashes are within `max_distance` bits of another member."""
    ids = list(hashes)
    if len(ids) < 2:
        return []
    values = np.array([int(hashes[i], 16) for i in ids], dtype=np.uint64)
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(ids) - 1):
        close = np.nonzero(np.bitwise_count(values[i] ^ values[i + 1:]) <= max_distance)[0]
        for j in close + i + 1:
            parent[root(int(j))] = root(i)
    groups: dict[int, list[str]] = {}
    for i, image_id in enumerate(ids):
        groups.setdefault(root(i), []).append(image_id)
    return [members for members in groups.values() if len(members) > 1]
