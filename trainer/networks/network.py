"""The network: the adapters over a model's chosen modules (kohya names), as one module.

Each adapter (trainer/networks/adapters: LoRA/LoCon, LoHa, LoKr, each optionally with DoRA) starts with a zero
update, so a fresh network leaves the model's output unchanged. Which modules a family offers, and their names, is
the family's `lora_targets`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from trainer.networks.adapters import ADAPTERS, Adapter, by_module, from_tensors
from trainer.networks.spec import NetworkSpec


@dataclass(frozen=True)
class Candidate:
    name: str
    module: nn.Linear | nn.Conv2d
    group: str  # "unet", "te1", "te2"
    is_conv3x3: bool
    parts: tuple[nn.Linear, ...] = ()  # a fused kohya module over these modules (module is the first)

    @property
    def targets(self) -> nn.Module | tuple[nn.Linear, ...]:
        return self.parts if self.parts else self.module


def _slot(name: str) -> str:
    """A module name as a ModuleDict key: dotted file layouts (`diffusion_model.layers.0…`) cannot be one."""
    return name.replace(".", "/")


class LoRANetwork(nn.Module):
    def __init__(self, modules: Iterable[tuple[Candidate, Adapter]]) -> None:
        super().__init__()
        self.groups: dict[str, list[str]] = {}
        self.loras = nn.ModuleDict()
        for candidate, lora in modules:
            self.loras[_slot(candidate.name)] = lora
            self.groups.setdefault(candidate.group, []).append(candidate.name)

    @classmethod
    def from_candidates(cls, candidates: list[Candidate], *, dim: int, alpha: float, conv_dim: int | None = None,
                        conv_alpha: float = 1.0, spec: NetworkSpec | None = None) -> LoRANetwork:
        spec = spec or NetworkSpec()
        pairs = []
        for c in candidates:
            rank, scale = (conv_dim, conv_alpha) if c.is_conv3x3 and conv_dim else (dim, alpha)
            pairs.append((c, ADAPTERS[spec.kind].create(c.name, c.targets, rank, scale, spec)))
        return cls(pairs)

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], candidates: list[Candidate],
                                multiplier: float = 1.0) -> tuple[LoRANetwork, list[str]]:
        """Each module of the file as the type it was written as (LoRA, LoHa, LoKr, with or without DoRA)."""
        by_name = {c.name: c for c in candidates}
        pairs, unmatched = [], []
        for name, tensors in sorted(by_module(weights).items()):
            adapter = from_tensors(name, by_name[name].targets, tensors, multiplier) if name in by_name else None
            if adapter is None:
                unmatched.append(name)
            else:
                pairs.append((by_name[name], adapter))
        return cls(pairs), unmatched

    @property
    def trains_text_encoder(self) -> bool:
        """Whether any text-encoder part is left (after lr-0 parts were dropped): only then does the TE need grads."""
        return any(group.startswith("te") for group in self.groups)

    def drop_groups(self, groups: set[str]) -> None:
        """Leave whole parts out (a part with lr 0 is neither trained nor written to the file)."""
        for group in groups & set(self.groups):
            for name in self.groups.pop(group):
                del self.loras[_slot(name)]

    def attach(self) -> None:
        for lora in self.loras.values():
            lora.attach()

    def detach(self) -> None:
        for lora in self.loras.values():
            lora.detach()

    def set_multiplier(self, value: float) -> None:
        for lora in self.loras.values():
            lora.multiplier = value

    def param_groups(self, lrs: dict[str, float]) -> list[dict]:
        """One optimizer group per part; a part whose lr is 0 is frozen and left out."""
        groups = []
        for group, names in self.groups.items():
            params = [p for name in names for p in self.loras[_slot(name)].parameters()]
            lr = lrs[group]
            for p in params:
                p.requires_grad_(lr > 0)
            if lr > 0:
                groups.append({"params": params, "lr": lr, "name": group})
        return groups

    def load_kohya(self, weights: dict[str, torch.Tensor]) -> list[str]:
        """Copy matching weights in (network_weights); returns the names that were not in the file or do not fit."""
        modules = by_module(weights)
        return [name for name, adapter in self.adapters.items() if not adapter.load_tensors(modules.get(name, {}))]

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, adapter in self.adapters.items():
            for key, tensor in adapter.kohya_tensors().items():
                value = tensor.detach().to("cpu")
                out[f"{name}.{key}"] = value.to(dtype) if dtype is not None else value.clone()
        return out

    @property
    def adapters(self) -> dict[str, Adapter]:
        return {slot.replace("/", "."): lora for slot, lora in self.loras.items()}  # type: ignore[misc]
