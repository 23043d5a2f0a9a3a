"""Stable Diffusion 1.x, 2.x and XL: a UNet trained on DDPM noise (ε or v), CLIP text encoders."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from trainer.data.masks import per_sample
from trainer.families.base import ModelFamily, RenderSettings, TextOut
from trainer.families.sd.loading import BaseModel, encode_text, load_base_model, sdxl_time_ids
from trainer.families.sd.noise import min_snr_weight, sample_noise
from trainer.families.sd.targets import named_candidates, text_candidates, unet_candidates
from trainer.job.config import TrainConfig
from trainer.job.prompts import PromptSpec
from trainer.networks.network import Candidate

VERSIONS = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURES = {
    "sd_v1": "stable-diffusion-v1/lora",
    "sd_v2": "stable-diffusion-v2-512/lora",
    "sd_v2_v": "stable-diffusion-v2-768-v/lora",
    "sdxl_base_v1-0": "stable-diffusion-xl-v1-base/lora",
}


class StableDiffusion(ModelFamily):
    def load(self, cfg: TrainConfig) -> BaseModel:
        # Without an explicit family, a single file says itself whether it is SDXL.
        sdxl = True if self.info.name == "sdxl" else (None if not cfg.model_family else False)
        return load_base_model(cfg.pretrained_model_name_or_path, v2=self.info.name == "sd2",
                               v_parameterization=cfg.v_parameterization, sdxl=sdxl, vae=cfg.vae,
                               single_file_config=cfg.pretrained_model_config)

    def load_location(self, location: str, *, v_parameterization: bool = False) -> BaseModel:
        return load_base_model(location, v2=self.info.name == "sd2", v_parameterization=v_parameterization,
                               sdxl=self.info.name == "sdxl")

    def place(self, model: BaseModel, cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> None:
        # SDXL's VAE overflows in fp16; it stays in float32 then.
        vae_dtype = torch.float32 if self.info.name == "sdxl" and dtype == torch.float16 else dtype
        for module in (model.unet, model.vae, *model.text_encoders):
            module.requires_grad_(False)
        model.unet.to(device, dtype)
        model.vae.to(device, vae_dtype)
        for encoder in model.text_encoders:
            encoder.to(device, dtype)
        if cfg.xformers:
            model.unet.enable_xformers_memory_efficient_attention()
        elif not cfg.sdpa:
            from diffusers.models.attention_processor import AttnProcessor

            model.unet.set_attn_processor(AttnProcessor())

    def lora_targets(self, model: BaseModel, *, with_conv: bool, denoiser: bool = True,
                     text: bool | tuple[int, ...] = True, network_args: list[str] | None = None,
                     names: tuple[str, ...] = ()) -> list[Candidate]:
        out: list[Candidate] = []
        if text:
            chosen = set(range(len(model.text_encoders))) if text is True else set(text)
            out += [c for c in text_candidates(model.text_encoders, model.family) if int(c.group[2:]) - 1 in chosen]
        if denoiser:
            out += unet_candidates(model.unet, model.family, with_conv=with_conv)
            out += named_candidates(model.unet, model.family, names)
        return out

    def encode_images(self, model: BaseModel, pixels: torch.Tensor) -> torch.Tensor:
        return model.vae.encode(pixels).latent_dist.mean * model.vae.config.scaling_factor

    def encode_text(self, model: BaseModel, captions: list[str], cfg: TrainConfig) -> TextOut:
        return encode_text(model, captions, cfg.clip_skip, cfg.max_token_length)

    def loss(self, model: BaseModel, cfg: TrainConfig, latents: torch.Tensor, text: TextOut, batch: dict,
             generator: torch.Generator) -> torch.Tensor:
        device, unet_dtype = latents.device, next(model.unet.parameters()).dtype
        noise = sample_noise(latents, generator, cfg.noise_offset, cfg.multires_noise_iterations,
                             cfg.multires_noise_discount)
        scheduler = model.noise_scheduler
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator,
                                  device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        hidden, pooled = text
        extra = {}
        if model.family == "sdxl":
            height, width = latents.shape[-2] * 8, latents.shape[-1] * 8
            time_ids = sdxl_time_ids(batch["original_sizes"], batch["crops"], [(height, width)] * latents.shape[0])
            extra["added_cond_kwargs"] = {"text_embeds": pooled.to(device, unet_dtype),
                                          "time_ids": time_ids.to(device, unet_dtype)}
        prediction = model.unet(noisy.to(unet_dtype), timesteps, hidden.to(device, unet_dtype), **extra).sample
        target = scheduler.get_velocity(latents, noise, timesteps) if model.v_prediction else noise
        loss = per_sample(F.mse_loss(prediction.float(), target.float(), reduction="none"), batch)
        if cfg.min_snr_gamma:
            loss = loss * min_snr_weight(scheduler, timesteps, cfg.min_snr_gamma, model.v_prediction)
        return loss

    def facts(self, model: BaseModel) -> dict[str, Any]:
        return {"v_prediction": model.v_prediction}

    def metadata(self, cfg: TrainConfig, model_facts: dict[str, Any]) -> dict[str, Any]:
        v_prediction = model_facts.get("v_prediction", False)
        version = VERSIONS[self.info.name] + ("_v" if self.info.name == "sd2" and v_prediction else "")
        return {
            "ss_base_model_version": version,
            "ss_v2": self.info.name == "sd2",
            "ss_v_parameterization": v_prediction,
            "ss_clip_skip": cfg.clip_skip,
            "ss_max_token_length": cfg.max_token_length,
            "ss_noise_offset": cfg.noise_offset,
            "ss_multires_noise_iterations": cfg.multires_noise_iterations,
            "ss_min_snr_gamma": cfg.min_snr_gamma,
            "modelspec.architecture": ARCHITECTURES[version],
            "modelspec.implementation": ("https://github.com/Stability-AI/generative-models"
                                         if self.info.name == "sdxl" else "diffusers"),
            "modelspec.prediction_type": "v" if v_prediction else "epsilon",
            "modelspec.encoder_layer": cfg.clip_skip,
        }

    def render(self, model: BaseModel, spec: PromptSpec, *, seed: int, settings: RenderSettings) -> Image.Image:
        from trainer.families.sd.sampling import render_sd

        return render_sd(model, spec, seed=seed, default_size=settings.default_size,
                         default_sampler=settings.sampler, steps=settings.steps_for(spec),
                         cfg_scale=settings.cfg_for(spec), clip_skip=settings.text_value("clip_skip"),
                         max_token_length=settings.text_value("max_token_length"))
