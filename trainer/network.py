"""The network: which modules of a model get an adapter (kohya names), and the adapters as one module.

Each adapter (trainer/adapters: LoRA/LoCon, LoHa, LoKr, each optionally with DoRA) starts with a zero update, so a
fresh network leaves the model's output unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from trainer.adapters import ADAPTERS, Adapter, by_module, from_tensors
from trainer.config import Family
from trainer.families import FAMILIES
from trainer.kohya_names import te_prefixes, text_encoder_name, unet_name
from trainer.network_spec import NetworkSpec

TRANSFORMER_CLASSES = frozenset({"Transformer2DModel"})
CONV_BLOCK_CLASSES = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})
TEXT_CLASSES = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP"})


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


def _is_1x1(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def unet_candidates(unet: nn.Module, family: Family, with_conv: bool) -> list[Candidate]:
    config = getattr(unet, "config", None)
    layers = getattr(config, "layers_per_block", 2)
    layers = layers if isinstance(layers, int) else layers[0]
    up_types = list(getattr(config, "up_block_types", []))
    up_with_attention = {i for i, kind in enumerate(up_types) if "CrossAttn" in kind}
    out: list[Candidate] = []
    for path, module in unet.named_modules():
        kind = type(module).__name__
        conv_block = kind in CONV_BLOCK_CLASSES and with_conv
        if kind not in TRANSFORMER_CLASSES and not conv_block:
            continue
        for child_path, child in module.named_modules():
            if not child_path:
                continue
            is_3x3 = isinstance(child, nn.Conv2d) and not _is_1x1(child)
            if not (isinstance(child, nn.Linear) or _is_1x1(child) or (conv_block and is_3x3)):
                continue
            name = unet_name(f"{path}.{child_path}", family, layers, up_with_attention)
            out.append(Candidate(name, child, "unet", is_3x3))
    return out


def named_candidates(unet: nn.Module, family: Family, paths: tuple[str, ...]) -> list[Candidate]:
    """UNet modules chosen by their diffusers path (conv_in, time_embedding.linear_1 …)."""
    modules = dict(unet.named_modules())
    out = []
    for path in paths:
        module = modules.get(path)
        if isinstance(module, nn.Linear | nn.Conv2d):
            out.append(Candidate(unet_name(path, family), module, "unet", isinstance(module, nn.Conv2d)
                                 and not _is_1x1(module)))
    return out


def text_candidates(text_encoders: list[nn.Module], family: Family) -> list[Candidate]:
    out: list[Candidate] = []
    for index, (prefix, encoder) in enumerate(zip(te_prefixes(family), text_encoders, strict=False)):
        for path, module in encoder.named_modules():
            if type(module).__name__ not in TEXT_CLASSES:
                continue
            for child_path, child in module.named_modules():
                if isinstance(child, nn.Linear):
                    name = text_encoder_name(prefix, f"{path}.{child_path}")
                    out.append(Candidate(name, child, f"te{index + 1}", False))
    return out


class LoRANetwork(nn.Module):
    def __init__(self, modules: Iterable[tuple[Candidate, Adapter]]) -> None:
        super().__init__()
        self.groups: dict[str, list[str]] = {}
        self.loras = nn.ModuleDict()
        for candidate, lora in modules:
            self.loras[candidate.name] = lora
            self.groups.setdefault(candidate.group, []).append(candidate.name)

    @classmethod
    def create(cls, unet: nn.Module, text_encoders: list[nn.Module], family: Family, *, dim: int, alpha: float,
               conv_dim: int | None = None, conv_alpha: float = 1.0, train_unet: bool = True,
               train_text_encoder: bool = True) -> LoRANetwork:
        """An SD network (other families build theirs from their own candidates with `from_candidates`)."""
        candidates: list[Candidate] = []
        if train_text_encoder:
            candidates += text_candidates(text_encoders, family)
        if train_unet:
            candidates += unet_candidates(unet, family, with_conv=conv_dim is not None)
        return cls.from_candidates(candidates, dim=dim, alpha=alpha, conv_dim=conv_dim, conv_alpha=conv_alpha)

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
    def from_weights(cls, weights: dict[str, torch.Tensor], unet: nn.Module, text_encoders: list[nn.Module],
                     family: Family, multiplier: float = 1.0) -> tuple[LoRANetwork, list[str]]:
        """An SD network shaped like a kohya state dict, with its weights; and the names matching no module."""
        candidates = text_candidates(text_encoders, family) + unet_candidates(unet, family, with_conv=True)
        candidates += named_candidates(unet, family, FAMILIES[family].lycoris_names)
        return cls.from_weights_candidates(weights, candidates, multiplier)

    @classmethod
    def from_weights_candidates(cls, weights: dict[str, torch.Tensor], candidates: list[Candidate],
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
                del self.loras[name]

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
            params = [p for name in names for p in self.loras[name].parameters()]
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
        return dict(self.loras.items())  # type: ignore[arg-type]
