"""Noise levels, loss weights and min-SNR against values computed here from the published formulas.

- SD3 (Esser et al. 2024, §3.1): logit-normal u = sigmoid(n), n ~ N(m, s); mode sampling
  u' = 1 − u − s·(cos²(πu/2) − 1 + u); loss weights σ⁻² (sigma_sqrt) and 2 / (π(1 − 2σ + 2σ²)) (cosmap);
  the discrete flow shift t' = s·t / (1 + (s − 1)·t).
- FLUX.1 (BFL's sampling code): μ grows linearly from 0.5 at 256 image tokens to 1.15 at 4096, and
  t' = e^μ / (e^μ + (1/t − 1)).
- Min-SNR-γ (Hang et al. 2023): SNR(t) = ᾱ_t / (1 − ᾱ_t); weight min(SNR, γ) / SNR for ε-prediction and
  min(SNR, γ) / (SNR + 1) for v-prediction.
Each case draws its random numbers from a generator seeded as the code's, so the values must agree exactly in form.
"""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from trainer.families.declare import ShiftSchedule
from trainer.families.sd.noise import min_snr_weight
from trainer.training.flow import apply_prediction_type, euler_sigmas, sample_t

BATCH = 64
FLUX = ShiftSchedule(dynamic=True, base_shift=0.5, max_shift=1.15, base_tokens=256, max_tokens=4096)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _levels(method: str, **overrides: object) -> torch.Tensor:
    values = dict(sigmoid_scale=1.0, discrete_flow_shift=3.0, schedule=None, image_tokens=1024,
                  weighting_scheme="none", logit_mean=0.0, logit_std=1.0, mode_scale=1.29) | overrides
    return sample_t(method, BATCH, _generator(), torch.device("cpu"), **values)


def _flux_mu(tokens: int) -> float:
    return 0.5 + (1.15 - 0.5) / (4096 - 256) * (tokens - 256)


def test_uniform_sigmoid_and_shift_levels_follow_their_formulas():
    assert torch.equal(_levels("uniform"), torch.rand(BATCH, generator=_generator()))
    normal = torch.randn(BATCH, generator=_generator())
    assert torch.allclose(_levels("sigmoid", sigmoid_scale=1.5), 1 / (1 + torch.exp(-1.5 * normal)))
    t = 1 / (1 + torch.exp(-normal))
    assert torch.allclose(_levels("shift", discrete_flow_shift=3.0), 3 * t / (1 + 2 * t))


@pytest.mark.parametrize("tokens", [256, 1024, 4096])
def test_flux_shift_moves_levels_by_the_models_mu_at_the_image_size(tokens):
    t = 1 / (1 + torch.exp(-torch.randn(BATCH, generator=_generator())))
    e = math.exp(_flux_mu(tokens))
    assert torch.allclose(_levels("flux_shift", schedule=FLUX, image_tokens=tokens), e / (e + (1 / t - 1)))
    fixed = ShiftSchedule(shift=3.0)  # a family with a fixed shift (Z-Image): by that shift at every size
    assert torch.allclose(_levels("flux_shift", schedule=fixed, image_tokens=tokens), 3 * t / (1 + 2 * t))


@pytest.mark.parametrize("scheme", ["logit_normal", "mode", "none"])
def test_sigma_sampling_indexes_the_shifted_table_by_the_sd3_density(scheme):
    if scheme == "logit_normal":
        u = 1 / (1 + torch.exp(-(torch.randn(BATCH, generator=_generator()) * 0.8 + 0.2)))
    else:
        u = torch.rand(BATCH, generator=_generator())
        if scheme == "mode":
            u = 1 - u - 1.29 * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    index = (u * 1000).long().clamp(0, 999)
    table = torch.tensor([(1000 - i) / 1000 for i in range(1000)])
    expected = 3 * table[index] / (1 + 2 * table[index])
    got = _levels("sigma", weighting_scheme=scheme, logit_mean=0.2, logit_std=0.8, discrete_flow_shift=3.0)
    assert torch.allclose(got, expected, atol=1e-6)


def test_sigma_scaled_prediction_is_weighted_by_sd3s_loss_weights():
    sigmas = torch.tensor([0.05, 0.3, 0.5, 0.9])
    prediction, noisy = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    view = sigmas.view(-1, 1, 1, 1)
    expected = {"sigma_sqrt": 1 / sigmas**2, "cosmap": 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas**2)),
                "none": torch.ones(4)}
    for scheme, weights in expected.items():
        scaled, weighting = apply_prediction_type("sigma_scaled", prediction, noisy, sigmas, scheme)
        assert torch.allclose(scaled, -view * prediction + noisy) and torch.allclose(weighting, weights)
    assert apply_prediction_type("raw", prediction, noisy, sigmas, "cosmap") == (prediction, None)


def test_inference_levels_are_the_shifted_linspace_then_zero():
    e = math.exp(_flux_mu(4096))
    base = torch.tensor([1 - i / 4 for i in range(4)])  # linspace(1, 1/4, 4)
    assert torch.allclose(euler_sigmas(4, _flux_mu(4096)), torch.cat([e / (e + (1 / base - 1)), torch.zeros(1)]))
    assert torch.allclose(euler_sigmas(4, None, 3.0), torch.cat([3 * base / (1 + 2 * base), torch.zeros(1)]))


@pytest.mark.parametrize("v_prediction", [False, True])
def test_min_snr_weights_are_min_snr_gamma_over_snr(v_prediction):
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    timesteps = torch.tensor([0, 10, 100, 500, 999])
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2  # scaled_linear, written out
    alpha_bar = torch.cumprod(1 - betas, dim=0)[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    expected = torch.clamp(snr, max=5.0) / (snr + 1 if v_prediction else snr)
    assert torch.allclose(min_snr_weight(scheduler, timesteps, 5.0, v_prediction), expected, rtol=1e-4)
