"""What a model family declares about itself, in data that needs no torch: its parameters, its rules, its schedule,
its text settings and how a job of it is reproduced outside lorabake. The registry (trainer/families/__init__.py)
and TrainConfig are derived from these declarations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

if TYPE_CHECKING:
    from trainer.job.config import TrainConfig


def param(default: Any, help: str = "", group: str | None = None, *, path: bool = False, ours: bool = False,
          identity: bool = False, **bounds: Any) -> Any:
    """A TrainConfig field with what the pro-mode catalog, the service and the exporters read off it: its help line,
    its group (None: only the service or the CLI sets it), whether it names a file or folder (paths are set by the
    service alone), whether it is lorabake's own (other tools do not know it) and whether it names the base model's
    family (set from the chosen base model, never by a request)."""
    extra = {"group": group, "path": path, "ours": ours, "identity": identity}
    return Field(default, description=help or None, json_schema_extra=extra, **bounds)


@dataclass(frozen=True)
class Param:
    """A parameter that means something only to the families that declare it; the others refuse it, saying
    `elsewhere` (or which families it applies to)."""

    name: str
    type: Any  # the annotation pydantic validates with: float, int | None, Literal[...] …
    default: Any
    help: str = ""
    group: str | None = None
    path: bool = False
    ours: bool = False
    identity: bool = False
    bounds: dict[str, Any] = field(default_factory=dict)  # pydantic constraints: ge, le, gt …
    elsewhere: str = ""

    def field(self) -> tuple[Any, Any]:
        return self.type, param(self.default, self.help, self.group, path=self.path, ours=self.ours,
                                identity=self.identity, **self.bounds)


@dataclass(frozen=True)
class Rule:
    """A pre-flight finding that applies to one family: `when(cfg)` true → `level` on `field`."""

    when: Callable[[TrainConfig], bool]
    level: Literal["error", "warning"]
    field: str
    message: str


@dataclass(frozen=True)
class Exporter:
    """How a job of this family is reproduced outside lorabake: the tool, its script and the flags that tell it the
    family. `script` empty: there is no such tool, and `reason` says why."""

    tool: str = ""
    script: str = ""
    flags: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def available(self) -> bool:
        return bool(self.script)


@dataclass(frozen=True)
class ShiftSchedule:
    """A flow-matching model's noise-level shift: fixed (`shift`), or growing with the image's token count from
    `base_shift` at `base_tokens` to `max_shift` at `max_tokens` (μ, applied as e^μ / (e^μ + 1/t − 1))."""

    shift: float = 1.0
    dynamic: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_tokens: int = 256
    max_tokens: int = 4096

    def mu(self, image_tokens: int) -> float:
        slope = (self.max_shift - self.base_shift) / (self.max_tokens - self.base_tokens)
        return self.base_shift + slope * (image_tokens - self.base_tokens)


@dataclass(frozen=True)
class ModelSize:
    """The full-size model's numbers the memory estimate reads (trainer/job/memory.py); tests check the transformer's
    against its architecture built on the meta device."""

    transformer: int  # parameters of the denoiser (a transformer, or SD's UNet)
    blocks: int  # the blocks block swap moves (a UNet's down, middle and up blocks)
    hidden: int  # the width of the token stream (a UNet's first level)
    lora_width: int  # Σ (in + out features) over the Linears a LoRA wraps: its parameters are rank × this
    text_encoder: int  # parameters of the text encoder(s)
    vae: int
    text_tokens: int  # text tokens in the joint sequence (a typical caption's, or the padded length)
    pixels_per_token: int = 16  # the VAE's 8× times the 2×2 patch (a UNet works on latent pixels: 8)
    # how many blocks' worth of activations the denoiser keeps at `hidden` width and full token count: a DiT's
    # blocks all are (0: `blocks`); a UNet's deeper levels are wider and 4× smaller each, so its resnets and
    # transformer layers count as first-level equivalents (channels ÷ hidden ÷ 4^level, summed)
    activation_blocks: float = 0.0


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    label: str
    runtime: str  # "module:Class" of its ModelFamily
    pipeline_classes: tuple[str, ...]  # model_index.json `_class_name`s a diffusers folder of this family has
    resolution: int  # the training size its presets use
    crop_sizes: tuple[str, ...]  # "WxH" choices for the workbench's crop tool
    text_encoders: int  # how many text encoders a text_encoder_lr list may address
    defaults: dict[str, Any]  # over every preset theme
    exporter: Exporter  # required: a family that forgets it must not export another family's config
    params: tuple[Param, ...] = ()  # the keys only this family (and others declaring the same) take
    refuses: dict[str, str] = field(default_factory=dict)  # common keys that do not apply, and why
    rules: tuple[Rule, ...] = ()
    themes: dict[str, dict[str, Any]] = field(default_factory=dict)  # per preset theme, over the defaults
    declared_by: Callable[[TrainConfig], bool] = lambda cfg: False  # sd-scripts flags that name this family
    # modules LyCORIS's full preset adds by name, as they are called in sd-scripts' model of this family
    lycoris_names: tuple[str, ...] = ()
    matches_folder: Callable[[Path, dict], bool] = lambda folder, index: True
    # what its text encoder was trained to read: CLIP reads comma-separated tags well, T5 and Qwen read sentences
    captions: Literal["tags", "sentences"] = "tags"
    text_keys: tuple[str, ...] = ()  # the config keys that change what the text encoders give (cache key, renders)
    schedule: ShiftSchedule | None = None  # flow-matching families: their noise-level shift
    network_module: str = "networks.lora"  # sd-scripts' module for a plain LoRA of this family
    render_defaults: dict[str, Any] = field(default_factory=lambda: {"steps": 20, "cfg_scale": 7.0})
    tiny: str = ""  # the module that builds a tiny model of this family (tests, the embedded default)
    size: ModelSize | None = None  # large models: what the memory estimate needs

    @property
    def own_keys(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params)
