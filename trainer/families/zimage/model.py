"""Z-Image's torch side: diffusers' ZImageTransformer2DModel and pipeline parts, Qwen3 text through its chat
template (the second-to-last hidden layer, padding dropped), flow matching on 2×2 patches.

LoRA files are written in the layout ComfyUI loads for Z-Image without conversion, which is also the one
ai-toolkit writes and diffusers' Z-Image loader reads: `diffusion_model.` + the diffusers module path
(`layers.0.attention.to_q`) with `lora_down` / `lora_up` / `alpha` tensors. ComfyUI maps these names onto its
fused `attention.qkv` itself; musubi-tuner's `lora_unet_…` files are read too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from trainer.families.base import ModelLoadError, RenderSettings, TextOut, model_name
from trainer.families.dit import DiTFamily
from trainer.families.text_files import load_text_encoder_file
from trainer.job.config import TrainConfig
from trainer.job.prompts import PromptSpec
from trainer.networks.adapters import split_key
from trainer.networks.network import Candidate

PREFIX = "diffusion_model."
BLOCK_GROUPS = ("noise_refiner", "context_refiner", "layers")  # in the order they run
TARGETS = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0", "feed_forward.w1",
           "feed_forward.w2", "feed_forward.w3", "adaLN_modulation.0")
MAX_TEXT_TOKENS = 512
PEFT_NAMES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}
# names in musubi-tuner's `lora_unet_` keys whose own underscores are not path separators
_JOINED = ("to_q", "to_k", "to_v", "to_out", "feed_forward", "adaLN_modulation", "noise_refiner", "context_refiner")


@dataclass
class ZImageModel:
    family: str
    name: str
    transformer: nn.Module
    vae: nn.Module
    text_encoders: list[nn.Module]  # [Qwen3]
    tokenizers: list
    scheduler_config: dict = field(default_factory=dict)

    @property
    def denoiser(self) -> nn.Module:
        return self.transformer


class ZImage(DiTFamily):
    # Loading ---------------------------------------------------------------------------------------------------
    def load(self, cfg: TrainConfig) -> ZImageModel:
        if Path(cfg.pretrained_model_name_or_path).is_file():
            model = self._from_single_files(cfg)
        else:
            model = self.load_location(cfg.pretrained_model_name_or_path)
        if cfg.qwen3:
            load_text_encoder_file(model.text_encoders[0], cfg.qwen3)
        if getattr(cfg, "training_adapter", None):
            merge_adapter(self, model, cfg.training_adapter)
        return model

    def load_location(self, location: str, *, v_parameterization: bool = False) -> ZImageModel:
        from diffusers import ZImagePipeline

        path = Path(location)
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{location}: a model folder needs model_index.json (diffusers layout)")
        if not path.exists() and (location.count("/") != 1 or location.startswith((".", "/"))):
            raise ModelLoadError(f"{location}: no such model folder or file")
        try:
            pipe = ZImagePipeline.from_pretrained(location)
        except OSError as exc:
            raise ModelLoadError(f"{location}: not a local path and not reachable as a hub id ({exc})") from None
        return self._from_pipeline(pipe, model_name(location))

    def _from_pipeline(self, pipe, name: str) -> ZImageModel:  # noqa: ANN001
        return ZImageModel(self.info.name, name, pipe.transformer, pipe.vae, [pipe.text_encoder], [pipe.tokenizer],
                           dict(pipe.scheduler.config))

    def _from_single_files(self, cfg: TrainConfig) -> ZImageModel:
        """The transformer as one file (Z-Image's release or ComfyUI's split file, either key layout), with the
        configs, tokenizer and the other parts from a local diffusers folder; `qwen3` and `vae` files over those."""
        if not cfg.pretrained_model_config:
            raise ModelLoadError("pretrained_model_config: a single-file Z-Image model needs a local diffusers "
                                 "folder for its configs and tokenizer")
        from diffusers import AutoencoderKL, ZImagePipeline, ZImageTransformer2DModel

        folder = cfg.pretrained_model_config
        try:
            transformer = ZImageTransformer2DModel.from_single_file(cfg.pretrained_model_name_or_path,
                                                                    config=folder, subfolder="transformer")
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{cfg.pretrained_model_name_or_path}: not a Z-Image transformer file for this "
                                 f"config ({exc})") from None
        pipe = ZImagePipeline.from_pretrained(folder, transformer=transformer)
        if cfg.vae:
            pipe.vae = AutoencoderKL.from_single_file(cfg.vae, config=folder, subfolder="vae")
        return self._from_pipeline(pipe, model_name(cfg.pretrained_model_name_or_path))

    def blocks(self, model: ZImageModel) -> list[nn.Module]:
        return [block for group in BLOCK_GROUPS for block in getattr(model.transformer, group)]

    # Networks --------------------------------------------------------------------------------------------------
    def default_text_encoders(self, cfg: TrainConfig) -> tuple[int, ...]:
        return ()  # Qwen3 is not trained (as in ai-toolkit and musubi-tuner); pre-flight says so

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
        chats = [tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                               add_generation_prompt=True, enable_thinking=True)
                 for caption in captions]
        tokens = tokenizer(chats, padding="max_length", max_length=MAX_TEXT_TOKENS, truncation=True,
                           return_tensors="pt")
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
            "ss_base_model_version": self.info.name, "ss_v2": False, "ss_network_module": cfg.network_module,
            "ss_weighting_scheme": cfg.weighting_scheme, "ss_logit_mean": cfg.logit_mean,
            "ss_logit_std": cfg.logit_std, "ss_mode_scale": cfg.mode_scale,
            "ss_timestep_sampling": cfg.timestep_sampling, "ss_sigmoid_scale": cfg.sigmoid_scale,
            "ss_model_prediction_type": cfg.model_prediction_type, "ss_discrete_flow_shift": cfg.discrete_flow_shift,
            "modelspec.architecture": f"{architecture}/lora",
            "modelspec.implementation": "https://github.com/Tongyi-MAI/Z-Image",
        }

    def render_settings(self, cfg: TrainConfig) -> RenderSettings:
        return self.settings_for(cfg.resolution_wh, "euler")

    @torch.no_grad()
    def render(self, model: ZImageModel, spec: PromptSpec, *, seed: int, settings: RenderSettings) -> Image.Image:
        """Euler over the model's shifted schedule. --l is Z-Image's guidance (as its pipeline: the prediction
        moves by l × (positive − negative), 0 = off, Turbo's default); --s defaults to 9 (Turbo) or 28 (Base)."""
        width = (spec.width or settings.default_size[0]) // 16 * 16
        height = (spec.height or settings.default_size[1]) // 16 * 16
        guidance = settings.cfg_for(spec)
        positive = self._encode(model, [spec.prompt])
        negative = self._encode(model, [spec.negative]) if guidance > 0 else None

        def velocity(latents: torch.Tensor, level: torch.Tensor, text: TextOut) -> torch.Tensor:
            return self.predict(model, latents, level, text)

        return self.euler(model, velocity, positive, negative, guidance + 1, (width, height),
                          settings.steps_for(spec), seed)


def file_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Z-Image LoRA files in other layouts → lorabake's (`diffusion_model.` + diffusers path, lora_down / lora_up):
    PEFT's lora_A / lora_B under `transformer.`, `diffusion_model.` or no prefix (no alpha: scale 1), and
    musubi-tuner's `lora_unet_layers_0_attention_to_q`."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        module, name = split_key(key)
        if module.startswith("lora_unet_"):
            module = _musubi_path(module.removeprefix("lora_unet_"))
        module = PREFIX + module.removeprefix(PREFIX).removeprefix("transformer.")
        out[f"{module}.{PEFT_NAMES.get(name, name)}"] = tensor
    for key in [k for k in out if k.endswith(".lora_down.weight")]:
        out.setdefault(key.replace(".lora_down.weight", ".alpha"), torch.tensor(float(out[key].shape[0])))
    return out


def _musubi_path(name: str) -> str:
    dotted = name.replace("_", ".")
    for joined in _JOINED:
        dotted = dotted.replace(joined.replace("_", "."), joined)
    return dotted


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
