"""Which modules of a Stable Diffusion UNet and CLIP text encoders get an adapter, under sd-scripts' names."""

from __future__ import annotations

from torch import nn

from trainer.families.sd.names import te_prefixes, unet_name
from trainer.networks.names import TEXT_CLASSES, text_encoder_name
from trainer.networks.network import Candidate

TRANSFORMER_CLASSES = frozenset({"Transformer2DModel"})
CONV_BLOCK_CLASSES = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})


def _is_1x1(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def unet_candidates(unet: nn.Module, family: str, with_conv: bool) -> list[Candidate]:
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


def named_candidates(unet: nn.Module, family: str, paths: tuple[str, ...]) -> list[Candidate]:
    """UNet modules chosen by their diffusers path (conv_in, time_embedding.linear_1 …)."""
    modules = dict(unet.named_modules())
    out = []
    for path in paths:
        module = modules.get(path)
        if isinstance(module, nn.Linear | nn.Conv2d):
            out.append(Candidate(unet_name(path, family), module, "unet", isinstance(module, nn.Conv2d)
                                 and not _is_1x1(module)))
    return out


def text_candidates(text_encoders: list[nn.Module], family: str) -> list[Candidate]:
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


