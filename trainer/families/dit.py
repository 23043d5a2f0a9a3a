"""What every flow-matching DiT family shares: placing a large transformer (fp8 storage, block swap), a 16-channel
VAE with scale and shift, the flow-matching loss, and Euler sampling with optional real CFG.

A family module subclasses `DiTFamily` and says what differs: its blocks, its velocity prediction (how the
transformer is called; in the convention v = ε − x0, the target of the loss), and its text encoding.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trainer.data.masks import per_sample
from trainer.families.base import LoadedModel, ModelFamily, ModelLoadError, RenderSettings, TextOut, model_name
from trainer.families.dit_memory import quantize_linears, swap_blocks
from trainer.families.flow_params import stored_as
from trainer.families.text_files import load_text_encoder_file
from trainer.job.config import TrainConfig
from trainer.job.prompts import PromptSpec
from trainer.training.flow import (
    apply_prediction_type,
    euler_sigmas,
    sample_t,
    schedule_mu,
    scheduler_schedule,
    stretch_to_terminal,
)

Velocity = Callable[[torch.Tensor, torch.Tensor, TextOut], torch.Tensor]  # (latents, σ [B], text) → v


@dataclass
class DiTModel:
    family: str
    name: str
    transformer: nn.Module
    vae: nn.Module
    text_encoders: list[nn.Module]
    tokenizers: list
    scheduler_config: dict = field(default_factory=dict)

    @property
    def denoiser(self) -> nn.Module:
        return self.transformer


class DiTFamily(ModelFamily):
    latent_patch = 2  # latent pixels per side of one image token
    pipeline = ""  # the diffusers pipeline class a model folder of this family holds
    transformer_class = ""  # the diffusers transformer class, for a single transformer file
    vae_class = "AutoencoderKL"
    text_encoder_file = ""  # the parameter naming a single file for its (one) text encoder, if it declares one

    # Loading ---------------------------------------------------------------------------------------------------
    def load(self, cfg: TrainConfig) -> LoadedModel:
        """A diffusers folder or hub id, or a single transformer file with `pretrained_model_config` naming a local
        folder for the rest; a text-encoder file over the folder's, for the families that declare one."""
        if Path(cfg.pretrained_model_name_or_path).is_file():
            model = self._from_single_files(cfg)
        else:
            model = self.load_location(cfg.pretrained_model_name_or_path)
        if self.text_encoder_file and (file := getattr(cfg, self.text_encoder_file)):
            load_text_encoder_file(model.text_encoders[0], file)
        return model

    def load_location(self, location: str, *, v_parameterization: bool = False) -> LoadedModel:
        path = Path(location)
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{location}: a model folder needs model_index.json (diffusers layout)")
        if not path.exists() and (location.count("/") != 1 or location.startswith((".", "/"))):
            raise ModelLoadError(f"{location}: no such model folder or file")
        try:
            pipe = self._diffusers(self.pipeline).from_pretrained(location)
        except OSError as exc:
            raise ModelLoadError(f"{location}: not a local path and not reachable as a hub id ({exc})") from None
        return self._from_pipeline(pipe, model_name(location))

    def _from_pipeline(self, pipe, name: str) -> LoadedModel:  # noqa: ANN001
        return DiTModel(self.info.name, name, pipe.transformer, pipe.vae, [pipe.text_encoder], [pipe.tokenizer],
                        dict(pipe.scheduler.config))

    def _from_single_files(self, cfg: TrainConfig) -> LoadedModel:
        """The transformer as one file (its release's or ComfyUI's key layout: diffusers converts either), a `vae`
        file over the folder's."""
        if not cfg.pretrained_model_config:
            raise ModelLoadError(f"pretrained_model_config: a single-file {self.info.label} model needs a local "
                                 "diffusers folder for its configs and tokenizer")
        folder = cfg.pretrained_model_config
        try:
            transformer = self._diffusers(self.transformer_class).from_single_file(
                cfg.pretrained_model_name_or_path, config=folder, subfolder="transformer")
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{cfg.pretrained_model_name_or_path}: not a {self.info.label} transformer file "
                                 f"for this config ({exc})") from None
        pipe = self._diffusers(self.pipeline).from_pretrained(folder, transformer=transformer)
        if cfg.vae:
            pipe.vae = self._diffusers(self.vae_class).from_single_file(cfg.vae, config=folder, subfolder="vae")
        return self._from_pipeline(pipe, model_name(cfg.pretrained_model_name_or_path))

    @staticmethod
    def _diffusers(name: str):  # noqa: ANN205
        import diffusers

        return getattr(diffusers, name)

    @abstractmethod
    def blocks(self, model: LoadedModel) -> list[nn.Module]:
        """The transformer's blocks in the order they run (fp8 storage and block swap act on these)."""

    @abstractmethod
    def training_velocity(self, model: LoadedModel, cfg: TrainConfig, noisy: torch.Tensor, sigmas: torch.Tensor,
                          text: TextOut) -> torch.Tensor:
        """The transformer's velocity (ε − x0) for latents [B, C, H, W] at noise levels σ [B], as trained."""

    def flow_metadata(self, cfg: TrainConfig) -> dict[str, Any]:
        """The ss_* values of the flow-matching settings every DiT family writes (as sd-scripts' FLUX script)."""
        keys = ("weighting_scheme", "logit_mean", "logit_std", "mode_scale", "timestep_sampling", "sigmoid_scale",
                "model_prediction_type", "discrete_flow_shift")
        return {"ss_v2": False, **{f"ss_{key}": getattr(cfg, key) for key in keys}}

    def default_text_encoders(self, cfg: TrainConfig) -> tuple[int, ...]:
        return ()  # the text encoder stays frozen (as in ai-toolkit and musubi-tuner), unless a family says otherwise

    def place(self, model: LoadedModel, cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> None:
        for module in (model.denoiser, model.vae, *model.text_encoders):
            module.requires_grad_(False)
            module.to(device, dtype)
        kind = stored_as(cfg)
        quantize_linears(self.blocks(model), kind)
        if not cfg.fp8_base_unet and not cfg.train_text_encoder:  # fp8_base_unet: the transformer only
            quantize_linears(model.text_encoders, kind)
        if cfg.blocks_to_swap:
            swap_blocks(self.blocks(model), cfg.blocks_to_swap, device)

    def park_text_encoders(self, model: LoadedModel) -> None:
        """Once captions are cached the text encoders leave the GPU; previews then read prompts on the CPU."""
        for encoder in model.text_encoders:
            encoder.to("cpu")

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
        return per_sample(loss, batch)

    def render_settings(self, cfg: TrainConfig) -> RenderSettings:
        return self.settings_for(cfg.resolution_wh, "euler", self.text_settings(cfg))  # Euler is their sampler

    def real_cfg_scale(self, guidance: float) -> float | None:
        """The CFG scale a prompt's --l asks for, None for sampling without a negative (1 is no guidance)."""
        return guidance if guidance > 1 else None

    @torch.no_grad()
    def render(self, model: LoadedModel, spec: PromptSpec, *, seed: int, settings: RenderSettings) -> Image.Image:
        """Euler over the model's own schedule with its default steps (a family rendering this way provides
        `_encode(model, captions)` and `predict(model, latents, σ, text)`)."""
        width = (spec.width or settings.default_size[0]) // 16 * 16
        height = (spec.height or settings.default_size[1]) // 16 * 16
        scale = self.real_cfg_scale(settings.cfg_for(spec))
        positive = self._encode(model, [spec.prompt])
        negative = self._encode(model, [spec.negative]) if scale is not None else None

        def velocity(latents: torch.Tensor, level: torch.Tensor, text: TextOut) -> torch.Tensor:
            return self.predict(model, latents, level, text)

        return self.euler(model, velocity, positive, negative, scale or 1.0, (width, height),
                          settings.steps_for(spec), seed)

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
                v = self.guided(v, velocity(latents, level, negative).float(), cfg_scale)
            latents = latents + (following - sigma) * v
        pixels = self.decode(model, latents)[0].float()
        array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)

    def guided(self, positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
        """The velocity real CFG steps with, from the prompt's and the negative's."""
        return negative + scale * (positive - negative)

    def vae_scale(self, model: LoadedModel) -> int:
        return 2 ** (len(model.vae.config.block_out_channels) - 1)

    def noise_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        """The shape of one image's latents as the denoiser takes them, at this size in pixels."""
        scale = self.vae_scale(model)
        return (1, model.vae.config.latent_channels, height // scale, width // scale)

    def inference_sigmas(self, model: LoadedModel, steps: int, image_tokens: int) -> torch.Tensor:
        """Noise levels of an inference run: the model folder's scheduler config says how they are shifted."""
        schedule = scheduler_schedule(model.scheduler_config)
        sigmas = euler_sigmas(steps, schedule_mu(schedule, image_tokens), schedule.shift)
        terminal = model.scheduler_config.get("shift_terminal")
        return torch.cat([stretch_to_terminal(sigmas[:-1], terminal), sigmas[-1:]]) if terminal else sigmas

    def decode(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        """Latents → pixels in [-1, 1] (undoing encode_images' scale and shift)."""
        vae = model.vae
        decoded = latents / vae.config.scaling_factor + vae.config.shift_factor
        return vae.decode(decoded.to(next(vae.parameters()).dtype)).sample
