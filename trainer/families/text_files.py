"""Text encoders from the single files users bring (clip_l, t5xxl, a Qwen3 file …), whatever layout saved them.

The same weights circulate under several key layouts: Hugging Face's (`text_model.encoder…` for CLIP under
transformers 4, `encoder.…` under transformers 5), the original checkpoints' (`transformer.text_model.…`,
`cond_stage_model.transformer.…`, SDXL's `conditioner.embedders.N.transformer.…`) and ComfyUI's saved form
(`text_encoders.<name>.transformer.…`). A file is matched to the model by trying each known prefix to strip and
then adding or dropping `text_model.`/`model.`, and keeping the reading that fills the most of the model's weights.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from trainer.families.base import ModelLoadError

_WRAPPERS = re.compile(
    r"^(?:text_encoders\.[^.]+\.|conditioner\.embedders\.\d+\.|cond_stage_model\.)?(?:transformer\.)?")
_INNER = ("text_model.", "model.")  # CLIP's and decoder-only LMs' (Qwen3) inner module, kept or dropped by versions


def _readings(keys: list[str]) -> list[dict[str, str]]:
    """Candidate renamings file key → model key."""
    stripped = {key: _WRAPPERS.sub("", key, count=1) for key in keys}
    out = [dict(zip(keys, keys, strict=True)), stripped]
    for inner in _INNER:
        out.append({k: v.removeprefix(inner) for k, v in stripped.items()})
        out.append({k: v if v.startswith(inner) else inner + v for k, v in stripped.items()})
    return out


def match_keys(weights: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """The file's tensors under the model's key names, in the reading that matches the most of them."""
    best = max(_readings(list(weights)), key=lambda names: len(set(names.values()) & model_keys))
    return {best[key]: tensor for key, tensor in weights.items() if best[key] in model_keys}


def load_text_encoder_file(encoder: nn.Module, file: str) -> None:
    """Load a text encoder's weights from one file; a key left out because it is tied to one that is there (T5's
    shared embedding, a tied LM head) is not missing."""
    from safetensors.torch import load_file

    state = encoder.state_dict()
    weights = match_keys(load_file(file), set(state))
    missing, _ = encoder.load_state_dict(weights, strict=False)
    state = encoder.state_dict()
    loaded = {state[k].data_ptr() for k in weights}
    missing = [k for k in missing if state[k].data_ptr() not in loaded]
    if missing:
        raise ModelLoadError(f"{file}: not a text-encoder file for this model ({len(missing)} weights missing, "
                             f"e.g. {missing[0]})")
