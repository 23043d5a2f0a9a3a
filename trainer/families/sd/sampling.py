"""Stable Diffusion images from the in-memory model, with the sampler a preview or test asks for."""

from __future__ import annotations

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

from trainer.families.sd.loading import BaseModel, encode_text
from trainer.job.prompts import PromptSpec


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
              steps: int, cfg_scale: float, clip_skip: int | None = None,
              max_token_length: int | None = None) -> Image.Image:
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
        "width": width, "height": height, "num_inference_steps": steps, "guidance_scale": cfg_scale,
        "generator": torch.Generator("cpu").manual_seed(seed), "output_type": "pil",
    }
    if model.family == "sdxl":
        kwargs.update(pooled_prompt_embeds=pooled.to(unet_dtype),
                      negative_pooled_prompt_embeds=negative_pooled.to(unet_dtype))
    return pipe(**kwargs).images[0]
