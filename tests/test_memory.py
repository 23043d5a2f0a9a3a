"""The GPU-memory estimate (trainer/job/memory.py): the declared model sizes are the full-size architectures', and
each setting moves the estimate the way it moves real memory."""

from __future__ import annotations

import pytest
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    ChromaTransformer2DModel,
    Flux2Transformer2DModel,
    FluxTransformer2DModel,
    QwenImageTransformer2DModel,
    UNet2DConditionModel,
    ZImageTransformer2DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from trainer.families import FAMILIES, runtime
from trainer.job.config import build_config
from trainer.job.memory import estimate_memory

# the published transformer configs (each model's transformer/config.json)
FULL_SIZE = {
    "flux": lambda: FluxTransformer2DModel(num_layers=19, num_single_layers=38, guidance_embeds=True),
    "chroma": lambda: ChromaTransformer2DModel(),
    "zimage": lambda: ZImageTransformer2DModel(dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30,
                                               cap_feat_dim=2560),
    "zimage_turbo": lambda: ZImageTransformer2DModel(dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30,
                                                     n_kv_heads=30, cap_feat_dim=2560),
    "flux2": lambda: Flux2Transformer2DModel(num_layers=5, num_single_layers=20, num_attention_heads=24,
                                             joint_attention_dim=7680, guidance_embeds=False),
    "qwen_image": lambda: QwenImageTransformer2DModel(num_layers=60, attention_head_dim=128, num_attention_heads=24,
                                                      joint_attention_dim=3584),
}


# the published UNet configs (unet/config.json) and text encoders: CLIP-L, OpenCLIP-H (SD 2), CLIP bigG (SDXL)
FULL_UNETS = {
    "sd15": lambda: UNet2DConditionModel(cross_attention_dim=768),
    "sd2": lambda: UNet2DConditionModel(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                        use_linear_projection=True),
    "sdxl": lambda: UNet2DConditionModel(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(320, 640, 1280),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816),
}
CLIP = {"L": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        "H": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  hidden_act="gelu"),
        "G": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  hidden_act="gelu", projection_dim=1280)}
TEXT_ENCODERS = {"sd15": ("L",), "sd2": ("H",), "sdxl": ("L", "G")}


def test_every_family_declares_its_size():
    assert {name for name, info in FAMILIES.items() if info.size} == set(FULL_SIZE) | set(FULL_UNETS) == set(FAMILIES)


def _level_equivalents(unet) -> float:
    """Σ over resnets and transformer layers of channels ÷ first-level channels ÷ 4^level."""
    first = unet.config.block_out_channels[0]
    deepest = len(unet.down_blocks) - 1
    placed = [*((b, level) for level, b in enumerate(unet.down_blocks)), (unet.mid_block, deepest),
              *((b, deepest - i) for i, b in enumerate(unet.up_blocks))]
    total = 0.0
    for block, level in placed:
        total += sum(r.out_channels for r in block.resnets) / first / 4**level
        total += sum(len(a.transformer_blocks) * a.in_channels for a in getattr(block, "attentions", None) or []) \
            / first / 4**level
    return total


def _width(module) -> tuple[int, int]:  # noqa: ANN001 - a Linear, or the 1×1 Conv2d SD 1.5 projects with
    return (getattr(module, "in_features", None) or module.in_channels,
            getattr(module, "out_features", None) or module.out_channels)


@pytest.mark.parametrize("family", sorted(FULL_UNETS))
def test_an_sd_familys_size_is_its_full_size_unets_text_encoders_and_vaes(family):
    class Full:
        with init_empty_weights():
            unet = FULL_UNETS[family]()
            encoders = [(CLIPTextModelWithProjection if name == "G" else CLIPTextModel)(CLIPTextConfig(**CLIP[name]))
                        for name in TEXT_ENCODERS[family]]
            vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                block_out_channels=(128, 256, 512, 512), layers_per_block=2)
        denoiser = unet
        text_encoders: list = []

    Full.family = family
    size = FAMILIES[family].size
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert size.transformer == count(Full.unet)
    assert size.text_encoder == sum(count(e) for e in Full.encoders) and size.vae == count(Full.vae)
    assert size.blocks == len(Full.unet.down_blocks) + 1 + len(Full.unet.up_blocks)
    assert (size.hidden, size.activation_blocks) == (Full.unet.config.block_out_channels[0],
                                                     _level_equivalents(Full.unet))
    width = 0
    for candidate in runtime(family).lora_targets(Full(), with_conv=False, text=False):
        parts = candidate.parts or (candidate.module,)
        width += _width(parts[0])[0] + sum(_width(p)[1] for p in parts)
    assert size.lora_width == width


