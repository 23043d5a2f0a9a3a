"""Caption processing as sd-scripts does it: comma-separated tags, the first keep_tokens tags fixed."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionRules:
    shuffle: bool = False
    keep_tokens: int = 0
    dropout_rate: float = 0.0
    dropout_every_n_epochs: int = 0
    tag_dropout_rate: float = 0.0


def split_tags(caption: str) -> list[str]:
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def process_caption(caption: str, rules: CaptionRules, rng: random.Random, epoch: int) -> str:
    """One draw of the caption for one sample in 1-based `epoch`."""
    if rules.dropout_every_n_epochs and epoch % rules.dropout_every_n_epochs == 0:
        return ""
    if rules.dropout_rate and rng.random() < rules.dropout_rate:
        return ""
    if not (rules.shuffle or rules.tag_dropout_rate):
        return caption
    tags = split_tags(caption)
    kept, rest = tags[: rules.keep_tokens], tags[rules.keep_tokens :]
    if rules.shuffle:
        rng.shuffle(rest)
    if rules.tag_dropout_rate:
        rest = [tag for tag in rest if rng.random() >= rules.tag_dropout_rate]
    return ", ".join(kept + rest)
