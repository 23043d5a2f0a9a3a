"""Noise and loss weighting: noise offset, multires (pyramid) noise, min-SNR-γ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def sample_noise(latents: torch.Tensor, generator: torch.Generator, offset: float | None = None,
                 multires_iterations: int | None = None, multires_discount: float = 0.3) -> torch.Tensor:
    shape, device = latents.shape, latents.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    if multires_iterations:
        batch, channels, height, width = shape
        for i in range(1, multires_iterations + 1):
            ratio = float(torch.rand((), generator=generator, device=device)) * 2 + 2
            h, w = max(1, int(height / ratio**i)), max(1, int(width / ratio**i))
            coarse = torch.randn((batch, channels, h, w), generator=generator, device=device)
            noise = noise + F.interpolate(coarse, size=(height, width), mode="bilinear") * multires_discount**i
            if h == 1 or w == 1:
                break
        noise = noise / noise.std()
    if offset:
        noise = noise + offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator, device=device)
    return noise.to(latents.dtype)


def min_snr_weight(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float,
                   v_prediction: bool) -> torch.Tensor:
    """min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction (SNR by diffusers' compute_snr)."""
    values = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(values, max=gamma)
    return clipped / (values + 1) if v_prediction else clipped / values
