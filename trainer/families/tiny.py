"""`lorabake models make-tiny`: a tiny random-weight model of a family's architecture in diffusers layout, a few MB,
so training runs on a CPU in seconds. Each family's package builds its pipeline (its `tiny` module); this module
holds what they share: tokenizers built here (a byte-level CLIP BPE vocabulary with no merges, a character-level
T5 Unigram), a small CLIP text config, and writing the folder so older tools read it too.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTokenizer

from trainer.families import family_info

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


def text_config(vocab_size: int, projection: int | None = None, act: str = "quick_gelu") -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=77, hidden_act=act, projection_dim=projection or TEXT_HIDDEN,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
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


def tiny_module(family: str):
    """The family's tiny-model module: `pipeline(family, scratch)` and `single_file(folder, family, path)`."""
    info = family_info(family)
    if not info.tiny:
        raise ValueError(f"{info.label} has no tiny model")
    return importlib.import_module(info.tiny)


def make_tiny(out: str | Path, family: str = "sd15", seed: int = 0) -> Path:
    """Write the tiny model to `out` (a diffusers folder) and return the path. Same seed, same bytes."""
    out = Path(out)
    torch.manual_seed(seed)
    scratch = out / ".build"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        pipe = tiny_module(family).pipeline(family, scratch)
    finally:
        shutil.rmtree(scratch)
    pipe.save_pretrained(out, safe_serialization=True)
    _readable_by_older_tools(out)
    _name_t5_tokenizer_for_both_transformers(out)
    return out


def write_single_file(folder: Path, family: str, path: str) -> Path:
    """The tiny model as the one file the family's users bring (where the family has such a layout)."""
    return tiny_module(family).single_file(folder, family, path)


def transformer_file(transformer_class: type, folder: Path, path: str) -> Path:
    """A DiT family's transformer as one file in diffusers' key names (as their releases and ComfyUI's split files
    keep the weights); configs and tokenizer then come from the folder."""
    transformer = transformer_class.from_pretrained(folder, subfolder="transformer")
    save_file(transformer.state_dict(), path)
    return Path(path)
