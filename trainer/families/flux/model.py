"""FLUX.1 and Chroma: a double/single-stream transformer trained with flow matching on packed 2×2 latent patches,
T5-XXL (sequence) + CLIP-L (pooled; FLUX only) text, a 16-channel VAE with scaling and shift.

LoRA modules carry sd-scripts' lora_flux names (the original BFL layout): diffusers' split to_q / to_k / to_v are
trained as the one fused `attn_qkv` (and single blocks' q, k, v, proj_mlp as `linear1`), so files are written
exactly as sd-scripts writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from PIL import Image
from torch import nn

from trainer.families.base import ModelLoadError, RenderSettings, TextOut, model_name
from trainer.families.dit import DiTFamily, DiTModel
from trainer.families.flux.names import kohya_unet_names, peft_to_kohya, text_targets
from trainer.families.text_files import load_text_encoder_file
from trainer.job.args import arg_value
from trainer.job.config import TrainConfig
from trainer.job.prompts import PromptSpec
from trainer.networks.network import Candidate


@dataclass
class FluxModel(DiTModel):
    """text_encoders: [CLIP-L, T5] for FLUX.1, [T5] for Chroma."""

    @property
    def clip(self) -> nn.Module | None:
        return self.text_encoders[0] if len(self.text_encoders) == 2 else None

    @property
    def t5(self) -> nn.Module:
        return self.text_encoders[-1]

    @property
    def guidance_embeds(self) -> bool:
        return bool(getattr(self.transformer.config, "guidance_embeds", False))


class Flux(DiTFamily):
    """FLUX.1 (dev and schnell); Chroma below changes what differs."""

    pipeline = "FluxPipeline"
    model_type = "flux"  # sd-scripts' ss_model_type
    always_masked = False  # whether previews read T5 with its padding masked whatever the run did

    # Loading ---------------------------------------------------------------------------------------------------
    def _from_pipeline(self, pipe, name: str) -> FluxModel:  # noqa: ANN001
        fuse_frozen_projections(pipe.transformer)
        encoders, tokenizers = self._text_parts(pipe)
        return FluxModel(self.info.name, name, pipe.transformer, pipe.vae, encoders, tokenizers,
                         dict(pipe.scheduler.config))

    def _text_parts(self, pipe) -> tuple[list, list]:  # noqa: ANN001
        """[CLIP-L, T5] and their tokenizers."""
        return [pipe.text_encoder, pipe.text_encoder_2], [pipe.tokenizer, pipe.tokenizer_2]

    def _from_single_files(self, cfg: TrainConfig) -> FluxModel:
        """sd-scripts' layout: the transformer as one BFL-format file, clip_l / t5xxl / ae beside it; the configs
        and tokenizers come from a local diffusers folder (pretrained_model_config)."""
        if not cfg.pretrained_model_config:
            raise ModelLoadError("pretrained_model_config: a single-file FLUX model needs a local diffusers folder "
                                 "for its configs and tokenizers")
        from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
        from safetensors.torch import load_file

        from trainer.families.flux.checkpoint import from_bfl

        folder = cfg.pretrained_model_config
        transformer = FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(folder,
                                                                                            subfolder="transformer"))
        try:
            state = from_bfl(load_file(cfg.pretrained_model_name_or_path), transformer.state_dict())
        except (KeyError, ValueError) as exc:
            raise ModelLoadError(f"{cfg.pretrained_model_name_or_path}: not a FLUX.1 transformer file for this "
                                 f"config ({exc})") from None
        transformer.load_state_dict(state)
        pipe = FluxPipeline.from_pretrained(folder, transformer=transformer)
        if cfg.ae:
            pipe.vae = AutoencoderKL.from_single_file(cfg.ae, config=folder, subfolder="vae")
        model = self._from_pipeline(pipe, model_name(cfg.pretrained_model_name_or_path))
        for file, encoder in ((cfg.clip_l, model.clip), (cfg.t5xxl, model.t5)):
            if file and encoder is not None:
                load_text_encoder_file(encoder, file)
        return model

    def blocks(self, model: FluxModel) -> list[nn.Module]:
        return [*model.transformer.transformer_blocks, *model.transformer.single_transformer_blocks]

    # Networks --------------------------------------------------------------------------------------------------
    def default_text_encoders(self, cfg: TrainConfig) -> tuple[int, ...]:
        """CLIP-L only, as sd-scripts; T5 when network_args has train_t5xxl=True."""
        t5 = (self.info.text_encoders - 1,) if cfg.network_flag("train_t5xxl") else ()
        return (0, *t5)

    def lora_targets(self, model: FluxModel, *, with_conv: bool, denoiser: bool = True,
                     text: bool | tuple[int, ...] = True, network_args: list[str] | None = None,
                     names: tuple[str, ...] = ()) -> list[Candidate]:
        out: list[Candidate] = []
        chosen = set(range(len(model.text_encoders))) if text is True else set(text or ())
        for index, encoder in enumerate(model.text_encoders):
            if index in chosen:
                out += text_targets(encoder, f"te{index + 1}", encoder is model.clip)
        if denoiser:
            blocks = arg_value(network_args, "train_blocks") or "all"
            grouped: dict[str, list[tuple[int, nn.Linear]]] = {}
            modules = dict(model.transformer.named_modules())
            for path, (name, part) in kohya_unet_names(model.transformer).items():
                if blocks != "all" and f"_{blocks}_blocks_" not in name:
                    continue
                grouped.setdefault(name, []).append((part, modules[path]))
            for name, parts in grouped.items():
                linears = tuple(m for _, m in sorted(parts, key=lambda p: p[0]))
                out.append(Candidate(name, linears[0], "unet", False, linears if len(linears) > 1 else ()))
        return out

    def kohya_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not any(".lora_A." in key for key in weights):
            return weights
        return peft_to_kohya(weights)

    # Training --------------------------------------------------------------------------------------------------
    def t5_length(self, model: FluxModel, cfg_length: int | None) -> int:
        if cfg_length:
            return cfg_length
        return 512 if model.guidance_embeds else 256  # schnell: 256

    def encode_text(self, model: FluxModel, captions: list[str], cfg: TrainConfig) -> TextOut:
        return self._encode(model, captions, self.t5_length(model, cfg.t5xxl_max_token_length),
                            cfg.apply_t5_attn_mask)

    def _encode(self, model: FluxModel, captions: list[str], t5_length: int, mask: bool) -> TextOut:
        device = next(model.t5.parameters()).device
        pooled = None
        if model.clip is not None:
            ids = model.tokenizers[0](captions, padding="max_length", max_length=77, truncation=True,
                                      return_tensors="pt").input_ids.to(device)
            pooled = model.clip(ids).pooler_output
        tokens = model.tokenizers[-1](captions, padding="max_length", max_length=t5_length, truncation=True,
                                      return_tensors="pt")
        attention = tokens.attention_mask.to(device)
        hidden = model.t5(tokens.input_ids.to(device), attention_mask=attention if mask else None)[0]
        return hidden, pooled, attention

    def training_velocity(self, model: FluxModel, cfg: TrainConfig, noisy: torch.Tensor, sigmas: torch.Tensor,
                          text: TextOut) -> torch.Tensor:
        return self.predict(model, noisy, sigmas, text, cfg.guidance_scale, cfg.apply_t5_attn_mask)

    def predict(self, model: FluxModel, noisy: torch.Tensor, sigmas: torch.Tensor, text: TextOut,
                guidance: float, mask_t5: bool) -> torch.Tensor:
        """The transformer's velocity for latents [B, C, H, W] at noise levels σ [B]."""
        hidden, pooled, attention = text
        batch_size, channels, height, width = noisy.shape
        dtype = next(model.transformer.parameters()).dtype
        device = noisy.device
        kwargs: dict[str, Any] = {
            "hidden_states": pack(noisy).to(dtype), "timestep": sigmas.to(dtype),
            "encoder_hidden_states": hidden.to(device, dtype), "img_ids": image_ids(height, width).to(device, dtype),
            "txt_ids": torch.zeros(hidden.shape[1], 3, device=device, dtype=dtype),
        }
        keys = torch.cat([attention.bool(), torch.ones(batch_size, kwargs["img_ids"].shape[0], device=device,
                                                       dtype=torch.bool)], dim=1) if mask_t5 else None
        kwargs.update(self.conditioning(model, pooled, keys, guidance, batch_size, device, dtype))
        return unpack(model.transformer(**kwargs).sample, height, width, channels)

    def conditioning(self, model: FluxModel, pooled: torch.Tensor, keys: torch.Tensor | None, guidance: float,
                     batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """FLUX.1's: CLIP's pooled vector, the guidance embedding (dev), T5's padding mask through the attention."""
        out: dict[str, Any] = {"pooled_projections": pooled.to(device, dtype)}
        if model.guidance_embeds:
            out["guidance"] = torch.full((batch_size,), guidance, device=device, dtype=torch.float32)
        if keys is not None:
            out["joint_attention_kwargs"] = {"attention_mask": keys[:, None, None, :]}
        return out

    # Files and previews ----------------------------------------------------------------------------------------
    def facts(self, model: FluxModel) -> dict[str, Any]:
        return {"guidance_embeds": model.guidance_embeds}

    def metadata(self, cfg: TrainConfig, model_facts: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.flow_metadata(cfg), "ss_base_model_version": "flux1", "ss_model_type": self.model_type,
            "ss_apply_t5_attn_mask": cfg.apply_t5_attn_mask, "ss_guidance_scale": cfg.guidance_scale,
            "modelspec.architecture": self.architecture(model_facts),
            "modelspec.implementation": "https://github.com/black-forest-labs/flux",
        }

    def architecture(self, model_facts: dict[str, Any]) -> str:
        return "flux-1-dev/lora" if model_facts.get("guidance_embeds", True) else "flux-1-schnell/lora"

    def real_cfg(self, spec: PromptSpec, settings: RenderSettings) -> bool:
        """FLUX.1 is guidance-distilled: real CFG only when a negative prompt asks for it."""
        return bool(spec.negative) and settings.cfg_for(spec) > 1

    @torch.no_grad()
    def render(self, model: FluxModel, spec: PromptSpec, *, seed: int, settings: RenderSettings) -> Image.Image:
        """Euler over FLUX's shifted schedule. FLUX.1 takes guidance through its embedding (--g, 3.5 by default)
        and real CFG only when a negative prompt is given; Chroma always uses real CFG (--l)."""
        width = (spec.width or settings.default_size[0]) // 16 * 16
        height = (spec.height or settings.default_size[1]) // 16 * 16
        length = self.t5_length(model, settings.text_value("t5xxl_max_token_length"))
        mask = settings.text_value("apply_t5_attn_mask", False) or self.always_masked
        positive = self._encode(model, [spec.prompt], length, mask)
        negative = self._encode(model, [spec.negative], length, mask) if self.real_cfg(spec, settings) else None
        guidance = spec.guidance if spec.guidance is not None else 3.5

        def velocity(latents: torch.Tensor, level: torch.Tensor, text: TextOut) -> torch.Tensor:
            return self.predict(model, latents, level, text, guidance, mask)

        return self.euler(model, velocity, positive, negative, settings.cfg_for(spec), (width, height),
                          settings.steps_for(spec), seed)


class Chroma(Flux):
    """Chroma: FLUX.1's blocks without CLIP-L and without a guidance input; T5 is read with its padding masked, and
    it is sampled with real CFG."""

    pipeline = "ChromaPipeline"
    model_type = "chroma"
    always_masked = True

    def _text_parts(self, pipe) -> tuple[list, list]:  # noqa: ANN001
        return [pipe.text_encoder], [pipe.tokenizer]

    def _from_single_files(self, cfg: TrainConfig) -> FluxModel:
        raise ModelLoadError(f"{cfg.pretrained_model_name_or_path}: single files are read for FLUX.1 only; give a "
                             "diffusers folder")

    def default_text_encoders(self, cfg: TrainConfig) -> tuple[int, ...]:
        return (0,) if cfg.network_flag("train_t5xxl") else ()

    def t5_length(self, model: FluxModel, cfg_length: int | None) -> int:
        return cfg_length or 512

    def conditioning(self, model: FluxModel, pooled: torch.Tensor, keys: torch.Tensor | None, guidance: float,
                     batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        return {"attention_mask": keys}

    def architecture(self, model_facts: dict[str, Any]) -> str:
        return "chroma/lora"

    def real_cfg(self, spec: PromptSpec, settings: RenderSettings) -> bool:
        return True


def fuse_frozen_projections(transformer: nn.Module) -> None:
    """Run the frozen projections as sd-scripts' FLUX model does: each stream's q, k and v as one Linear (diffusers'
    own fused attention path), and a single block's q, k, v and MLP input as one Linear, its `linear1`. The split
    modules are dropped so each weight is held once; `linear1` is the module a LoRA's `single_blocks_{i}_linear1`
    attaches to, so the adapter adds to the whole product once. LoRA names and the file layout do not change."""
    from diffusers.models.attention import AttentionModuleMixin

    for module in transformer.modules():
        if isinstance(module, AttentionModuleMixin) and module._supports_qkv_fusion and not module.fused_projections:
            module.fuse_projections()
            for split in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
                if split in module._modules:
                    delattr(module, split)
    for block in getattr(transformer, "single_transformer_blocks", ()):
        if isinstance(block.proj_mlp, nn.Linear):
            qkv, mlp = block.attn.to_qkv, block.proj_mlp
            block.linear1 = nn.Linear(qkv.in_features, qkv.out_features + mlp.out_features, bias=qkv.bias is not None,
                                      device=qkv.weight.device, dtype=qkv.weight.dtype).requires_grad_(False)
            with torch.no_grad():
                block.linear1.weight.copy_(torch.cat([qkv.weight, mlp.weight]))
                if qkv.bias is not None:
                    block.linear1.bias.copy_(torch.cat([qkv.bias, mlp.bias]))
            del block.attn.to_qkv, block.proj_mlp  # then plain attributes: the parts are no modules of their own
            parts = SplitOutput(block.linear1, (qkv.out_features, mlp.out_features))
            block.attn.to_qkv, block.proj_mlp = parts.part(0), parts.part(1)


class SplitOutput:
    """One frozen Linear whose output columns are read by several callers with the same input (a single block's
    q/k/v and its MLP input): the first to run computes the whole product, split once, and each takes its piece.
    Split, not sliced per caller: the backward joins the pieces' gradients in one concatenation."""

    def __init__(self, linear: nn.Linear, sizes: tuple[int, ...]) -> None:
        self.linear = linear
        self.sizes = sizes
        self._last: tuple[torch.Tensor, tuple[torch.Tensor, ...], int] | None = None  # (input, pieces, pieces read)

    def piece(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.linear(x).split(self.sizes, dim=-1), 0)
        _, pieces, read = self._last
        self._last = None if read + 1 == len(self.sizes) else (x, pieces, read + 1)
        return pieces[index]

    def part(self, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return partial(self.piece, index=index)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] → [B, (H/2)(W/2), 4C]: 2×2 patches, row-major."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int, channels: int) -> torch.Tensor:
    b = tokens.shape[0]
    grid = tokens.view(b, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, channels, height, width)


def image_ids(height: int, width: int) -> torch.Tensor:
    """Position ids (0, row, column) of each packed patch of a [H, W] latent."""
    rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
