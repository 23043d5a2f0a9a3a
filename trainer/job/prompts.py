"""sd-scripts sample prompt lines and A1111 `<lora:name:weight>` tags. No torch: the API validates with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainer.job.config import ConfigError

SAMPLER_ALIASES = {
    "euler_a": "euler_a", "k_euler_a": "euler_a", "euler_ancestral": "euler_a", "euler": "euler",
    "k_euler": "euler", "ddim": "ddim", "dpm++ 2m": "dpm++ 2m", "dpmsolver++": "dpm++ 2m",
    "dpm++ 2m karras": "dpm++ 2m karras", "k_dpm_2m_karras": "dpm++ 2m karras",
}
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]+))?(?::[^>]*)?>")


LIMITS = (("width", 64, 4096), ("height", 64, 4096), ("steps", 1, 150), ("cfg_scale", 0.0, 30.0),
          ("guidance", 0.0, 30.0), ("seed", 0, 2**63 - 1))
FLAGS = {"width": "w", "height": "h", "steps": "s", "cfg_scale": "l", "guidance": "g", "seed": "d"}
MAX_LORA_WEIGHT = 10.0


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    negative: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    cfg_scale: float | None = None  # None: the family's own (RenderSettings)
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None  # --g: FLUX.1's distilled guidance (3.5 when not given)


def _sampler(name: str) -> str:
    key = name.strip().lower()
    if key not in SAMPLER_ALIASES:
        known = ", ".join(sorted(set(SAMPLER_ALIASES.values())))
        raise ConfigError.about("sample_prompts", f'unknown sampler "{name}" (known: {known})')
    return SAMPLER_ALIASES[key]


def parse_prompt_line(line: str) -> PromptSpec:
    """`prompt --n negative --w 512 --h 512 --d seed --l cfg --s steps --g guidance --sampler name`."""
    parts = re.split(r"\s--(?=[a-z]+\b)", " " + line.strip())
    prompt = parts[0].strip()
    if not prompt:
        raise ConfigError.about("sample_prompts", f'line "{line}" has no prompt')
    values: dict = {}
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        value = value.strip()
        try:
            match flag:
                case "n":
                    values["negative"] = value
                case "w":
                    values["width"] = int(value)
                case "h":
                    values["height"] = int(value)
                case "d":
                    values["seed"] = int(value)
                case "l":
                    values["cfg_scale"] = float(value)
                case "s":
                    values["steps"] = int(value)
                case "g":
                    values["guidance"] = float(value)
                case "sampler" | "ss":
                    values["sampler"] = _sampler(value)
                case _:
                    raise ConfigError.about("sample_prompts", f'unknown option --{flag} in "{line}"')
        except ConfigError:
            raise
        except ValueError:
            raise ConfigError.about("sample_prompts", f'--{flag} needs a number, got "{value}"') from None
    for key, low, high in LIMITS:
        if key in values and not low <= values[key] <= high:  # also refuses nan
            raise ConfigError.about("sample_prompts", f'--{FLAGS[key]} must be from {low} to {high}, got {values[key]}')
    return PromptSpec(prompt, **values)


def prompt_lines(source: str | list[str] | None) -> list[str]:
    """sample_prompts is either a list of lines or the path of a text file with one prompt per line."""
    if not source:
        return []
    if isinstance(source, list):
        lines = source
    else:
        path = Path(source)
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else [source]
    return [line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]


def parse_prompts(source: str | list[str] | None) -> list[PromptSpec]:
    return [parse_prompt_line(line) for line in prompt_lines(source)]


def extract_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """A1111 syntax: removes every `<lora:name:weight>` (weight 1 when left out) and returns them."""
    found: list[tuple[str, float]] = []

    def take(match: re.Match) -> str:
        weight = match.group(2)
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError.about("prompt", f'"{match.group(0)}" has a weight that is not a number') from None
        if not -MAX_LORA_WEIGHT <= value <= MAX_LORA_WEIGHT:  # also refuses nan and inf
            raise ConfigError.about("prompt", f'"{match.group(0)}": a LoRA weight goes from -{MAX_LORA_WEIGHT:g} to '
                               f'{MAX_LORA_WEIGHT:g}')
        found.append((match.group(1).strip(), value))
        return ""

    cleaned = _LORA_TAG.sub(take, prompt)
    return re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", cleaned)).strip(" ,"), found


__all__ = ["PromptSpec", "extract_lora_tags", "parse_prompt_line", "parse_prompts", "prompt_lines"]
