"""From a job request to validated trainer parameters and a step/time estimate. No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from core.estimates import RunShape, estimate_seconds
from core.kohya_layout import held_out, reads_as_sentences
from core.models import Dataset, Image
from core.placement import MIB_PER_GIB, Capacity, Need, never_runs
from core.settings import BaseModelEntry
from trainer.families import FAMILIES
from trainer.job import preflight
from trainer.job.config import (
    IDENTITY_KEYS,
    KNOWN_KEYS,
    MAX_STEPS,
    USER_KEYS,
    ConfigError,
    TrainConfig,
    build_config,
)
from trainer.job.config_io import FILE_KEYS
from trainer.job.memory import MemoryEstimate, estimate_memory
from trainer.job.presets import THEMES, preset_values
from trainer.job.prompts import parse_prompts
from trainer.job.steps import ImageSpec, StepPlan, plan_for_config

# The base model's identity: set from the chosen base model, never by a request (sd-scripts' flags included).
FAMILY_KEYS = IDENTITY_KEYS
# A request may set USER_KEYS only: every other key (paths, identity, bookkeeping, and the file-level keys of an
# sd-scripts config) belongs to the service and is refused by name.
SERVICE_KEYS = (KNOWN_KEYS - USER_KEYS) | FILE_KEYS
# set by "continue training" for the continued run only: not offered in pro mode, not carried into a retrain
CONTINUE_KEYS = frozenset({"lr_restart_step"})
PLACEHOLDER_PATHS = {"pretrained_model_name_or_path": "base", "train_data_dir": "data", "output_dir": "out",
                     "output_name": "lora", "conditioning_data_dir": "masks"}


EMPTY_PLAN = StepPlan(train_samples=0, reg_samples=0, batches_per_epoch=0, steps_per_epoch=0, epochs=0,
                      total_steps=0, bucket_counts={})


@dataclass
class Assessment:
    values: dict[str, Any]
    model: BaseModelEntry | None = None
    config: TrainConfig | None = None
    plan: StepPlan | None = None
    train_images: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    memory: MemoryEstimate | None = None  # large models: the GPU memory the run needs (placement reads it)

    @property
    def need(self) -> Need:
        """What a worker must offer this run."""
        gpus = self.config.gpus if self.config is not None else 1
        placed = self.memory is not None and self.model is not None and self.model.full_size
        return Need(gpus, round(self.memory.total * MIB_PER_GIB) if placed else None)

    @property
    def memory_summary(self) -> str:
        """The memory estimate in words; for a tiny test model, said to be the full-size model's."""
        if self.memory is None:
            return ""
        tiny = self.model is not None and not self.model.full_size
        return self.memory.line() + ("; that is the full-size model's: this tiny test model needs far less and "
                                     "trains on any worker" if tiny else "")


def family_values(model: BaseModelEntry) -> dict[str, Any]:
    """What the base model says about itself: its family by name (sd-scripts' v2/sdxl flags are only written on
    export) and whether it predicts v."""
    return {"model_family": model.family, "v_parameterization": model.v_parameterization}


