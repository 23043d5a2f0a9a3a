"""Synthetic kohya datasets (coloured shapes with captions) for the demo, the tests and the benchmarks."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SIZES = ((64, 64), (96, 64), (64, 96))


def make_dataset(root: str | Path, *, count: int = 6, repeats: int = 5, concept: str = "sks shape",
                 trigger: str = "sks", seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES,
                 captions: bool = True) -> Path:
    """`root/{repeats}_{concept}/` with `count` images and `.txt` captions starting with the trigger word."""
    rng = random.Random(seed)
    folder = Path(root) / f"{repeats}_{concept}"
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        background, shape = rng.sample(names, 2)
        image = Image.new("RGB", (width, height), COLOURS[background])
        draw = ImageDraw.Draw(image)
        x, y = rng.randint(0, width // 2), rng.randint(0, height // 2)
        kind = rng.choice(["circle", "square"])
        box = (x, y, x + width // 3, y + height // 3)
        (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=COLOURS[shape])
        image.save(folder / f"img{i:04d}.png")
        if captions:
            text = f"{trigger}, {shape} {kind}, {background} background, simple"
            (folder / f"img{i:04d}.txt").write_text(text, encoding="utf-8")
    return folder
