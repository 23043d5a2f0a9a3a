"""Flow matching as sd-scripts' flux_train_network.py does it: noise levels t ∈ (0, 1), x_t = (1 − t)·x0 + t·ε,
target ε − x0, and the noise-level density and loss weightings of SD3 (diffusers' training utilities).
A family's own shift comes from its declared ShiftSchedule.
(DDPM noise for the UNet families lives in trainer/families/sd/noise.py.)"""

from __future__ import annotations

import math

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from trainer.families.declare import ShiftSchedule

NUM_TRAIN_TIMESTEPS = 1000


def shifted(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's discrete flow shift: t' = s·t / (1 + (s − 1)·t)."""
    return shift * t / (1 + (shift - 1) * t)


def time_shift(mu: float, t: torch.Tensor) -> torch.Tensor:
    """t' = e^μ / (e^μ + (1/t − 1)); t = 0 stays 0."""
    safe = t.clamp_min(1e-12)
    return torch.where(t > 0, math.exp(mu) / (math.exp(mu) + (1 / safe - 1)), torch.zeros_like(t))


def sample_t(method: str, batch: int, generator: torch.Generator, device: torch.device, *, sigmoid_scale: float,
             discrete_flow_shift: float, schedule: ShiftSchedule | None, image_tokens: int, weighting_scheme: str,
             logit_mean: float, logit_std: float, mode_scale: float) -> torch.Tensor:
    """Noise levels for a batch, per timestep_sampling; flux_shift is the model's own `schedule` at this image size
    (by discrete_flow_shift for a family that declares none)."""
    if method == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    if method in ("sigmoid", "shift", "flux_shift"):
        t = torch.sigmoid(torch.randn(batch, generator=generator, device=device) * sigmoid_scale)
        if method == "shift":
            return shifted(t, discrete_flow_shift)
        if method == "flux_shift":
            return model_shift(schedule or ShiftSchedule(discrete_flow_shift), image_tokens, t)
        return t
    # "sigma": an index into the scheduler's shifted table of 1000 levels, drawn by the weighting density
    u = compute_density_for_timestep_sampling(weighting_scheme, batch, logit_mean, logit_std, mode_scale, device,
                                              generator)
    index = (u * NUM_TRAIN_TIMESTEPS).long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)
    table = torch.arange(NUM_TRAIN_TIMESTEPS, 0, -1, device=device, dtype=torch.float32) / NUM_TRAIN_TIMESTEPS
    return shifted(table, discrete_flow_shift)[index]


def apply_prediction_type(kind: str, prediction: torch.Tensor, noisy: torch.Tensor, sigmas: torch.Tensor,
                          weighting_scheme: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """model_prediction_type: raw as is; additive adds the noisy input; sigma_scaled turns it into −σ·v + x_t and
    weights the loss by the scheme (as sd-scripts' apply_model_prediction_type)."""
    if kind == "additive":
        return prediction + noisy, None
    if kind == "sigma_scaled":
        view = sigmas.view(-1, *([1] * (prediction.ndim - 1)))
        return prediction * (-view) + noisy, compute_loss_weighting_for_sd3(weighting_scheme, sigmas)
    return prediction, None


def schedule_mu(schedule: ShiftSchedule | None, image_tokens: int) -> float | None:
    return schedule.mu(image_tokens) if schedule is not None and schedule.dynamic else None


def model_shift(schedule: ShiftSchedule, image_tokens: int, t: torch.Tensor) -> torch.Tensor:
    """Noise levels t moved by a model's own shift: by μ at this token count when dynamic, else by its fixed shift."""
    mu = schedule_mu(schedule, image_tokens)
    return time_shift(mu, t) if mu is not None else shifted(t, schedule.shift)


def scheduler_schedule(config: dict) -> ShiftSchedule:
    """The shift a diffusers FlowMatchEulerDiscreteScheduler config describes (what a model folder renders with)."""
    return ShiftSchedule(shift=config.get("shift", 1.0), dynamic=config.get("use_dynamic_shifting", False),
                         base_shift=config.get("base_shift", 0.5), max_shift=config.get("max_shift", 1.15),
                         base_tokens=config.get("base_image_seq_len", 256),
                         max_tokens=config.get("max_image_seq_len", 4096))


def euler_sigmas(steps: int, mu: float | None, shift: float = 1.0) -> torch.Tensor:
    """The inference schedule of flow models: linspace(1, 1/steps) shifted (by μ when dynamic, else by `shift`),
    then 0."""
    base = torch.linspace(1.0, 1.0 / steps, steps)
    levels = time_shift(mu, base) if mu is not None else shifted(base, shift)
    return torch.cat([levels, torch.zeros(1)])


def stretch_to_terminal(levels: torch.Tensor, terminal: float) -> torch.Tensor:
    """Noise levels stretched so the last one is `terminal` (a scheduler's shift_terminal), the first unchanged."""
    remaining = 1 - levels
    return 1 - remaining * (1 - terminal) / remaining[-1]
