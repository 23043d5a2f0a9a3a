"""The torch side of a model family: what the loop, saving, sampling and generation ask of a base model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

    from trainer.families import FamilyInfo
    from trainer.job.config import TrainConfig
    from trainer.job.prompts import PromptSpec
    from trainer.networks.network import Candidate

class ModelLoadError(RuntimeError):
    """A base model that cannot be loaded from where the config says; the message names the place and why."""


def model_name(location: str) -> str:
    """ss_sd_model_name as sd-scripts writes it: a local file or folder's name (with its extension), else the hub id."""
    path = Path(location)
    return path.name if path.exists() else location


TextOut = tuple[torch.Tensor | None, ...]  # per caption along dim 0; what the denoiser is conditioned on


class LoadedModel(Protocol):
    family: str
    name: str
    vae: nn.Module
    text_encoders: list[nn.Module]

    @property
    def denoiser(self) -> nn.Module: ...


@dataclass(frozen=True)
class RenderSettings:
    """What a preview or a test generation takes besides the prompt line."""

    default_size: tuple[int, int]
    sampler: str
    text: dict[str, Any] = field(default_factory=dict)  # the family's text_keys as the run had them
    steps: int = 20  # when a prompt line gives no --s (the family's render_defaults)
    cfg_scale: float = 7.0  # when a prompt line gives no --l

    def steps_for(self, spec: PromptSpec) -> int:
        return spec.steps if spec.steps is not None else self.steps

    def cfg_for(self, spec: PromptSpec) -> float:
        return spec.cfg_scale if spec.cfg_scale is not None else self.cfg_scale

    def text_value(self, key: str, default: Any = None) -> Any:
        return self.text.get(key, default)


class ModelFamily(ABC):
    def __init__(self, info: FamilyInfo) -> None:
        self.info = info

    @abstractmethod
    def load(self, cfg: TrainConfig) -> LoadedModel:
        """The base model a config names (folder, single file or hub id)."""

    @abstractmethod
    def load_location(self, location: str, *, v_parameterization: bool = False) -> LoadedModel:
        """A base model for generation, from where it lives."""

    @abstractmethod
    def place(self, model: LoadedModel, cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> None:
        """Freeze, move and cast the base model for training (attention kernels, fp8 storage …)."""

    @abstractmethod
    def lora_targets(self, model: LoadedModel, *, with_conv: bool, denoiser: bool = True,
                     text: bool | tuple[int, ...] = True, network_args: list[str] | None = None,
                     names: tuple[str, ...] = ()) -> list[Candidate]:
        """The modules a LoRA may wrap, with their kohya names; `text` selects the text encoders (True: all);
        `names` adds denoiser modules by path (LyCORIS's full preset: the family's `lycoris_names`)."""

    def kohya_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A LoRA state dict in another layout (diffusers/PEFT) → kohya keys; kohya files pass through."""
        return weights

    def default_text_encoders(self, cfg: TrainConfig) -> tuple[int, ...]:
        """Which text encoders a network trains when the text encoder is trained at all."""
        return tuple(range(self.info.text_encoders))

    @abstractmethod
    def encode_images(self, model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] → the latents the denoiser is trained on (scaled, shifted)."""

    @abstractmethod
    def encode_text(self, model: LoadedModel, captions: list[str], cfg: TrainConfig) -> TextOut: ...

    @abstractmethod
    def loss(self, model: LoadedModel, cfg: TrainConfig, latents: torch.Tensor, text: TextOut, batch: dict,
             generator: torch.Generator) -> torch.Tensor:
        """Per-sample loss [B] for one batch: noise, the denoiser's prediction and its target."""

    @abstractmethod
    def metadata(self, cfg: TrainConfig, model_facts: dict[str, Any]) -> dict[str, Any]:
        """ss_* and modelspec.* values this family writes (over the common ones)."""

    @abstractmethod
    def render(self, model: LoadedModel, spec: PromptSpec, *, seed: int, settings: RenderSettings) -> Image.Image:
        """One image from the in-memory model; the same spec and seed give the same image."""

    def render_settings(self, cfg: TrainConfig) -> RenderSettings:
        return self.settings_for(cfg.resolution_wh, cfg.sample_sampler, self.text_settings(cfg))

    def settings_for(self, size: tuple[int, int], sampler: str, text: dict[str, Any] | None = None) -> RenderSettings:
        """Render settings with the family's own step and guidance defaults (a distilled model needs few steps)."""
        return RenderSettings(size, sampler, text or {}, **self.info.render_defaults)

    def text_settings(self, cfg: TrainConfig) -> dict[str, Any]:
        """The config values that change what the text encoders give: part of the text-cache key and of a render."""
        return {key: getattr(cfg, key) for key in self.info.text_keys}

    def park_text_encoders(self, model: LoadedModel) -> None:
        """Frozen text encoders whose outputs are cached: free their GPU memory (if the family can render without
        them there). SD's are small and stay."""
        return None

    def facts(self, model: LoadedModel) -> dict[str, Any]:
        """What the metadata needs to know about the loaded model (prediction type, variant …)."""
        return {}
