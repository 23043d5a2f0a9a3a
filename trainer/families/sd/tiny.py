"""Tiny SD 1.5 / SD 2 / SDXL models: the same module structure as the real ones (cross-attention transformers, CLIP
text encoder(s), an 8× VAE), a few MB."""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from trainer.families.tiny import EOS, TEXT_HIDDEN, text_config, write_tokenizer


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


def _sd_unet(family: str) -> UNet2DConditionModel:
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


def pipeline(family: str, scratch: Path):
    vocab_size = write_tokenizer(scratch, pad_token="!" if family == "sd2" else EOS)
    tokenizer = CLIPTokenizer.from_pretrained(scratch)
    if family == "sdxl":
        text_encoder = CLIPTextModel(text_config(vocab_size))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(vocab_size, projection=TEXT_HIDDEN, act="gelu"))
        return StableDiffusionXLPipeline(
            vae=_vae(0.13025), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=CLIPTokenizer.from_pretrained(scratch), unet=_sdxl_unet(), scheduler=_scheduler("epsilon"),
        )
    act = "gelu" if family == "sd2" else "quick_gelu"
    return StableDiffusionPipeline(
        vae=_vae(0.18215), text_encoder=CLIPTextModel(text_config(vocab_size, act=act)), tokenizer=tokenizer,
        unet=_sd_unet(family), scheduler=_scheduler("v_prediction" if family == "sd2" else "epsilon"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def single_file(folder: Path, family: str, path: str) -> Path:
    """SD 1.x / 2.x as one LDM checkpoint (SDXL's original layout is not written)."""
    if family == "sdxl":
        raise ValueError("SDXL tiny models cannot be written as one file")
    from trainer.families.sd.single_file import write_single_file

    return write_single_file(StableDiffusionPipeline.from_pretrained(folder), path)
