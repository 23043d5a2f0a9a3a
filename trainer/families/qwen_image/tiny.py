"""Tiny Qwen-Image models: the double-stream MMDiT over 2×2 patches of 16-channel latents, a Qwen2.5-VL text encoder
(language model and vision tower, both tiny) whose last layer conditions it, Wan's VAE; a few MB."""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from trainer.families.tiny import TEXT_HIDDEN, transformer_file
from trainer.families.zimage.tiny import write_qwen_tokenizer


def qwen25_vl(tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLForConditionalGeneration:
    """A Qwen2.5-VL of two text layers and one vision block, for this tokenizer (its image tokens included)."""
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = {"vocab_size": len(tokenizer), "hidden_size": TEXT_HIDDEN, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 4096, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": TEXT_HIDDEN,
              "fullatt_block_indexes": [0]}
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                               tie_word_embeddings=False, **ids))


def pipeline(family: str, scratch: Path) -> QwenImagePipeline:
    write_qwen_tokenizer(scratch)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(scratch)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN, axes_dims_rope=(4, 6, 6))
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    # Qwen/Qwen-Image's scheduler_config.json
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
        base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")
    return QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=qwen25_vl(tokenizer), tokenizer=tokenizer,
                             transformer=transformer)


def single_file(folder: Path, family: str, path: str) -> Path:
    return transformer_file(QwenImageTransformer2DModel, folder, path)
