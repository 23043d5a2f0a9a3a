"""Tiny FLUX.1 / Chroma models: double and single stream blocks, T5 + CLIP-L (T5 only for Chroma), a 16-channel
VAE, a few MB."""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL
from transformers import CLIPTextModel, CLIPTokenizer

from trainer.families.tiny import TEXT_HIDDEN, text_config, write_t5_tokenizer, write_tokenizer


def _flux_parts(family: str, vocab_size: int) -> dict:
    from diffusers import ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    shape = {"patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 2, "attention_head_dim": 8,
             "num_attention_heads": 2, "joint_attention_dim": TEXT_HIDDEN, "axes_dims_rope": (2, 2, 4)}
    if family == "chroma":
        transformer = ChromaTransformer2DModel(**shape, approximator_num_channels=16, approximator_hidden_dim=32,
                                               approximator_layers=1)
    else:
        transformer = FluxTransformer2DModel(**shape, pooled_projection_dim=TEXT_HIDDEN, guidance_embeds=True)
    t5 = T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=TEXT_HIDDEN, d_kv=8, d_ff=64, num_layers=2,
                                 num_heads=4, feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return {"transformer": transformer, "t5": t5, "vae": vae, "scheduler": scheduler}


def pipeline(family: str, scratch: Path):
    from diffusers import ChromaPipeline, FluxPipeline
    from transformers import T5TokenizerFast

    clip_vocab = write_tokenizer(scratch / "clip")
    t5_vocab = write_t5_tokenizer(scratch / "t5")
    t5_tokenizer = T5TokenizerFast.from_pretrained(scratch / "t5")
    parts = _flux_parts(family, t5_vocab)
    if family == "chroma":
        return ChromaPipeline(scheduler=parts["scheduler"], vae=parts["vae"], text_encoder=parts["t5"],
                              tokenizer=t5_tokenizer, transformer=parts["transformer"])
    return FluxPipeline(scheduler=parts["scheduler"], vae=parts["vae"],
                        text_encoder=CLIPTextModel(text_config(clip_vocab)),
                        tokenizer=CLIPTokenizer.from_pretrained(scratch / "clip"), text_encoder_2=parts["t5"],
                        tokenizer_2=t5_tokenizer, transformer=parts["transformer"])


def single_file(folder: Path, family: str, path: str) -> Path:
    """FLUX.1's transformer as one BFL-layout file, as sd-scripts takes it."""
    if family != "flux":
        raise ValueError(f"{family} tiny models cannot be written as one file")
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from trainer.families.flux.checkpoint import to_bfl

    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    save_file(to_bfl(transformer.state_dict()), path)
    return Path(path)