def job_values(model: BaseModelEntry, mode: str, preset: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """Preset (basic mode, or the starting point in pro mode) + the model's own overrides + the user's params."""
    values: dict[str, Any] = {}
    if preset:
        values.update(preset_values(preset, model.family))  # type: ignore[arg-type]
        values.update(model.train_overrides)
    values.update(params)
    values.update(family_values(model))
    return values


def dataset_specs(dataset: Dataset, images: list[Image], repeats: int | None = None
                  ) -> tuple[list[ImageSpec], list[ImageSpec]]:
    """The images as the step count sees them; `repeats` stands in for the dataset's default when given."""
    train, reg = [], []
    for image in images:
        width, height = (image.crop["width"], image.crop["height"]) if image.crop else (image.width, image.height)
        spec = ImageSpec(width, height, image.repeats or (1 if image.is_reg else repeats or dataset.default_repeats))
        (reg if image.is_reg else train).append(spec)
    return train, reg


def assess(model: BaseModelEntry | None, model_name: str, mode: str, preset: str | None, params: dict[str, Any],
           dataset: Dataset | None, images: list[Image], sample_prompts: list[str] | None = None,
           repeats: int | None = None,
           service: dict[str, Any] | None = None) -> Assessment:
    errors: list[dict[str, str]] = []
    try:
        parse_prompts(sample_prompts or [])
    except ConfigError as exc:
        errors.extend({"field": "sample_prompts", "message": p.message} for p in exc.problems)
    if model is None:
        return Assessment({}, errors=[{"field": "base_model", "message": f"unknown base model {model_name!r}"}])
    if preset is not None and preset not in THEMES:
        errors.append({"field": "preset", "message": f"unknown preset {preset!r}; choose one of {', '.join(THEMES)}"})
        preset = None
    if mode == "basic" and preset is None and not errors:
        errors.append({"field": "preset", "message": "basic mode needs a preset"})
    for key in sorted(SERVICE_KEYS & set(params)):
        errors.append({"field": key, "message": "is set by the service and cannot be chosen"})
    clean_params = {k: v for k, v in params.items() if k not in SERVICE_KEYS}
    values = {**job_values(model, mode, preset, clean_params), **(service or {})}
    result = Assessment(values, model, errors=errors)
    try:
        result.config = build_config({**values, **PLACEHOLDER_PATHS, "sample_prompts": sample_prompts or None})
    except ConfigError as exc:
        result.errors.extend({"field": p.field, "message": p.message} for p in exc.problems)
        return result
    result.errors.extend(service_limits(result.config))
    for finding in preflight.check(result.config, model.family):
        if finding.field in PLACEHOLDER_PATHS:
            continue  # the worker supplies real paths
        target = result.errors if finding.level == "error" else result.warnings
        target.append({"field": finding.field, "message": finding.message,
                       **({"plain": finding.plain} if finding.plain else {})})
    if dataset is not None:
        if (warning := crop_family_warning(dataset, images, model.family)) is not None:
            result.warnings.append(warning)
        held = held_out(images, result.config.validation_split, result.config.seed)
        train, reg = dataset_specs(dataset, [i for i in images if i.id not in held], repeats)
        if not train:
            result.errors.append({"field": "dataset_id", "message": "the dataset has no training images"})
        result.plan, result.train_images = plan_for_config(result.config, train, reg), len(train)
        result.warnings += dataset_warnings(result.config, result.plan, model.family, images)
        if result.plan.total_steps > MAX_STEPS:
            result.errors.append({"field": "max_train_epochs", "message": f"the run would take "
                                  f"{result.plan.total_steps:,} steps; at most {MAX_STEPS:,}"})
    return result


def service_limits(config: TrainConfig) -> list[dict[str, str]]:
    """What the trainer does that this service cannot offer yet, refused with the reason."""
    found = []
    if config.ema_decay and config.save_ema == "both":
        found.append({"field": "save_ema", "message": "the service keeps one file per epoch: choose ema or raw (both "
                      "is for the command line)"})
    return found


def dataset_warnings(config: TrainConfig, plan: StepPlan, family: str, images: list[Image]) -> list[dict[str, str]]:
    """What only the dataset shows: a batch larger than an epoch, and tags where the family reads sentences."""
    found = []
    if plan.train_samples and config.train_batch_size > plan.train_samples:
        found.append({"field": "train_batch_size", "message": f"{config.train_batch_size} is larger than the "
                      f"{plan.train_samples} training samples of an epoch (images × repeats): every step sees the "
                      "whole dataset and an epoch is one step; a batch of 1–4 suits a small dataset",
                      "plain": "The batch is larger than the dataset: each epoch is a single step."})
    info = FAMILIES[family]
    training = [i for i in images if not i.is_reg]
    if config.masked_loss and training and not any(i.mask_key for i in training):
        found.append({"field": "masked_loss", "message": "no training image of this dataset has a mask, so every "
                      "image is trained whole: add masks in the workbench (from the subject or the faces, or upload "
                      "one per image; transparent PNGs bring theirs)"})
    tags_only = [i for i in training if i.tags and not i.caption.strip() and not reads_as_sentences(i.tags)]
    if info.captions == "sentences" and training and len(tags_only) * 2 > len(training):
        which = "tags only" if len(tags_only) == len(training) else \
            f"tags only on {len(tags_only)} of its {len(training)} images"
        advice = (f"this dataset has {which}; {info.label} trains best on sentences: caption it (Caption in the "
                  "dataset's tools writes a sentence per image, keeping the trigger word first), or write them by hand")
        found.append({"field": "dataset_id", "message": advice, "plain": advice[0].upper() + advice[1:]})
    return found


def crop_family_warning(dataset: Dataset, images: list[Image], family: str) -> dict[str, str] | None:
    """The crops were made for another model family than the job's base: their sizes and shapes may not suit it."""
    if dataset.crop_family in (None, family) or dataset.crop_family not in FAMILIES or not any(i.crop for i in images):
        return None
    made, used = FAMILIES[dataset.crop_family].label, FAMILIES[family].label
    return {"field": "base_model", "message": f"this dataset's crops were made for {made}, but this base model is "
            f"{used}: re-crop the images for {used} in the workbench, or pick a {made} base model"}


def place(result: Assessment, workers: list[Capacity], max_gpus: int, max_running: int) -> None:
    """The run's memory (a large model's only), and refusals for a run this server cannot give its GPUs: more than
    the site's or the user's cap, or more than any live training worker has."""
    size = FAMILIES[result.model.family].size if result.model is not None else None
    if result.config is None:
        return
    if size is not None:
        result.memory = estimate_memory(size, result.config)
    gpus = result.config.gpus
    if gpus > min(max_gpus, max_running):
        which = "this server's" if max_gpus <= max_running else "your"
        result.errors.append({"field": "gpus", "message": f"{gpus} GPUs asked for; {which} limit is "
                              f"{min(max_gpus, max_running)} per job"})
        return
    too_few = never_runs(Need(gpus), workers)  # the count first: no memory setting helps with that
    if (reason := too_few or never_runs(result.need, workers)) is not None:
        advice = "" if too_few else (": store the base as int8 or nf4 (base_weights), swap blocks, lower the "
                                     "resolution or batch, or turn on gradient checkpointing")
        result.errors.append({"field": "gpus" if too_few else "base_weights",
                              "message": f"no worker of this server could run this job: {reason}{advice}",
                              "plain": f"This server cannot run this job: {reason}." + ("" if too_few else
                                       " In pro mode, base_weights nf4 or int8 makes it smaller.")})


def estimated_seconds(session: Session, result: Assessment) -> float | None:
    """How long the assessed run takes on this server (core.estimates); None before any measurement."""
    if result.plan is None or result.config is None or result.model is None:
        return None
    return estimate_seconds(session, RunShape.of(result.model.family, result.config), result.plan.total_steps,
                            result.plan.epochs)
