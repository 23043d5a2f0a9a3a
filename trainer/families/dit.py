"""What every flow-matching DiT family shares: placing a large transformer (fp8 storage, block swap), a 16-channel
VAE with scale and shift, the flow-matching loss, and Euler sampling with optional real CFG.

A family module subclasses `DiTFamily` and says what differs: its blocks, its velocity prediction (how the
transformer is called; in the convention v = ε − x0, the target of the loss), and its text encoding.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trainer.families.base import LoadedModel, ModelFamily, TextOut
from trainer.families.dit_memory import store_linears_in_fp8, swap_blocks
from trainer.job.config import TrainConfig
from trainer.training.flow import apply_prediction_type, euler_sigmas, sample_t, schedule_mu, scheduler_schedule

Velocity = Callable[[torch.Tensor, torch.Tensor, TextOut], torch.Tensor]  # (latents, σ [B], text) → v


class DiTFamily(ModelFamily):
    latent_patch = 2  # latent pixels per side of one image token

    @abstractmethod
    def blocks(self, model: LoadedModel) -> list[nn.Module]:
        """The transformer's blocks in the order they run (fp8 storage and block swap act on these)."""

    @abstractmethod
    def training_velocity(self, model: LoadedModel, cfg: TrainConfig, noisy: torch.Tensor, sigmas: torch.Tensor,
                          text: TextOut) -> torch.Tensor:
        """The transformer's velocity (ε − x0) for latents [B, C, H, W] at noise levels σ [B], as trained."""

    def place(self, model: LoadedModel, cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> None:
        for module in (model.denoiser, model.vae, *model.text_encoders):
            module.requires_grad_(False)
            module.to(device, dtype)
        if cfg.fp8_base or cfg.fp8_base_unet:
            store_linears_in_fp8(self.blocks(model))
        if cfg.blocks_to_swap:
            swap_blocks(self.blocks(model), cfg.blocks_to_swap, device)

    def encode_images(self, model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        return (model.vae.encode(pixels).latent_dist.mean - config.shift_factor) * config.scaling_factor

    def image_tokens(self, height: int, width: int) -> int:
        return (height // self.latent_patch) * (width // self.latent_patch)

    def loss(self, model: LoadedModel, cfg: TrainConfig, latents: torch.Tensor, text: TextOut, batch: dict,
             generator: torch.Generator) -> torch.Tensor:
        batch_size, _, height, width = latents.shape
        noise = torch.randn(latents.shape, generator=generator, device=latents.device)
        sigmas = sample_t(cfg.timestep_sampling, batch_size, generator, latents.device,
                          sigmoid_scale=cfg.sigmoid_scale, discrete_flow_shift=cfg.discrete_flow_shift,
                          schedule=self.info.schedule, image_tokens=self.image_tokens(height, width),
                          weighting_scheme=cfg.weighting_scheme, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std,
                          mode_scale=cfg.mode_scale)
        view = sigmas.view(-1, 1, 1, 1)
        noisy = (1 - view) * latents + view * noise
        prediction = self.training_velocity(model, cfg, noisy, sigmas, text)
        prediction, weighting = apply_prediction_type(cfg.model_prediction_type, prediction.float(), noisy, sigmas,
                                                      cfg.weighting_scheme)
        loss = F.mse_loss(prediction, (noise - latents).float(), reduction="none")
        if weighting is not None:
            loss = loss * weighting.view(-1, 1, 1, 1)
        return loss.mean(dim=(1, 2, 3))

    @torch.no_grad()
    def euler(self, model: LoadedModel, velocity: Velocity, positive: TextOut, negative: TextOut | None,
              cfg_scale: float, size: tuple[int, int], steps: int, seed: int) -> Image.Image:
        """Euler over the model's own shifted schedule (its folder's scheduler config), with real CFG when a
        negative is given; the same seed gives the same image."""
        generator = torch.Generator("cpu").manual_seed(seed)
        device = next(model.denoiser.parameters()).device
        latents = torch.randn(self.noise_shape(model, *size), generator=generator).to(device)
        sigmas = self.inference_sigmas(model, steps, self.image_tokens(*latents.shape[-2:])).to(device)
        for sigma, following in zip(sigmas[:-1], sigmas[1:], strict=True):
            level = sigma.expand(1)
            v = velocity(latents, level, positive).float()
            if negative is not None:
                unconditional = velocity(latents, level, negative).float()
                v = unconditional + cfg_scale * (v - unconditional)
            latents = latents + (following - sigma) * v
        pixels = self.decode(model, latents)[0].float()
        array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)

    def vae_scale(self, model: LoadedModel) -> int:
        return 2 ** (len(model.vae.config.block_out_channels) - 1)

    def noise_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        """The shape of one image's latents as the denoiser takes them, at this size in pixels."""
        scale = self.vae_scale(model)
        return (1, model.vae.config.latent_channels, height // scale, width // scale)

    def inference_sigmas(self, model: LoadedModel, steps: int, image_tokens: int) -> torch.Tensor:
        """Noise levels of an inference run: the model folder's scheduler config says how they are shifted."""
        schedule = scheduler_schedule(model.scheduler_config)
        return euler_sigmas(steps, schedule_mu(schedule, image_tokens), schedule.shift)

    def decode(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        """Latents → pixels in [-1, 1] (undoing encode_images' scale and shift)."""
        vae = model.vae
        decoded = latents / vae.config.scaling_factor + vae.config.shift_factor
        return vae.decode(decoded.to(next(vae.parameters()).dtype)).sample
