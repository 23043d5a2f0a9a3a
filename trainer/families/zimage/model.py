"""Z-Image's torch side: diffusers' ZImageTransformer2DModel and pipeline parts, Qwen3 text through its chat
template (the second-to-last hidden layer, padding dropped), flow matching on 2×2 patches.

LoRA files are written in the layout ComfyUI loads for Z-Image without conversion, which is also the one
ai-toolkit writes and diffusers' Z-Image loader reads: `diffusion_model.` + the diffusers module path
(`layers.0.attention.to_q`) with `lora_down` / `lora_up` / `alpha` tensors. ComfyUI maps these names onto its
fused `attention.qkv` itself; musubi-tuner's `lora_unet_…` files are read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.families.base import ModelLoadError, TextOut
from trainer.families.dit import DiTFamily, DiTModel
from trainer.families.qwen3 import chat_tokens
from trainer.job.config import TrainConfig
from trainer.networks.diffusers_layout import PREFIX, DiffusersLayout
from trainer.networks.network import Candidate

BLOCK_GROUPS = ("noise_refiner", "context_refiner", "layers")  # in the order they run
TARGETS = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0", "feed_forward.w1",
           "feed_forward.w2", "feed_forward.w3", "adaLN_modulation.0")
LAYOUT = DiffusersLayout(joined=("to_q", "to_k", "to_v", "to_out", "feed_forward", "adaLN_modulation",
                                  "noise_refiner", "context_refiner"))


ZImageModel = DiTModel


class ZImage(DiTFamily):
    pipeline = "ZImagePipeline"
    transformer_class = "ZImageTransformer2DModel"
    text_encoder_file = "qwen3"

    def load(self, cfg: TrainConfig) -> ZImageModel:
        model = super().load(cfg)
        if getattr(cfg, "training_adapter", None):
            merge_adapter(self, model, cfg.training_adapter)
        return model

    def blocks(self, model: ZImageModel) -> list[nn.Module]:
        return [block for group in BLOCK_GROUPS for block in getattr(model.transformer, group)]

    # Networks --------------------------------------------------------------------------------------------------
    def lora_targets(self, model: ZImageModel, *, with_conv: bool, denoiser: bool = True,
                     text: bool | tuple[int, ...] = True, network_args: list[str] | None = None,
                     names: tuple[str, ...] = ()) -> list[Candidate]:
        if not denoiser:
            return []
        modules = dict(model.transformer.named_modules())
        out = []
        for group in BLOCK_GROUPS:
            for index in range(len(getattr(model.transformer, group))):
                for target in TARGETS:
                    path = f"{group}.{index}.{target}"
                    if isinstance(modules.get(path), nn.Linear):
                        out.append(Candidate(PREFIX + path, modules[path], "unet", False))
        return out

    def kohya_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return file_layout(weights)

    # Training --------------------------------------------------------------------------------------------------
    def encode_text(self, model: ZImageModel, captions: list[str], cfg: TrainConfig) -> TextOut:
        return self._encode(model, captions)

    def _encode(self, model: ZImageModel, captions: list[str]) -> TextOut:
        """Hidden states [B, L, D] of the second-to-last layer and the mask of real tokens [B, L], cut to the
        longest caption (the transformer reads each caption's real tokens only)."""
        tokenizer, encoder = model.tokenizers[0], model.text_encoders[0]
        device = next(encoder.parameters()).device
        tokens = chat_tokens(tokenizer, captions, thinking=True)
        mask = tokens.attention_mask.to(device)
        hidden = encoder(input_ids=tokens.input_ids.to(device), attention_mask=mask.bool(),
                         output_hidden_states=True).hidden_states[-2]
        longest = int(mask.sum(dim=1).max())
        return hidden[:, :longest], mask[:, :longest]

    def training_velocity(self, model: ZImageModel, cfg: TrainConfig, noisy: torch.Tensor, sigmas: torch.Tensor,
                          text: TextOut) -> torch.Tensor:
        return self.predict(model, noisy, sigmas, text)

    def predict(self, model: ZImageModel, noisy: torch.Tensor, sigmas: torch.Tensor, text: TextOut) -> torch.Tensor:
        """Z-Image is called with the clean fraction t = 1 − σ and predicts x0 − ε: the velocity is its negative."""
        hidden, mask = text
        dtype = next(model.transformer.parameters()).dtype
        lengths = [int(n) for n in mask.sum(dim=1).tolist()]  # real tokens first: the template is right-padded
        captions = [states[:length].to(noisy.device, dtype) for states, length in zip(hidden, lengths, strict=True)]
        latents = list(noisy.to(dtype).unsqueeze(2).unbind(0))
        out = model.transformer(latents, (1 - sigmas).to(dtype), captions, return_dict=False)[0]
        return -torch.stack(out).squeeze(2)

    # Files and previews ----------------------------------------------------------------------------------------
    def metadata(self, cfg: TrainConfig, model_facts: dict[str, Any]) -> dict[str, Any]:
        architecture = "z-image-turbo" if self.info.name == "zimage_turbo" else "z-image"
        return {
            **self.flow_metadata(cfg), "ss_base_model_version": self.info.name,
            "modelspec.architecture": f"{architecture}/lora",
            "modelspec.implementation": "https://github.com/Tongyi-MAI/Z-Image",
        }

    def real_cfg_scale(self, guidance: float) -> float | None:
        """--l is Z-Image's own guidance, as its pipeline takes it: the prediction moves by l × (positive −
        negative), so 0 is off (Turbo's default) and l is CFG at scale l + 1."""
        return guidance + 1 if guidance > 0 else None



def file_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Z-Image LoRA files in other layouts (PEFT, musubi-tuner's) → lorabake's."""
    return LAYOUT.file_weights(weights)


def merge_adapter(family: ZImage, model: ZImageModel, path: str) -> None:
    """A de-distillation adapter (any Z-Image LoRA file) added into the transformer's weights for training; it is
    not part of the network, so the trained file leaves it out."""
    from trainer.networks.convert import merged_update
    from trainer.networks.network import LoRANetwork
    from trainer.output.generate import load_lora_file

    if not Path(path).is_file():
        raise ModelLoadError(f"training_adapter {path}: no such file")
    network, unmatched = LoRANetwork.from_weights(file_layout(load_lora_file(path)),
                                                  family.lora_targets(model, with_conv=False))
    if unmatched or not network.adapters:
        raise ModelLoadError(f"training_adapter {path}: not a Z-Image LoRA for this model "
                             f"({len(unmatched)} modules match nothing, e.g. {unmatched[:1]})")
    targets = {c.name: c.module for c in family.lora_targets(model, with_conv=False)}
    with torch.no_grad():
        for name, adapter in network.adapters.items():
            weight = targets[name].weight
            weight += merged_update(adapter).to(weight.dtype)
