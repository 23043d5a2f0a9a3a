"""Test generation: a base model plus LoRA files named in the prompt with A1111's `<lora:name:weight>`."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from trainer.config import ConfigError
from trainer.models import BaseModel
from trainer.network import LoRANetwork
from trainer.prompts import PromptSpec, extract_lora_tags
from trainer.sampling import render


def load_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def attach_loras(model: BaseModel, prompt: str, loras: dict[str, str | Path]) -> tuple[str, list[LoRANetwork]]:
    """Strips the tags from the prompt and hooks each named LoRA in with its weight. Unknown names are an error."""
    cleaned, tags = extract_lora_tags(prompt)
    unknown = [name for name, _ in tags if name not in loras]
    if unknown:
        raise ConfigError([f'prompt: no LoRA called "{name}" (known: {", ".join(sorted(loras)) or "none"})'
                           for name in unknown])
    networks = []
    device = model.unet.device
    for name, weight in tags:
        network, unmatched = LoRANetwork.from_weights(load_lora_file(loras[name]), model.unet, model.text_encoders,
                                                      model.family, multiplier=weight)
        if unmatched and not network.loras:
            raise ConfigError([f'prompt: LoRA "{name}" does not fit this base model ({len(unmatched)} modules)'])
        network.to(device)
        network.attach()
        networks.append(network)
    return cleaned, networks


def generate(model: BaseModel, spec: PromptSpec, loras: dict[str, str | Path], *, seed: int, count: int = 1,
             default_size: tuple[int, int] = (512, 512), sampler: str = "euler_a") -> list[Image.Image]:
    prompt, networks = attach_loras(model, spec.prompt, loras)
    try:
        plain = PromptSpec(prompt, spec.negative, spec.width, spec.height, spec.seed, spec.cfg_scale, spec.steps,
                           spec.sampler)
        return [render(model, plain, seed=seed + k, default_size=default_size, default_sampler=sampler)
                for k in range(count)]
    finally:
        for network in reversed(networks):
            network.detach()
