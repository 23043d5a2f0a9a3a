"""Tiny random vision-language captioners for tests, of the two architectures lorabake runs, saved as their hub
releases are (transformers folders the worker loads with AutoModelForImageTextToText):

- Florence-2: DaViT vision tower and a BART encoder-decoder, with Florence2Processor (a byte-level BPE tokenizer
  with its `<image>` token and a CLIP image processor at 64 px);
- Qwen2.5-VL: the tiny one the Qwen-Image text encoder uses, Qwen's special tokens, Qwen2VLImageProcessor.

Their weights are random, so their captions are gibberish; each is told to write at least a few tokens
(generation_config.json) and is built from a fixed seed, so the same caption always lands."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    BartConfig,
    CLIPImageProcessor,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessor,
)

from trainer.families.qwen_image.tiny import qwen25_vl
from trainer.families.tiny import byte_symbols
from trainer.families.zimage.tiny import write_qwen_tokenizer

MIN_TOKENS = 6


def make_tiny_florence2(folder: Path) -> Path:
    torch.manual_seed(0)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    vocab = {token: index for index, token in enumerate(specials)}
    for symbol in byte_symbols():
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                        model_max_length=1024)
    images = CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False,
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    images.image_seq_length = 5  # (64 / 32)² patches and the pooled one
    text = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                      max_position_embeddings=256, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                      decoder_start_token_id=2, forced_eos_token_id=2)
    vision = {"depths": [1, 1, 1, 1], "embed_dim": [8, 16, 16, 32], "num_heads": [1, 2, 2, 2],
              "num_groups": [1, 2, 2, 2], "window_size": 2, "projection_dim": 32, "drop_path_rate": 0.0}
    model = Florence2ForConditionalGeneration(Florence2Config(text_config=text.to_dict(), vision_config=vision,
                                                              image_token_id=tokenizer.image_token_id))
    model.generation_config.min_new_tokens = MIN_TOKENS
    # printable ASCII only: random weights would pick bytes that decode to nothing
    unprintable = [vocab[symbol] for code, symbol in enumerate(byte_symbols()) if not 32 <= code < 127]
    model.generation_config.suppress_tokens = [*unprintable, *(vocab[t] for t in ("<s>", "<pad>", "<unk>", "<image>"))]
    model.save_pretrained(folder)
    Florence2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def make_tiny_qwen_vl(folder: Path) -> Path:
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_qwen_tokenizer(folder)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    model = qwen25_vl(tokenizer)
    model.generation_config.min_new_tokens = MIN_TOKENS
    model.save_pretrained(folder)
    Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
    return folder
