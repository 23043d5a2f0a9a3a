"""Tiny Z-Image models: the single-stream DiT (noise and context refiners, main layers, 2×2 patches), a Qwen3
text encoder read through its chat template, FLUX's 16-channel VAE; a few MB."""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from trainer.families.tiny import TEXT_HIDDEN, transformer_file

# Qwen3's chat template, reduced to what a text-to-image prompt uses: one user turn, then the assistant's header
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen's special tokens: chat turns, and where an image sits in a vision-language prompt
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>")


def write_qwen_tokenizer(folder: Path) -> int:
    """A character-level BPE (no merges) over printable ASCII and newline, with Qwen's special tokens and chat
    template; saved as tokenizer.json, which AutoTokenizer reads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for code in [10, *range(32, 127)]:
        vocab.setdefault(chr(code), len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()  # characters back into text, without spaces between them
    backend.add_special_tokens(list(SPECIALS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        model_max_length=512)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return len(vocab)


def pipeline(family: str, scratch: Path) -> ZImagePipeline:
    vocab_size = write_qwen_tokenizer(scratch)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=TEXT_HIDDEN, axes_dims=[4, 6, 6], axes_lens=[1024, 64, 64])
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
        pad_token_id=0, tie_word_embeddings=False))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
    return ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                          tokenizer=PreTrainedTokenizerFast.from_pretrained(scratch), transformer=transformer)


def single_file(folder: Path, family: str, path: str) -> Path:
    return transformer_file(ZImageTransformer2DModel, folder, path)
