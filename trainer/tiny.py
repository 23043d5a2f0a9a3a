"""`lorabake models make-tiny`: a tiny random-weight SD-architecture model in diffusers layout.

Same module structure as SD1.5 / SD2 / SDXL (cross-attention transformers, CLIP text encoder(s), an 8× VAE),
but a few MB, so training runs on a CPU in seconds. The tokenizer is a byte-level CLIP BPE vocabulary built
here, with no merges: every character is one token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from trainer.config import Family

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TEXT_HIDDEN = 32


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (printable Latin-1 maps to itself)."""
    direct = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    direct += list(range(ord("®"), ord("ÿ") + 1))
    symbols: dict[int, str] = {b: chr(b) for b in direct}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_tokenizer(folder: Path, pad_token: str = EOS) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for symbol in byte_symbols():
        vocab[symbol] = len(vocab)
    for symbol in byte_symbols():
        vocab[symbol + "</w>"] = len(vocab)
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=[], bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=pad_token, model_max_length=77,
    )
    tokenizer.save_pretrained(folder)
    return len(vocab)


def _text_config(vocab_size: int, projection: int | None = None, act: str = "quick_gelu") -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=77, hidden_act=act, projection_dim=projection or TEXT_HIDDEN,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )


def _vae(scaling_factor: float) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), sample_size=64, scaling_factor=scaling_factor,
    )


def _scheduler(prediction_type: str) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction_type, timestep_spacing="leading", steps_offset=1,
    )


def _sd_unet(family: Family) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=(2, 4) if family == "sd2" else 4, use_linear_projection=family == "sd2",
    )


def _sdxl_unet() -> UNet2DConditionModel:
    time_dim = 8
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=8,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4), use_linear_projection=True,
        cross_attention_dim=2 * TEXT_HIDDEN, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_HIDDEN,
    )


def make_tiny(out: str | Path, family: Family = "sd15", seed: int = 0) -> Path:
    """Write the tiny model to `out` (a diffusers folder) and return the path. Same seed, same bytes."""
    out = Path(out)
    torch.manual_seed(seed)
    tok_dir = out / ".tokenizer-build"
    vocab_size = write_tokenizer(tok_dir, pad_token="!" if family == "sd2" else EOS)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    if family == "sdxl":
        text_encoder = CLIPTextModel(_text_config(vocab_size))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab_size, projection=TEXT_HIDDEN, act="gelu"))
        pipe = StableDiffusionXLPipeline(
            vae=_vae(0.13025), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=CLIPTokenizer.from_pretrained(tok_dir), unet=_sdxl_unet(), scheduler=_scheduler("epsilon"),
        )
    else:
        act = "gelu" if family == "sd2" else "quick_gelu"
        pipe = StableDiffusionPipeline(
            vae=_vae(0.18215), text_encoder=CLIPTextModel(_text_config(vocab_size, act=act)), tokenizer=tokenizer,
            unet=_sd_unet(family), scheduler=_scheduler("v_prediction" if family == "sd2" else "epsilon"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.save_pretrained(out, safe_serialization=True)
    for path in tok_dir.iterdir():
        path.unlink()
    tok_dir.rmdir()
    return out
