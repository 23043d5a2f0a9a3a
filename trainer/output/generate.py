"""Test generation: a base model plus LoRA files named in the prompt with A1111's `<lora:name:weight>`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.families import runtime
from trainer.families.base import LoadedModel
from trainer.job.config import ConfigError, FieldProblem
from trainer.job.prompts import PromptSpec, extract_lora_tags
from trainer.networks.network import LoRANetwork
from trainer.output.previews import render


def load_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def attach_loras(model: LoadedModel, prompt: str, loras: dict[str, str | Path],
                 notes: list[str] | None = None) -> tuple[str, list[LoRANetwork]]:
    """Strips the tags from the prompt and hooks each named LoRA in with its weight. Unknown names are an error, a
    file that fits nothing is an error, and one that fits only in part is reported in `notes`."""
    cleaned, tags = extract_lora_tags(prompt)
    unknown = [name for name, _ in tags if name not in loras]
    if unknown:
        raise ConfigError([FieldProblem("prompt", f'no LoRA called "{name}" (known: '
                                                  f'{", ".join(sorted(loras)) or "none"})') for name in unknown])
    networks = []
    family = runtime(model.family)
    device = next(model.denoiser.parameters()).device
    candidates = family.lora_targets(model, with_conv=True, names=family.info.lycoris_names)
    for name, weight in tags:
        weights = family.kohya_weights(load_lora_file(loras[name]))
        network, unmatched = LoRANetwork.from_weights(weights, candidates, multiplier=weight)
        if unmatched and not network.loras:
            made_for = lora_family(loras[name])
            detail = f"it was made for {made_for}" if made_for else f"none of its {len(unmatched)} modules match"
            raise ConfigError.about("prompt", f'LoRA "{name}" does not fit this {family.info.label} base model '
                                              f"({detail})")
        if unmatched and notes is not None:
            shown = ", ".join(unmatched[:3]) + (" …" if len(unmatched) > 3 else "")
            notes.append(f'LoRA "{name}": {len(unmatched)} of {len(unmatched) + len(network.loras)} modules match '
                         f"nothing in this {family.info.label} base model and were left out ({shown})")
        network.to(device)
        network.attach()
        networks.append(network)
    return cleaned, networks


def lora_family(path: str | Path) -> str | None:
    """What a LoRA file says it was trained on (ss_base_model_version / modelspec.architecture), if it says."""
    if Path(path).suffix != ".safetensors":
        return None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return metadata.get("modelspec.architecture") or metadata.get("ss_base_model_version")


def generate(model: LoadedModel, spec: PromptSpec, loras: dict[str, str | Path], *, seed: int, count: int = 1,
             default_size: tuple[int, int] = (512, 512), sampler: str = "euler_a",
             notes: list[str] | None = None) -> list[Image.Image]:
    """Images for a prompt with `<lora:name:weight>` tags; what did not fit of a LoRA is added to `notes`."""
    prompt, networks = attach_loras(model, spec.prompt, loras, notes)
    try:
        plain = dataclasses.replace(spec, prompt=prompt)
        settings = runtime(model.family).settings_for(default_size, sampler)
        return [render(model, plain, seed=seed + k, settings=settings) for k in range(count)]
    finally:
        for network in reversed(networks):
            network.detach()
