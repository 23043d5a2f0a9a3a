"""The LoRA file layout ComfyUI, ai-toolkit and diffusers share for the newer DiT families (Z-Image, Qwen-Image):
`diffusion_model.` + the diffusers module path (`transformer_blocks.0.attn.to_q`) with lora_down / lora_up / alpha
tensors. Files in the other layouts users bring are read into it: PEFT's lora_A / lora_B under `transformer.`,
`diffusion_model.` or no prefix (no alpha: scale 1), and musubi-tuner's `lora_unet_transformer_blocks_0_attn_to_q`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.networks.adapters import split_key

PREFIX = "diffusion_model."
PEFT_NAMES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


@dataclass(frozen=True)
class DiffusersLayout:
    # names in musubi-tuner's `lora_unet_` keys whose own underscores are not path separators
    joined: tuple[str, ...]

    def file_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, tensor in weights.items():
            module, name = split_key(key)
            if module.startswith("lora_unet_"):
                module = self.musubi_path(module.removeprefix("lora_unet_"))
            module = PREFIX + module.removeprefix(PREFIX).removeprefix("transformer.")
            out[f"{module}.{PEFT_NAMES.get(name, name)}"] = tensor
        for key in [k for k in out if k.endswith(".lora_down.weight")]:
            out.setdefault(key.replace(".lora_down.weight", ".alpha"), torch.tensor(float(out[key].shape[0])))
        return out

    def musubi_path(self, name: str) -> str:
        dotted = name.replace("_", ".")
        for joined in sorted(self.joined, key=len, reverse=True):
            dotted = dotted.replace(joined.replace("_", "."), joined)
        return dotted
