"""Qwen-Image's torch side: diffusers' QwenImageTransformer2DModel and QwenImagePipeline parts.

Text is the last hidden layer of Qwen2.5-VL under the pipeline's image-description system prompt; the system part
is cut off (its length is measured with the model's own tokenizer, 34 tokens for Qwen's) and each caption keeps its
own length with a mask. Latents come from Wan's VAE as one frame, normalized per channel, and reach the transformer
as 2×2 patches (64 values per token). True CFG rescales the guided velocity back to the conditional one's norm per
token, as the pipeline does.

LoRA files are written in the layout ComfyUI loads for Qwen-Image without conversion: `diffusion_model.` + the
diffusers module path (`transformer_blocks.0.attn.to_q`) with lora_down / lora_up / alpha. ComfyUI's Qwen-Image
model uses diffusers' module names, so its loader maps these keys one to one; ai-toolkit writes the same paths and
diffusers' Qwen-Image loader reads them. musubi-tuner's `lora_unet_…` and PEFT files are read too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.families.base import TextOut
from trainer.families.dit import DiTFamily, DiTModel
from trainer.job.config import TrainConfig
from trainer.networks.diffusers_layout import PREFIX, DiffusersLayout
from trainer.networks.network import Candidate

# the pipeline's prompt template; what precedes the caption is the system turn, dropped from the hidden states
TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
            "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
MAX_TOKENS = 1024  # of the caption itself
# every Linear of a block but its modulation (img_mod / txt_mod: dim → 6·dim, left out as musubi-tuner does)
TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
           "attn.add_v_proj", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj",
           "txt_mlp.net.2")
LAYOUT = DiffusersLayout(joined=("transformer_blocks", "to_q", "to_k", "to_v", "to_out", "add_q_proj", "add_k_proj",
                                 "add_v_proj", "to_add_out", "img_mlp", "txt_mlp", "img_mod", "txt_mod"))


class QwenImage(DiTFamily):
    pipeline = "QwenImagePipeline"
    transformer_class = "QwenImageTransformer2DModel"
    vae_class = "AutoencoderKLQwenImage"

    def blocks(self, model: DiTModel) -> list[nn.Module]:
        return list(model.transformer.transformer_blocks)

    # Networks --------------------------------------------------------------------------------------------------
    def lora_targets(self, model: DiTModel, *, with_conv: bool, denoiser: bool = True,
                     text: bool | tuple[int, ...] = True, network_args: list[str] | None = None,
                     names: tuple[str, ...] = ()) -> list[Candidate]:
        if not denoiser:
            return []
        modules = dict(model.transformer.named_modules())
        return [Candidate(PREFIX + path, modules[path], "unet", False)
                for index in range(len(model.transformer.transformer_blocks)) for target in TARGETS
                if isinstance(modules.get(path := f"transformer_blocks.{index}.{target}"), nn.Linear)]

    def kohya_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return LAYOUT.file_weights(weights)

    # Latents ---------------------------------------------------------------------------------------------------
    def _normalization(self, model: DiTModel, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = model.vae.config
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(like.device, like.dtype)
        return mean, std

    def encode_images(self, model: DiTModel, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] → one-frame latents [B, 16, H/8, W/8], normalized per channel."""
        latents = model.vae.encode(pixels.unsqueeze(2)).latent_dist.mean[:, :, 0]
        mean, std = self._normalization(model, latents)
        return (latents - mean) / std

    def decode(self, model: DiTModel, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._normalization(model, latents)
        frames = (latents * std + mean).unsqueeze(2)
        return model.vae.decode(frames.to(next(model.vae.parameters()).dtype)).sample[:, :, 0]

    def vae_scale(self, model: DiTModel) -> int:
        return 2 ** len(model.vae.config.temperal_downsample)

    def noise_shape(self, model: DiTModel, width: int, height: int) -> tuple[int, ...]:
        scale = self.vae_scale(model)
        return (1, model.vae.config.z_dim, height // scale, width // scale)

    # Text ------------------------------------------------------------------------------------------------------
    def encode_text(self, model: DiTModel, captions: list[str], cfg: TrainConfig) -> TextOut:
        return self._encode(model, captions)

    def _encode(self, model: DiTModel, captions: list[str]) -> TextOut:
        """Hidden states [B, L, D] of the caption tokens (system prompt dropped) and their mask [B, L], cut to the
        longest caption."""
        tokenizer, encoder = model.tokenizers[0], model.text_encoders[0]
        device = next(encoder.parameters()).device
        system = len(tokenizer(TEMPLATE.split("{}")[0]).input_ids)
        tokens = tokenizer([TEMPLATE.format(caption) for caption in captions], max_length=MAX_TOKENS + system,
                           padding=True, truncation=True, return_tensors="pt")
        mask = tokens.attention_mask.to(device)
        hidden = encoder(input_ids=tokens.input_ids.to(device), attention_mask=mask,
                         output_hidden_states=True).hidden_states[-1]
        hidden, mask = hidden[:, system:], mask[:, system:]  # right-padded: the system turn leads every row
        longest = int(mask.sum(dim=1).max())
        return hidden[:, :longest], mask[:, :longest]

    # Training and sampling -------------------------------------------------------------------------------------
    def training_velocity(self, model: DiTModel, cfg: TrainConfig, noisy: torch.Tensor, sigmas: torch.Tensor,
                          text: TextOut) -> torch.Tensor:
        return self.predict(model, noisy, sigmas, text)

    def predict(self, model: DiTModel, noisy: torch.Tensor, sigmas: torch.Tensor, text: TextOut) -> torch.Tensor:
        hidden, mask = text
        batch, channels, height, width = noisy.shape
        dtype = next(model.transformer.parameters()).dtype
        out = model.transformer(
            hidden_states=pack(noisy).to(dtype), encoder_hidden_states=hidden.to(noisy.device, dtype),
            encoder_hidden_states_mask=mask.to(noisy.device), timestep=sigmas.to(dtype),
            img_shapes=[[(1, height // 2, width // 2)]] * batch, return_dict=False)[0]
        return unpack(out, channels, height, width)

    def guided(self, positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
        """True CFG, then each token's velocity rescaled to the conditional one's norm (the pipeline's rule)."""
        combined = negative + scale * (positive - negative)
        channels, height, width = positive.shape[1:]
        norms = [pack(v).norm(dim=-1, keepdim=True) for v in (positive, combined)]
        return unpack(pack(combined) * norms[0] / norms[1], channels, height, width)

    # Files -----------------------------------------------------------------------------------------------------
    def metadata(self, cfg: TrainConfig, model_facts: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.flow_metadata(cfg), "ss_base_model_version": "qwen_image",
            "modelspec.architecture": "qwen-image/lora", "modelspec.implementation": "https://github.com/QwenLM/Qwen-Image",
        }


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] → [B, H/2 · W/2, C · 4]: one token per 2×2 patch, channels outermost (the pipeline's order)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    b = tokens.shape[0]
    patches = tokens.view(b, height // 2, width // 2, channels, 2, 2)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)
