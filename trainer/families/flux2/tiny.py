"""Tiny FLUX.2 [klein] models: double and single stream blocks over 2×2-patchified 32-channel latents, a Qwen3 text
encoder whose layers 9, 18 and 27 condition the transformer, FLUX.2's VAE with its latent batch norm; a few MB."""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from trainer.families.tiny import TEXT_HIDDEN, transformer_file
from trainer.families.zimage.tiny import write_qwen_tokenizer

TEXT_LAYERS = 28  # the pipeline reads hidden states 9, 18 and 27


def pipeline(family: str, scratch: Path) -> Flux2KleinPipeline:
    vocab_size = write_qwen_tokenizer(scratch)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=3 * TEXT_HIDDEN, timestep_guidance_channels=16, axes_dims_rope=(2, 2, 2, 2),
        guidance_embeds=False)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=48, num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, pad_token_id=0,
        tie_word_embeddings=True))
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=32, norm_num_groups=4, sample_size=64)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096, time_shift_type="exponential")
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                              tokenizer=PreTrainedTokenizerFast.from_pretrained(scratch), transformer=transformer,
                              is_distilled=True)


def single_file(folder: Path, family: str, path: str) -> Path:
    return transformer_file(Flux2Transformer2DModel, folder, path)
