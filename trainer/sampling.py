"""Rendering images from the in-memory model: preview samples per epoch and test generations (SD samplers here;
other families render through their runtime)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from trainer.families import runtime
from trainer.families.base import LoadedModel, RenderSettings
from trainer.models import BaseModel, encode_text
from trainer.prompts import PromptSpec


def make_sampler(name: str, scheduler_config: dict):
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(scheduler_config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(scheduler_config)
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config)
    if name in ("dpm++ 2m", "dpm++ 2m karras"):
        return DPMSolverMultistepScheduler.from_config(
            scheduler_config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=name.endswith("karras")
        )
    raise ValueError(f"unknown sampler {name}")


def build_pipeline(model: BaseModel, sampler: str):
    scheduler = make_sampler(sampler, model.scheduler_config)
    if model.family == "sdxl":
        return StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet, scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@torch.no_grad()
def render_sd(model: BaseModel, spec: PromptSpec, *, seed: int, default_size: tuple[int, int], default_sampler: str,
              clip_skip: int | None = None, max_token_length: int | None = None) -> Image.Image:
    """One SD image; the same spec and seed give the same image whatever else was rendered before."""
    pipe = build_pipeline(model, spec.sampler or default_sampler)
    pipe.set_progress_bar_config(disable=True)
    width, height = spec.width or default_size[0], spec.height or default_size[1]
    unet_dtype = next(model.unet.parameters()).dtype
    embeds, pooled = encode_text(model, [spec.prompt], clip_skip, max_token_length)
    negative, negative_pooled = encode_text(model, [spec.negative], clip_skip, max_token_length)
    if negative.shape[1] != embeds.shape[1]:  # long prompt, short negative: pad the negative with its own end
        negative = torch.cat([negative, negative[:, -1:].expand(-1, embeds.shape[1] - negative.shape[1], -1)], 1)
    kwargs = {
        "prompt_embeds": embeds.to(unet_dtype), "negative_prompt_embeds": negative.to(unet_dtype),
        "width": width, "height": height, "num_inference_steps": spec.steps, "guidance_scale": spec.cfg_scale,
        "generator": torch.Generator("cpu").manual_seed(seed), "output_type": "pil",
    }
    if model.family == "sdxl":
        kwargs.update(pooled_prompt_embeds=pooled.to(unet_dtype),
                      negative_pooled_prompt_embeds=negative_pooled.to(unet_dtype))
    return pipe(**kwargs).images[0]


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
