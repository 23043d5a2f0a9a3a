"""FLUX.2 [klein]'s torch side: diffusers' Flux2Transformer2DModel and Flux2KleinPipeline parts.

The DiT reads latents patchified 2×2 (32 → 128 channels) and normalized by the VAE's batch-norm statistics, one
token per patch; text is Qwen3's hidden states 9, 18 and 27 side by side for the whole padded 512-token prompt.
LoRA files use the original (BFL) module names with sd-scripts' `lora_unet_` prefix, as musubi-tuner writes them:
ComfyUI loads these against its FLUX.2 model as they are, and diffusers' FLUX.2 loader converts them. diffusers'
split q/k/v (and the text stream's add_*_proj) are trained as one fused `qkv` module, like FLUX.1's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.families.base import TextOut
from trainer.families.dit import DiTFamily, DiTModel
from trainer.families.qwen3 import chat_tokens
from trainer.job.config import TrainConfig
from trainer.networks.adapters import split_key
from trainer.networks.names import UNET_PREFIX, to_kohya
from trainer.networks.network import Candidate
from trainer.networks.peft import peft_to_fused
from trainer.training.flow import euler_sigmas, time_shift

TEXT_LAYERS = (9, 18, 27)
# BFL name → the diffusers modules it fuses, per block kind
DOUBLE = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn.proj": ("attn.to_out.0",),
          "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
          "txt_attn.proj": ("attn.to_add_out",), "img_mlp.0": ("ff.linear_in",), "img_mlp.2": ("ff.linear_out",),
          "txt_mlp.0": ("ff_context.linear_in",), "txt_mlp.2": ("ff_context.linear_out",)}
SINGLE = {"linear1": ("attn.to_qkv_mlp_proj",), "linear2": ("attn.to_out",)}
BLOCKS = (("transformer_blocks", "double_blocks", DOUBLE), ("single_transformer_blocks", "single_blocks", SINGLE))
# diffusers module path inside a block → (BFL name, part index), per block kind
PARTS = {group: (bfl_group, {path: (bfl, part) for bfl, paths in table.items() for part, path in enumerate(paths)})
         for group, bfl_group, table in BLOCKS}
PEFT_NAMES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


Flux2Model = DiTModel


class Flux2(DiTFamily):
    latent_patch = 1  # the latents are patchified already: one token per latent pixel

    pipeline = "Flux2KleinPipeline"
    transformer_class = "Flux2Transformer2DModel"
    vae_class = "AutoencoderKLFlux2"
    text_encoder_file = "qwen3"

    def blocks(self, model: Flux2Model) -> list[nn.Module]:
        return [*model.transformer.transformer_blocks, *model.transformer.single_transformer_blocks]

    # Networks --------------------------------------------------------------------------------------------------
    def lora_targets(self, model: Flux2Model, *, with_conv: bool, denoiser: bool = True,
                     text: bool | tuple[int, ...] = True, network_args: list[str] | None = None,
                     names: tuple[str, ...] = ()) -> list[Candidate]:
        if not denoiser:
            return []
        modules = dict(model.transformer.named_modules())
        out = []
        for group, bfl_group, table in BLOCKS:
            for index in range(len(getattr(model.transformer, group))):
                for bfl, paths in table.items():
                    parts = tuple(modules[f"{group}.{index}.{path}"] for path in paths)
                    name = to_kohya(UNET_PREFIX, f"{bfl_group}.{index}.{bfl}")
                    out.append(Candidate(name, parts[0], "unet", False, parts if len(parts) > 1 else ()))
        return out

    def kohya_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Other layouts → lorabake's: diffusers' own (PEFT lora_A / lora_B on the split modules, fused here) and
        ai-toolkit's (`diffusion_model.` + BFL names, lora_A / lora_B, no alpha)."""
        if any(key.startswith("transformer.") for key in weights):
            return peft_to_fused(weights, lambda key, path: file_name(path))
        if not any(key.startswith("diffusion_model.") for key in weights):
            return weights
        out: dict[str, torch.Tensor] = {}
        for key, tensor in weights.items():
            module, name = split_key(key.removeprefix("diffusion_model."))
            out[f"{to_kohya(UNET_PREFIX, module)}.{PEFT_NAMES.get(name, name)}"] = tensor
        for key in [k for k in out if k.endswith(".lora_down.weight")]:
            out.setdefault(key.replace(".lora_down.weight", ".alpha"), torch.tensor(float(out[key].shape[0])))
        return out

    # Training --------------------------------------------------------------------------------------------------
    def encode_images(self, model: Flux2Model, pixels: torch.Tensor) -> torch.Tensor:
        latents = model.vae.encode(pixels).latent_dist.mode()
        b, c, h, w = latents.shape
        patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        mean, std = self._bn(model, patches)
        return (patches - mean) / std

    def _bn(self, model: Flux2Model, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = model.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + model.vae.config.batch_norm_eps).to(like.device,
                                                                                                 like.dtype)
        return mean, std

    def encode_text(self, model: Flux2Model, captions: list[str], cfg: TrainConfig) -> TextOut:
        return self._encode(model, captions)

    def _encode(self, model: Flux2Model, captions: list[str]) -> TextOut:
        tokenizer, encoder = model.tokenizers[0], model.text_encoders[0]
        device = next(encoder.parameters()).device
        tokens = chat_tokens(tokenizer, captions, thinking=False)
        states = encoder(input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device),
                         output_hidden_states=True, use_cache=False).hidden_states
        return (torch.cat([states[k] for k in TEXT_LAYERS], dim=-1),)

    def training_velocity(self, model: Flux2Model, cfg: TrainConfig, noisy: torch.Tensor, sigmas: torch.Tensor,
                          text: TextOut) -> torch.Tensor:
        return self.predict(model, noisy, sigmas, text)

    def predict(self, model: Flux2Model, noisy: torch.Tensor, sigmas: torch.Tensor, text: TextOut) -> torch.Tensor:
        (hidden,) = text
        batch, channels, height, width = noisy.shape
        dtype = next(model.transformer.parameters()).dtype
        device = noisy.device
        zero = torch.zeros(1, dtype=torch.long)
        grid = torch.cartesian_prod(zero, torch.arange(height), torch.arange(width), zero)  # (t, h, w, l) per token
        words = torch.cartesian_prod(zero, zero, zero, torch.arange(hidden.shape[1]))
        out = model.transformer(
            hidden_states=noisy.reshape(batch, channels, height * width).permute(0, 2, 1).to(dtype),
            encoder_hidden_states=hidden.to(device, dtype), timestep=sigmas.to(dtype), guidance=None,
            img_ids=grid.to(device), txt_ids=words.to(device), return_dict=False)[0]
        return out.permute(0, 2, 1).reshape(batch, channels, height, width)

    # Files and previews ----------------------------------------------------------------------------------------
    def facts(self, model: Flux2Model) -> dict[str, Any]:
        return {"double_blocks": len(model.transformer.transformer_blocks)}

    def metadata(self, cfg: TrainConfig, model_facts: dict[str, Any]) -> dict[str, Any]:
        size = {5: "4b", 8: "9b"}.get(model_facts.get("double_blocks", 0))
        return {
            **self.flow_metadata(cfg), "ss_base_model_version": "flux2_klein",
            "modelspec.architecture": f"flux-2-klein{'-' + size if size else ''}/lora",
            "modelspec.implementation": "https://github.com/black-forest-labs/flux2",
        }

    def noise_shape(self, model: Flux2Model, width: int, height: int) -> tuple[int, ...]:
        scale = 2 * self.vae_scale(model)
        return (1, 4 * model.vae.config.latent_channels, height // scale, width // scale)

    def inference_sigmas(self, model: Flux2Model, steps: int, image_tokens: int) -> torch.Tensor:
        """FLUX.2's pipeline shifts by an empirical μ fitted over the token count and the number of steps."""
        levels = euler_sigmas(steps, None)
        return torch.cat([time_shift(empirical_mu(image_tokens, steps), levels[:-1]), levels[-1:]])

    def decode(self, model: Flux2Model, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn(model, latents)
        patches = latents * std + mean
        b, c, h, w = patches.shape
        pixels = patches.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)
        return model.vae.decode(pixels.to(next(model.vae.parameters()).dtype)).sample



def file_name(path: str) -> tuple[str, int]:
    """A diffusers module path → (its module name in lorabake's files, its part in that fused module); a module
    with no such name keeps a kohya-style one, so loading reports it as unmatched."""
    group, _, rest = path.partition(".")
    index, _, inner = rest.partition(".")
    bfl_group, parts = PARTS.get(group, ("", {}))
    if inner in parts and index.isdigit():
        bfl, part = parts[inner]
        return to_kohya(UNET_PREFIX, f"{bfl_group}.{index}.{bfl}"), part
    return to_kohya(UNET_PREFIX, path), 0


def empirical_mu(image_tokens: int, steps: int) -> float:
    """FLUX.2's μ: linear in the token count, fitted at 10 and 200 steps and interpolated in the step count (large
    images use the 200-step line)."""
    at_200 = 0.00016927 * image_tokens + 0.45666666
    if image_tokens > 4300:
        return at_200
    at_10 = 8.73809524e-05 * image_tokens + 1.89833333
    slope = (at_200 - at_10) / 190.0
    return slope * steps + at_200 - 200.0 * slope
