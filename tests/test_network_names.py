"""LoRA module names against the sets sd-scripts produces for full-size SD1.5 and SDXL.

The expected sets are written out from the architectures, the way sd-scripts names them, not from our module
walk: every Transformer2DModel contributes proj_in, proj_out and per transformer block attn1/attn2
(to_q, to_k, to_v, to_out.0) and ff (net.0.proj, net.2); every CLIP layer contributes self_attn
q/k/v/out_proj and mlp fc1/fc2. SD1/2 UNet names are diffusers paths; SDXL UNet names are SGM paths:
down level i attention j → input_blocks.{3i+j+1}.1, mid → middle_block.1, up level i attention j →
output_blocks.{3i+j}.1. Totals: SD1.5 72 TE + 192 UNet; SDXL 264 TE + 722 UNet.
"""

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from trainer.families.sd.targets import text_candidates, unet_candidates

BLOCK_LINEARS = [f"{attn}_{p}" for attn in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out_0")]
BLOCK_LINEARS += ["ff_net_0_proj", "ff_net_2"]
TE_LINEARS = ["self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1",
              "mlp_fc2"]

SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SDXL_UNET = dict(
    sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              projection_dim=1280, hidden_act="gelu")


def transformer_names(prefix: str, depth: int) -> set[str]:
    names = {f"{prefix}_proj_in", f"{prefix}_proj_out"}
    for block in range(depth):
        names |= {f"{prefix}_transformer_blocks_{block}_{linear}" for linear in BLOCK_LINEARS}
    return names


def te_names(prefix: str, layers: int) -> set[str]:
    return {f"{prefix}_text_model_encoder_layers_{i}_{linear}" for i in range(layers) for linear in TE_LINEARS}


def expected_sd15_unet() -> set[str]:
    places = [f"down_blocks_{i}_attentions_{j}" for i in range(3) for j in range(2)]
    places += ["mid_block_attentions_0"] + [f"up_blocks_{i}_attentions_{j}" for i in (1, 2, 3) for j in range(3)]
    return set().union(*(transformer_names(f"lora_unet_{p}", 1) for p in places))


def expected_sdxl_unet() -> set[str]:
    depth = {4: 2, 5: 2, 7: 10, 8: 10}
    names = set().union(*(transformer_names(f"lora_unet_input_blocks_{b}_1", d) for b, d in depth.items()))
    names |= transformer_names("lora_unet_middle_block_1", 10)
    for block in range(6):
        names |= transformer_names(f"lora_unet_output_blocks_{block}_1", 10 if block < 3 else 2)
    return names


@pytest.fixture(scope="module")
def full_models():
    with init_empty_weights():
        return {
            "sd15_unet": UNet2DConditionModel(**SD15_UNET),
            "sdxl_unet": UNet2DConditionModel(**SDXL_UNET),
            "clip_l": CLIPTextModel(CLIPTextConfig(**CLIP_L)),
            "clip_g": CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)),
        }


def test_sd15_names_equal_the_sd_scripts_set(full_models):
    unet = {c.name for c in unet_candidates(full_models["sd15_unet"], "sd15", with_conv=False)}
    te = {c.name for c in text_candidates([full_models["clip_l"]], "sd15")}
    assert unet == expected_sd15_unet() and len(unet) == 192
    assert te == te_names("lora_te", 12) and len(te) == 72


def test_sdxl_names_equal_the_sd_scripts_set(full_models):
    unet = {c.name for c in unet_candidates(full_models["sdxl_unet"], "sdxl", with_conv=False)}
    te = {c.name for c in text_candidates([full_models["clip_l"], full_models["clip_g"]], "sdxl")}
    assert unet == expected_sdxl_unet() and len(unet) == 722
    assert te == te_names("lora_te1", 12) | te_names("lora_te2", 32) and len(te) == 264


def test_locon_adds_resnet_and_sampler_convs_with_sd_scripts_names(full_models):
    sd15 = {c.name: c for c in unet_candidates(full_models["sd15_unet"], "sd15", with_conv=True)}
    assert sd15["lora_unet_down_blocks_0_resnets_0_conv1"].is_conv3x3
    assert not sd15["lora_unet_down_blocks_0_resnets_0_time_emb_proj"].is_conv3x3
    assert not sd15["lora_unet_down_blocks_1_resnets_0_conv_shortcut"].is_conv3x3
    assert "lora_unet_down_blocks_0_downsamplers_0_conv" in sd15 and "lora_unet_up_blocks_0_upsamplers_0_conv" in sd15
    sdxl = {c.name: c for c in unet_candidates(full_models["sdxl_unet"], "sdxl", with_conv=True)}
    for name in ("lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_1_0_emb_layers_1",
                 "lora_unet_input_blocks_1_0_out_layers_3", "lora_unet_input_blocks_4_0_skip_connection",
                 "lora_unet_input_blocks_3_0_op", "lora_unet_input_blocks_6_0_op",
                 "lora_unet_middle_block_0_in_layers_2",
                 "lora_unet_middle_block_2_out_layers_3", "lora_unet_output_blocks_2_2_conv",
                 "lora_unet_output_blocks_5_2_conv", "lora_unet_output_blocks_8_0_skip_connection"):
        assert name in sdxl, name
    assert not any("down_blocks" in n or "up_blocks" in n or "mid_block" in n for n in sdxl)


def test_module_shapes_on_meta_match_their_targets(full_models):
    c = next(c for c in unet_candidates(full_models["sd15_unet"], "sd15", False) if c.name.endswith("attn2_to_k"))
    assert isinstance(c.module, torch.nn.Linear) and c.module.in_features == 768
