"""Captions for Qwen3 text encoders (Z-Image, FLUX.2 [klein]): each wrapped in the tokenizer's chat template as one
user turn with the assistant's turn opened, as the models were trained to read them."""

from __future__ import annotations

from typing import Any

MAX_TOKENS = 512


def chat_tokens(tokenizer: Any, captions: list[str], *, thinking: bool) -> Any:
    """Token ids and attention mask [B, 512], padded at the end."""
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=thinking)
             for caption in captions]
    return tokenizer(chats, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
