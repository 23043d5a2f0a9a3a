"""`lorabake models make-tiny`: a tiny random-weight model of a family's architecture in diffusers layout.

Same module structure as SD1.5 / SD2 / SDXL (cross-attention transformers, CLIP text encoder(s), an 8× VAE) or
FLUX.1 / Chroma (double and single stream blocks, T5 + CLIP-L / T5 only, a 16-channel VAE),
but a few MB, so training runs on a CPU in seconds. The tokenizer is a byte-level CLIP BPE vocabulary built
here, with no merges: every character is one token.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from trainer.job.config import Family

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


def write_t5_tokenizer(folder: Path) -> int:
    """A T5 (Unigram) tokenizer over single characters: <pad> 0, </s> 1, <unk> 2, then printable ASCII. Saved as
    tokenizer.json (which transformers 4 and 5 both read) with its config."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)] + [(f"▁{chr(c)}", -1.5) for c in range(33, 127)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(folder)
    return len(pieces)


def _flux_parts(family: Family, vocab_size: int) -> dict:
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


def _flux_pipeline(family: Family, out: Path, clip_tokenizer: CLIPTokenizer, clip_vocab: int):
    from diffusers import ChromaPipeline, FluxPipeline
    from transformers import T5TokenizerFast

    t5_dir = out / ".t5-build"
    t5_vocab = write_t5_tokenizer(t5_dir)
    t5_tokenizer = T5TokenizerFast.from_pretrained(t5_dir)
    parts = _flux_parts(family, t5_vocab)
    for path in t5_dir.iterdir():
        path.unlink()
    t5_dir.rmdir()
    if family == "chroma":
        return ChromaPipeline(scheduler=parts["scheduler"], vae=parts["vae"], text_encoder=parts["t5"],
                              tokenizer=t5_tokenizer, transformer=parts["transformer"])
    return FluxPipeline(scheduler=parts["scheduler"], vae=parts["vae"],
                        text_encoder=CLIPTextModel(_text_config(clip_vocab)), tokenizer=clip_tokenizer,
                        text_encoder_2=parts["t5"], tokenizer_2=t5_tokenizer, transformer=parts["transformer"])


def _readable_by_older_tools(out: Path) -> None:
    """transformers 4, older diffusers and sd-scripts read a CLIP tokenizer from vocab.json + merges.txt and CLIP
    weights under `text_model.`; transformers 5 writes tokenizer.json and leaves that level out. Both are written
    (transformers 5 reads the `text_model.` names too)."""
    index = json.loads((out / "model_index.json").read_text())
    for key, value in index.items():
        if value == ["transformers", "CLIPTokenizer"]:
            folder = out / key
            vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
            (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")  # one symbol per token
        elif isinstance(value, list) and value[1] in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            path = out / key / "model.safetensors"
            weights = load_file(str(path))
            renamed = {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v
                       for k, v in weights.items()}
            save_file(renamed, str(path), metadata={"format": "pt"})


def _name_t5_tokenizer_for_both_transformers(out: Path) -> None:
    """transformers 5 saves its (tokenizers-backed) T5 tokenizer as "T5Tokenizer", which transformers 4 takes for
    the sentencepiece one and cannot read without spiece.model; "T5TokenizerFast" names the tokenizer.json reader in
    both."""
    index_path = out / "model_index.json"
    index = json.loads(index_path.read_text())
    for key, value in index.items():
        if value == ["transformers", "T5Tokenizer"]:
            index[key] = ["transformers", "T5TokenizerFast"]
            config_path = out / key / "tokenizer_config.json"
            config = json.loads(config_path.read_text())
            config["tokenizer_class"] = "T5TokenizerFast"
            config_path.write_text(json.dumps(config, indent=2))
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True))


def make_tiny(out: str | Path, family: Family = "sd15", seed: int = 0) -> Path:
    """Write the tiny model to `out` (a diffusers folder) and return the path. Same seed, same bytes."""
    out = Path(out)
    torch.manual_seed(seed)
    tok_dir = out / ".tokenizer-build"
    vocab_size = write_tokenizer(tok_dir, pad_token="!" if family == "sd2" else EOS)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    if family in ("flux", "chroma"):
        pipe = _flux_pipeline(family, out, tokenizer, vocab_size)
    elif family == "sdxl":
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
    _readable_by_older_tools(out)
    if family in ("flux", "chroma"):
        _name_t5_tokenizer_for_both_transformers(out)
    for path in tok_dir.iterdir():
        path.unlink()
    tok_dir.rmdir()
    return out
