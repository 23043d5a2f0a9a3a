"""LoRA / LoCon network: low-rank adapters hooked into the forward of existing Linear and Conv2d modules.

Forward of a wrapped module: W·x + up(down(x)) · multiplier · alpha / dim. down starts Kaiming-uniform,
up starts at zero, so a fresh network leaves the model's output unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import Family
from trainer.kohya_names import te_prefixes, text_encoder_name, unet_name

TRANSFORMER_CLASSES = frozenset({"Transformer2DModel"})
CONV_BLOCK_CLASSES = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})
TEXT_CLASSES = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP"})


class LoRAModule(nn.Module):
    """One kohya module. With several targets (FLUX's fused qkv, diffusers' split to_q/to_k/to_v), the targets
    share one input and their outputs, in order, are the fused module's output: one down, one tall up whose row
    slices feed each target."""

    def __init__(self, name: str, target: nn.Linear | nn.Conv2d | tuple[nn.Linear, ...], dim: int, alpha: float,
                 multiplier: float = 1.0) -> None:
        super().__init__()
        targets = target if isinstance(target, tuple) else (target,)
        first = targets[0]
        self.lora_name = name
        self.dim = dim
        self.multiplier = multiplier
        if isinstance(first, nn.Conv2d):
            self.lora_down = nn.Conv2d(first.in_channels, dim, first.kernel_size, first.stride,
                                       first.padding, bias=False)
            self.lora_up = nn.Conv2d(dim, first.out_channels, 1, 1, bias=False)
        else:
            self.lora_down = nn.Linear(first.in_features, dim, bias=False)
            self.lora_up = nn.Linear(dim, sum(t.out_features for t in targets), bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        alpha = float(alpha) if alpha else float(dim)
        self.register_buffer("alpha", torch.tensor(alpha))
        self.scale = alpha / dim
        self._targets = list(targets)  # a list, so the base modules are not registered as children
        self._starts = [0, *accumulate(t.out_features for t in targets[:-1])]  # each part's first row in up
        self._originals: list[Callable[..., torch.Tensor]] = []
        self._chained: list[bool] = []
        self._shared: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, down(input)) while parts read it
        self._uses = 0

    @property
    def target(self) -> nn.Module:
        return self._targets[0]

    def attach(self) -> None:
        # Another adapter may already hook a module (several LoRAs at once); chain onto it.
        for index, target in enumerate(self._targets):
            self._chained.append("forward" in target.__dict__)
            self._originals.append(target.forward)
            target.forward = self.forward if len(self._targets) == 1 else partial(self._forward_part, index)

    def detach(self) -> None:
        for target, original, chained in zip(self._targets, self._originals, self._chained, strict=True):
            if chained:
                target.forward = original
            else:
                del target.forward  # the class's own forward shows through again
        self._originals, self._chained = [], []

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        base = self._originals[0](x, *args, **kwargs)
        delta = self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype)))
        return base + (delta * (self.multiplier * self.scale)).to(base.dtype)

    def _forward_part(self, index: int, x: torch.Tensor) -> torch.Tensor:
        base = self._originals[index](x)
        start = self._starts[index]
        rows = self.lora_up.weight[start : start + self._targets[index].out_features]
        delta = F.linear(self._shared_down(x), rows)
        return base + (delta * (self.multiplier * self.scale)).to(base.dtype)

    def _shared_down(self, x: torch.Tensor) -> torch.Tensor:
        """down(x) once for all parts that read the same input (q, k, v): kept until the last part took it."""
        if self._shared is not None and self._shared[0] is x:
            hidden, self._uses = self._shared[1], self._uses + 1
        else:
            hidden, self._uses = self.lora_down(x.to(self.lora_down.weight.dtype)), 1
            self._shared = (x, hidden)
        if self._uses >= len(self._targets):
            self._shared = None
        return hidden


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
    def __init__(self, modules: Iterable[tuple[Candidate, LoRAModule]]) -> None:
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
                        conv_alpha: float = 1.0) -> LoRANetwork:
        pairs = []
        for c in candidates:
            rank, scale = (conv_dim, conv_alpha) if c.is_conv3x3 and conv_dim else (dim, alpha)
            pairs.append((c, LoRAModule(c.name, c.targets, rank, scale)))
        return cls(pairs)

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], unet: nn.Module, text_encoders: list[nn.Module],
                     family: Family, multiplier: float = 1.0) -> tuple[LoRANetwork, list[str]]:
        """An SD network shaped like a kohya state dict, with its weights; and the names matching no module."""
        candidates = text_candidates(text_encoders, family) + unet_candidates(unet, family, with_conv=True)
        return cls.from_weights_candidates(weights, candidates, multiplier)

    @classmethod
    def from_weights_candidates(cls, weights: dict[str, torch.Tensor], candidates: list[Candidate],
                                multiplier: float = 1.0) -> tuple[LoRANetwork, list[str]]:
        by_name = {c.name: c for c in candidates}
        names = sorted({key.split(".", 1)[0] for key in weights})
        pairs, unmatched = [], []
        for name in names:
            down = weights.get(f"{name}.lora_down.weight")
            if name not in by_name or down is None:
                unmatched.append(name)
                continue
            alpha = weights.get(f"{name}.alpha")
            rank = down.shape[0]
            lora = LoRAModule(name, by_name[name].targets, rank, float(alpha) if alpha is not None else rank,
                              multiplier)
            lora.lora_down.weight.data.copy_(down)
            lora.lora_up.weight.data.copy_(weights[f"{name}.lora_up.weight"])
            pairs.append((by_name[name], lora))
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
        """Copy matching weights in (network_weights); returns the names that were not in the file."""
        missing = []
        for name, lora in self.loras.items():
            down = weights.get(f"{name}.lora_down.weight")
            if down is None or down.shape != lora.lora_down.weight.shape:
                missing.append(name)
                continue
            lora.lora_down.weight.data.copy_(down)
            lora.lora_up.weight.data.copy_(weights[f"{name}.lora_up.weight"])
        return missing

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, lora in self.loras.items():
            for key, tensor in (("lora_down.weight", lora.lora_down.weight), ("lora_up.weight", lora.lora_up.weight),
                                ("alpha", lora.alpha)):
                value = tensor.detach().to("cpu")
                out[f"{name}.{key}"] = value.to(dtype) if dtype is not None else value.clone()
        return out
