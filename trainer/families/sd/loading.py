"""Stable Diffusion base models: loading (diffusers folder, single file, hub id) and text encoding (clip_skip,
long prompts)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from torch import nn

from trainer.families import folder_family
from trainer.families.base import ModelLoadError, model_name

CHUNK = 75  # CLIP's 77 positions less BOS and EOS


@dataclass
class BaseModel:
    family: str
    name: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[nn.Module]
    tokenizers: list
    scheduler_config: dict
    v_prediction: bool
    extra: dict = field(default_factory=dict)

    @property
    def denoiser(self) -> nn.Module:
        return self.unet

    @cached_property
    def noise_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler.from_config(self.scheduler_config)


def _single_file_is_sdxl(path: Path) -> bool:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return any(k.startswith("conditioner.embedders.1") for k in handle.keys())  # noqa: SIM118
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return any(k.startswith("conditioner.embedders.1") for k in state)


def load_pipeline(location: str, sdxl: bool | None = None, single_file_config: str | None = None):
    """A diffusers pipeline from a local diffusers folder, a single .safetensors/.ckpt file, or a hub id."""
    path = Path(location)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{location}: a model folder needs model_index.json (diffusers layout)")
        family = folder_family(str(path))
        if family is not None and family not in ("sd15", "sd2", "sdxl"):
            raise ModelLoadError(f"{location}: a {family} model folder, not Stable Diffusion")
        is_xl = family == "sdxl" or "text_encoder_2" in json.loads(index.read_text())
        cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
        return cls.from_pretrained(path) if is_xl else cls.from_pretrained(path, safety_checker=None)
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise ModelLoadError(f"{location}: a single-file model must be .safetensors or .ckpt")
        is_xl = _single_file_is_sdxl(path) if sdxl is None else sdxl
        cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
        kwargs = {"config": single_file_config} if single_file_config else {}
        try:
            return cls.from_single_file(str(path), **kwargs)
        except OSError as exc:
            raise ModelLoadError(f"{location}: the single file needs its diffusers config, which could not "
                                 f"be fetched offline; pass a local config folder ({exc})") from None
    if location.count("/") == 1 and not location.startswith((".", "/")):
        try:
            pipe_cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
            return pipe_cls.from_pretrained(location)
        except OSError as exc:
            raise ModelLoadError(f"{location}: not a local path and not reachable as a hub id ({exc})") from None
    raise ModelLoadError(f"{location}: no such model folder or file")


def load_base_model(location: str, *, v2: bool = False, v_parameterization: bool = False, sdxl: bool | None = None,
                    vae: str | None = None, single_file_config: str | None = None) -> BaseModel:
    pipe = load_pipeline(location, sdxl=sdxl, single_file_config=single_file_config)
    is_xl = isinstance(pipe, StableDiffusionXLPipeline)
    scheduler_config = dict(pipe.scheduler.config)
    v_pred = v_parameterization or scheduler_config.get("prediction_type") == "v_prediction"
    scheduler_config["prediction_type"] = "v_prediction" if v_pred else "epsilon"
    family: str = "sdxl" if is_xl else ("sd2" if v2 or _looks_like_sd2(pipe.text_encoder) else "sd15")
    replacement = load_vae(vae) if vae else pipe.vae
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if is_xl else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if is_xl else [])
    return BaseModel(family, model_name(location), pipe.unet, replacement, encoders, tokenizers,
                     scheduler_config, v_pred)


def _looks_like_sd2(text_encoder: nn.Module) -> bool:
    return getattr(text_encoder.config, "hidden_act", "") == "gelu"


def load_vae(location: str) -> AutoencoderKL:
    path = Path(location)
    if path.is_file():
        return AutoencoderKL.from_single_file(str(path))
    if (path / "config.json").is_file():
        return AutoencoderKL.from_pretrained(path)
    if (path / "vae" / "config.json").is_file():
        return AutoencoderKL.from_pretrained(path, subfolder="vae")
    raise ModelLoadError(f"vae {location}: no VAE file or folder there")


def _transformer(encoder: nn.Module) -> nn.Module:
    return getattr(encoder, "text_model", encoder)


def tokenize(tokenizer, captions: list[str], max_token_length: int | None) -> torch.Tensor:
    """Token ids in 77-wide chunks: [B, n_chunks, 77], each chunk BOS + 75 tokens + EOS."""
    length = max_token_length or CHUNK
    ids = tokenizer(captions, padding="max_length", truncation=True, max_length=length + 2,
                    return_tensors="pt").input_ids
    if length == CHUNK:
        return ids.unsqueeze(1)
    first = torch.full((ids.shape[0], 1), tokenizer.bos_token_id, dtype=ids.dtype)
    last = torch.full_like(first, tokenizer.eos_token_id)
    chunks = [torch.cat([first, ids[:, start : start + CHUNK], last], dim=1) for start in range(1, length + 1, CHUNK)]
    return torch.stack(chunks, dim=1)


def _join_chunks(states: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """[B*n, 77, D] → [B, 75n + 2, D]: the first BOS, every chunk's 75 inner states, the last EOS."""
    if n_chunks == 1:
        return states
    batch = states.shape[0] // n_chunks
    states = states.view(batch, n_chunks, *states.shape[1:])
    parts = [states[:, 0, :1]] + [states[:, k, 1:-1] for k in range(n_chunks)] + [states[:, -1, -1:]]
    return torch.cat(parts, dim=1)


def encode_text(model: BaseModel, captions: list[str], clip_skip: int | None = None,
                max_token_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encoder hidden states [B, L, D] (and SDXL's pooled embedding [B, D2])."""
    device = model.text_encoders[0].device
    states, pooled = [], None
    for index, (tokenizer, encoder) in enumerate(zip(model.tokenizers, model.text_encoders, strict=True)):
        ids = tokenize(tokenizer, captions, max_token_length).to(device)
        n_chunks = ids.shape[1]
        output = encoder(ids.flatten(0, 1), output_hidden_states=True)
        if model.family == "sdxl":
            hidden = output.hidden_states[-2]  # SDXL conditions on the penultimate layer, without the final norm
            if index == 1:
                pooled = output.text_embeds.view(-1, n_chunks, output.text_embeds.shape[-1])[:, 0]
        else:
            hidden = output.hidden_states[-(clip_skip or 1)]
            hidden = _transformer(encoder).final_layer_norm(hidden)
        states.append(_join_chunks(hidden, n_chunks))
    return torch.cat(states, dim=-1), pooled


def sdxl_time_ids(original_sizes: list[tuple[int, int]], crops: list[tuple[int, int]],
                  targets: list[tuple[int, int]]) -> torch.Tensor:
    """SDXL's micro-conditioning: (orig h, orig w, crop top, crop left, target h, target w) per sample."""
    rows = [[oh, ow, ct, cl, th, tw] for (oh, ow), (ct, cl), (th, tw) in zip(original_sizes, crops, targets,
                                                                            strict=True)]
    return torch.tensor(rows, dtype=torch.float32)