def test_sdxl_at_1024_with_checkpointing_is_estimated_between_7_and_12_gib():
    """Users train SDXL LoRAs at 1024 px, batch 1, with checkpointing, in 8–12 GB cards (the published guides); the
    estimate must land there, and above SD 1.5 at 512."""
    sdxl = build_config({"pretrained_model_name_or_path": "m", "train_data_dir": "d", "output_dir": "o",
                         "model_family": "sdxl", "resolution": "1024", "train_batch_size": 1, "network_dim": 16,
                         "mixed_precision": "bf16", "gradient_checkpointing": True, "network_train_unet_only": True})
    sd15 = build_config({"pretrained_model_name_or_path": "m", "train_data_dir": "d", "output_dir": "o",
                         "model_family": "sd15", "resolution": "512", "train_batch_size": 1, "network_dim": 16,
                         "mixed_precision": "bf16"})
    high = estimate_memory(FAMILIES["sdxl"].size, sdxl).total
    assert 7 < high < 12
    assert estimate_memory(FAMILIES["sd15"].size, sd15).total < high


@pytest.mark.parametrize("family", sorted(FULL_SIZE))
def test_a_declared_size_is_the_full_size_architectures(family):
    class Full:
        with init_empty_weights():
            transformer = FULL_SIZE[family]()
        unet = transformer
        text_encoders: list = []

    Full.family = family
    size = FAMILIES[family].size
    assert size.transformer == sum(p.numel() for p in Full.transformer.parameters())
    assert size.blocks == len(runtime(family).blocks(Full()))
    width = 0
    for candidate in runtime(family).lora_targets(Full(), with_conv=False, text=False):
        parts = candidate.parts or (candidate.module,)
        width += parts[0].in_features + sum(p.out_features for p in parts)
    assert size.lora_width == width


def _cfg(**values):
    base = {"pretrained_model_name_or_path": "m", "train_data_dir": "d", "output_dir": "o",
            "model_family": "qwen_image", "network_train_unet_only": True, "cache_text_encoder_outputs": True,
            "gradient_checkpointing": True, "resolution": "1024", "network_dim": 16, "mixed_precision": "bf16"}
    return build_config({**base, **values})


def _total(**values) -> float:
    return estimate_memory(FAMILIES["qwen_image"].size, _cfg(**values)).total


def test_each_setting_moves_the_estimate_the_way_it_moves_memory():
    plain = _total()
    assert _total(base_weights="nf4") < _total(base_weights="int8") == _total(base_weights="fp8") < plain
    assert _total(blocks_to_swap=30) < plain and _total(cache_text_encoder_outputs=False) > plain
    # with cached captions the peak may be while caching (text encoder and transformer on the GPU); with the text
    # encoder kept, training is the peak and every training setting shows
    training = _total(cache_text_encoder_outputs=False)
    assert _total(cache_text_encoder_outputs=False, gradient_checkpointing=False) > training
    assert _total(cache_text_encoder_outputs=False, train_batch_size=4) > training
    assert _total(cache_text_encoder_outputs=False, resolution="512") < training
    assert _total(cache_text_encoder_outputs=False, network_dim=64) > training
    assert _total(cache_text_encoder_outputs=False, optimizer_type="AdamW8bit") < training
    # the figures users report: ~54 GB in bf16, trainable in 24 GB with a 4-bit base
    assert 48 < plain < 60 and _total(base_weights="nf4") < 22
