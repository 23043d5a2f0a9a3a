"""Any lorabake LoRA file (LoRA, LoHa, LoKr, with or without DoRA) → a plain LoRA of a chosen rank.

Tools disagree on DoRA: ComfyUI and Forge divide by ‖W‖ instead of ‖W + ΔW‖, and A1111 1.8 ignores `dora_scale`.
A plain LoRA is applied the same way everywhere. The update the file really makes, ΔW' = W' − W (for DoRA
W' = m · (W + ΔW) / ‖W + ΔW‖ per output channel), is merged against the base model's weights and factored by a
truncated SVD: up = U·√S, down = √S·Vᵀ, alpha = rank, so scale 1. What the rank leaves out is reported as the
relative Frobenius error, over all modules and for the worst one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.families import FAMILIES, runtime
from trainer.families.base import LoadedModel
from trainer.networks.adapters.base import Adapter
from trainer.networks.network import LoRANetwork
from trainer.output.saving import save_lora


@dataclass(frozen=True)
class Conversion:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    rank: int
    modules: int
    relative_error: float  # ‖ΔW' − up·down‖ / ‖ΔW'‖ over every module together
    worst_module: str
    worst_error: float

    def report(self) -> dict[str, object]:
        return {"rank": self.rank, "modules": self.modules, "relative_error": self.relative_error,
                "worst_module": self.worst_module, "worst_error": self.worst_error}


def merged_update(adapter: Adapter) -> torch.Tensor:
    """ΔW' = W' − W that the adapter makes at weight 1, as a matrix (rows: outputs; columns: the flattened input)."""
    with torch.no_grad():
        weight = adapter.base_weight()  # on the base model's device; the file's tensors may be elsewhere
        delta = adapter.delta_weight(slice(0, adapter.out_features)).float().flatten(1).to(weight.device)
        if adapter.dora_scale is None:
            return delta
        changed = weight + delta
        norm = changed.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps
        return adapter.dora_scale.detach().float().reshape(-1, 1).to(weight.device) * changed / norm - weight


def factor(update: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(up, down, ‖left out‖²) of the best rank-`rank` approximation of `update`."""
    u, s, vh = torch.linalg.svd(update, full_matrices=False)
    kept = min(rank, s.numel())
    root = s[:kept].sqrt()
    return u[:, :kept] * root, root[:, None] * vh[:kept], float((s[kept:] ** 2).sum())


def to_plain_lora(model: LoadedModel, weights: dict[str, torch.Tensor], metadata: dict[str, str],
                  rank: int) -> Conversion:
    """The file's update on this base model as a plain LoRA of at most `rank` (per module: at most its sides)."""
    if rank < 1:
        raise ValueError("rank must be at least 1")
    family = runtime(model.family)
    candidates = family.lora_targets(model, with_conv=True, names=family.info.lycoris_names)
    network, unmatched = LoRANetwork.from_weights(family.kohya_weights(weights), candidates)
    if unmatched or not network.loras:
        raise ValueError(f"the file does not fit this {family.info.label} base model "
                         f"({len(unmatched)} module(s) match nothing, e.g. {', '.join(unmatched[:3])})")
    tensors: dict[str, torch.Tensor] = {}
    total = left = 0.0
    worst = ("", 0.0)
    used = 0
    for name, adapter in sorted(network.adapters.items()):
        update = merged_update(adapter)
        up, down, missing = factor(update, rank)
        size = float((update**2).sum())
        total, left, used = total + size, left + missing, max(used, up.shape[1])
        error = math.sqrt(missing / size) if size > 0 else 0.0
        if error > worst[1]:
            worst = (name, error)
        kept = up.shape[1]
        down = down.reshape(kept, *adapter.in_shape)
        if adapter.is_conv:
            up = up.reshape(*up.shape, 1, 1)
        tensors[f"{name}.lora_down.weight"] = down.cpu().contiguous()
        tensors[f"{name}.lora_up.weight"] = up.cpu().contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(kept)  # alpha = rank: scale 1, the factors carry the whole update
    relative = math.sqrt(left / total) if total > 0 else 0.0
    return Conversion(tensors, _plain_metadata(metadata, model.family, used, relative), used, len(network.loras),
                      relative, *worst)


def _plain_metadata(metadata: dict[str, str], family: str, rank: int, error: float) -> dict[str, str]:
    """The source's metadata, now describing a plain LoRA of `rank`; what it was made from is kept."""
    out = {k: v for k, v in metadata.items() if not k.startswith("sshs_") and k != "ss_network_args"}
    out.update(ss_network_module=FAMILIES[family].defaults.get("network_module", "networks.lora"),
               ss_network_dim=str(rank), ss_network_alpha=str(rank),
               lorabake_converted_from=json.dumps({"network_module": metadata.get("ss_network_module"),
                                                   "network_args": metadata.get("ss_network_args"),
                                                   "relative_error": round(error, 6)}))
    return out


def convert_file(model: LoadedModel, source: Path, target: Path, rank: int) -> Conversion:
    from safetensors import safe_open

    from trainer.output.generate import load_lora_file

    metadata: dict[str, str] = {}
    if source.suffix == ".safetensors":
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
    conversion = to_plain_lora(model, load_lora_file(source), metadata, rank)
    save_lora(target, conversion.tensors, conversion.metadata, "safetensors")
    return conversion
