"""Step maths, shared by the trainer and the API's estimate.

sd-scripts counts optimizer steps: batches are formed inside each bucket, regularization images are cycled
until they match the training samples (so an epoch has about twice the batches), and gradient accumulation
divides the batch count. Epochs override max_train_steps.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from trainer.data.buckets import BucketAssigner, BucketSettings, Size, bucket_resolutions
from trainer.job.config import TrainConfig


@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    repeats: int = 1


@dataclass(frozen=True)
class StepPlan:
    train_samples: int  # training images × repeats
    reg_samples: int  # regularization samples per epoch after cycling
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    bucket_counts: dict[Size, int]


def reg_sample_counts(reg_repeats: list[int], train_samples: int) -> list[int]:
    """How often each regularization image is used per epoch: its repeats first, then round-robin one more
    each, until the total equals the number of training samples (the first pass may stop early)."""
    counts = [0] * len(reg_repeats)
    if not reg_repeats or train_samples <= 0:
        return counts
    total = 0
    for i, repeats in enumerate(reg_repeats):
        counts[i] = repeats
        total += repeats
        if total >= train_samples:
            return counts
    while total < train_samples:
        for i in range(len(counts)):
            counts[i] += 1
            total += 1
            if total >= train_samples:
                break
    return counts


def bucket_settings(cfg: TrainConfig) -> BucketSettings:
    return BucketSettings(
        resolution=cfg.resolution_wh, enabled=cfg.enable_bucket, min_reso=cfg.min_bucket_reso,
        max_reso=cfg.max_bucket_reso, step=cfg.bucket_reso_steps, no_upscale=cfg.bucket_no_upscale,
    )


def plan_steps(
    train: list[ImageSpec],
    reg: list[ImageSpec],
    buckets: BucketSettings,
    batch_size: int,
    gradient_accumulation_steps: int = 1,
    max_train_epochs: int | None = None,
    max_train_steps: int = 1600,
    processes: int = 1,
) -> StepPlan:
    """Each optimizer step takes gradient_accumulation_steps batches in every one of `processes` processes."""
    assigner = BucketAssigner(buckets)
    counts: Counter[Size] = Counter()
    train_samples = 0
    for image in train:
        counts[assigner.assign(image.width, image.height)] += image.repeats
        train_samples += image.repeats
    reg_counts = reg_sample_counts([r.repeats for r in reg], train_samples)
    for image, n in zip(reg, reg_counts, strict=True):
        if n:
            counts[assigner.assign(image.width, image.height)] += n
    batches = sum(math.ceil(n / batch_size) for n in counts.values())
    steps_per_epoch = math.ceil(batches / (gradient_accumulation_steps * processes)) if batches else 0
    if max_train_epochs:
        epochs = max_train_epochs
        total = epochs * steps_per_epoch
    else:
        total = max_train_steps
        epochs = math.ceil(total / steps_per_epoch) if steps_per_epoch else 0
    return StepPlan(
        train_samples=train_samples, reg_samples=sum(reg_counts), batches_per_epoch=batches,
        steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=total, bucket_counts=dict(counts),
    )


def plan_for_config(cfg: TrainConfig, train: list[ImageSpec], reg: list[ImageSpec]) -> StepPlan:
    return plan_steps(
        train, reg, bucket_settings(cfg), cfg.train_batch_size, cfg.gradient_accumulation_steps,
        cfg.max_train_epochs, cfg.max_train_steps, cfg.gpus,
    )


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """lr_warmup_steps below 1 is a ratio of the total optimizer steps."""
    value = cfg.lr_warmup_steps
    return int(value * total_steps) if 0 < value < 1 else int(value)


def run_report(folders: list[tuple[str, int, int, bool]], plan: StepPlan, cfg: TrainConfig) -> list[str]:
    """The start-of-run summary sd-scripts prints: `folders` are (name, images, repeats, is_reg)."""
    lines = []
    for name, images, repeats, is_reg in folders:
        kind = "regularization" if is_reg else "training"
        lines.append(f"{name}: {images} {kind} images × {repeats} repeats = {images * repeats} samples")
    lines.append(f"{plan.train_samples} training samples per epoch"
                 + (f", {plan.reg_samples} regularization samples (cycled to match)" if plan.reg_samples else ""))
    buckets = ", ".join(f"{w}×{h}: {n}" for (w, h), n in sorted(plan.bucket_counts.items()))
    lines.append(f"buckets (samples per epoch): {buckets}")
    on = f" on {cfg.gpus} processes, one batch each" if cfg.gpus > 1 else ""
    lines.append(f"batch size {cfg.train_batch_size}, gradient accumulation {cfg.gradient_accumulation_steps}{on}: "
                 f"{plan.batches_per_epoch} batches = {plan.steps_per_epoch} optimisation steps per epoch")
    lines.append(f"{plan.epochs} epochs, {plan.total_steps} optimisation steps in all")
    return lines


def bucket_info(cfg: TrainConfig, plan: StepPlan, sizes: list[tuple[int, int, tuple[int, int]]]) -> dict:
    """ss_bucket_info as sd-scripts writes it: non-empty buckets by their index among all bucket sizes, with their
    sample counts, and the mean aspect-ratio error of the images (`sizes`: width, height, bucket of each)."""
    settings = bucket_settings(cfg)
    resolutions = bucket_resolutions(settings) if settings.enabled else [cfg.resolution_wh]
    buckets = {str(i): {"resolution": list(reso), "count": plan.bucket_counts[reso]}
               for i, reso in enumerate(resolutions) if plan.bucket_counts.get(reso)}
    errors = [abs(w / h - bw / bh) for w, h, (bw, bh) in sizes]
    return {"buckets": buckets, "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0}
