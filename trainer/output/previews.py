"""Preview images from the in-memory model after an epoch, and single test renders, through the family's own
sampler."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from trainer.families import runtime
from trainer.families.base import LoadedModel, RenderSettings
from trainer.job.prompts import PromptSpec


@torch.no_grad()
def render(model: LoadedModel, spec: PromptSpec, *, seed: int, settings: RenderSettings) -> Image.Image:
    return runtime(model.family).render(model, spec, seed=seed, settings=settings)


def render_previews(model: LoadedModel, specs: list[PromptSpec], out_dir: Path, output_name: str, epoch: int, *,
                    images_per_prompt: int, base_seed: int, settings: RenderSettings) -> list[Path]:
    """`sample/{output_name}_e{epoch:06d}_{prompt:02d}_{k}.png`; image k of a prompt uses seed (--d or seed) + k."""
    out_dir.mkdir(parents=True, exist_ok=True)
    modules = [model.denoiser, *model.text_encoders]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    paths = []
    try:
        for index, spec in enumerate(specs):
            seed = spec.seed if spec.seed is not None else base_seed
            for k in range(images_per_prompt):
                image = render(model, spec, seed=seed + k, settings=settings)
                path = out_dir / f"{output_name}_e{epoch:06d}_{index:02d}_{k}.png"
                image.save(path)
                paths.append(path)
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)
    return paths
