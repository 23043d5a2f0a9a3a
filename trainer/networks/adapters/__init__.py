"""Adapter types by kind: one entry here and one module per type (see trainer/networks/spec.py for the choice).

A file may mix types module by module (LyCORIS writes what each module is); `kind_of` reads it per module.
"""

from __future__ import annotations

import torch

from trainer.networks.adapters.base import Adapter, Target
from trainer.networks.adapters.loha import LoHaModule
from trainer.networks.adapters.lokr import LoKrModule
from trainer.networks.adapters.lora import LoRAModule

ADAPTERS: dict[str, type[Adapter]] = {cls.kind: cls for cls in (LoRAModule, LoHaModule, LoKrModule)}


def kind_of(tensors: dict[str, torch.Tensor]) -> str | None:
    """The adapter type one module's tensors (names without the module prefix) are written as."""
    return next((kind for kind, cls in ADAPTERS.items() if any(m in tensors for m in cls.marker)), None)


def from_tensors(name: str, target: Target | tuple[Target, ...], tensors: dict[str, torch.Tensor],
                 multiplier: float = 1.0) -> Adapter | None:
    kind = kind_of(tensors)
    return ADAPTERS[kind].from_tensors(name, target, tensors, multiplier) if kind else None


def file_rank(weights: dict[str, torch.Tensor]) -> int | None:
    """The rank (network_dim) a file was trained with, whatever its type."""
    for key, tensor in weights.items():
        if key.endswith((".lora_down.weight", ".hada_w1_b", ".lokr_w1_b", ".lokr_w2_b")):
            return int(tensor.shape[0])
    return None


def split_key(key: str) -> tuple[str, str]:
    """A file key → (module name, tensor name). The tensor name is the last part (`alpha`, `hada_w1_a`, …), or the
    last two when it ends in `.weight` (`lora_down.weight`); module names may hold dots (`diffusion_model.layers.0…`
    in the layouts DiT families use) or not (`lora_unet_…`)."""
    head, _, last = key.rpartition(".")
    if last == "weight":
        head, _, middle = head.rpartition(".")
        last = f"{middle}.weight"
    return head, last


def by_module(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A LoRA state dict grouped per module: {module name: {tensor name: tensor}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        name, rest = split_key(key)
        out.setdefault(name, {})[rest] = tensor
    return out


__all__ = ["ADAPTERS", "Adapter", "LoHaModule", "LoKrModule", "LoRAModule", "by_module", "file_rank", "from_tensors",
           "kind_of"]
