"""Writing LoRA files the way sd-scripts does: kohya keys, ss_* / sshs_* / modelspec.* metadata, pruning."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from trainer.config import Family, TrainConfig
from trainer.dataset import DatasetScan

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MINIMUM_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                "ss_network_args")


@dataclass(frozen=True)
class RunFacts:
    """What the metadata says about the run besides the config."""

    family: Family
    model: dict[str, Any]  # what the family says about the loaded model (ModelFamily.facts)
    model_name: str
    num_epochs: int
    started_at: float


def build_metadata(cfg: TrainConfig, facts: RunFacts, family_values: dict[str, Any], scan: DatasetScan, epoch: int,
                   step: int, finished: bool) -> dict[str, str]:
    """The common ss_* / modelspec.* values, then the family's own (ModelFamily.metadata) over them."""
    network_args = dict(item.split("=", 1) for item in cfg.network_args if "=" in item)
    if cfg.conv_dim:
        network_args.update(conv_dim=str(cfg.conv_dim), conv_alpha=str(cfg.effective_conv_alpha))
    te_lr = cfg.text_encoder_lr if cfg.text_encoder_lr is not None else cfg.learning_rate
    width, height = cfg.resolution_wh
    now = datetime.now(UTC)
    values = {
        "ss_network_module": cfg.network_module,
        "ss_network_dim": cfg.network_dim,
        "ss_network_alpha": cfg.effective_alpha,
        "ss_network_args": json.dumps(network_args) if network_args else None,
        "ss_sd_model_name": facts.model_name,
        "ss_output_name": cfg.output_name,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_num_epochs": facts.num_epochs,
        "ss_num_train_images": sum(r.repeats for r in scan.train),
        "ss_num_reg_images": len(scan.reg),
        "ss_learning_rate": cfg.learning_rate,
        "ss_unet_lr": cfg.unet_learning_rate,
        "ss_text_encoder_lr": te_lr,
        "ss_optimizer": cfg.optimizer_type + (f"({','.join(cfg.optimizer_args)})" if cfg.optimizer_args else ""),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": cfg.lr_warmup_steps,
        "ss_max_train_steps": cfg.max_train_steps,
        "ss_batch_size_per_device": cfg.train_batch_size,
        "ss_gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "ss_resolution": f"({width}, {height})",
        "ss_enable_bucket": cfg.enable_bucket,
        "ss_seed": cfg.seed,
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_shuffle_caption": cfg.shuffle_caption,
        "ss_keep_tokens": cfg.keep_tokens,
        "ss_caption_dropout_rate": cfg.caption_dropout_rate,
        "ss_caption_tag_dropout_rate": cfg.caption_tag_dropout_rate,
        "ss_prior_loss_weight": cfg.prior_loss_weight,
        "ss_training_comment": cfg.training_comment,
        "ss_training_started_at": facts.started_at,
        "ss_training_finished_at": now.timestamp() if finished else None,
        "ss_tag_frequency": json.dumps(scan.tag_frequency()),
        "ss_dataset_dirs": json.dumps(scan.dataset_dirs()),
        "ss_reg_dataset_dirs": json.dumps(scan.dataset_dirs(reg=True)),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.title": f"{cfg.output_name}-{epoch:06d}" if not finished else cfg.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": now.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    values.update(family_values)
    metadata = {key: str(value) for key, value in values.items() if value is not None}
    if cfg.no_metadata:
        metadata = {key: metadata[key] for key in MINIMUM_KEYS if key in metadata}
    return metadata


def model_hashes(blob: bytes) -> tuple[str, str]:
    """sshs_model_hash: sha256 of the tensor body after the header; sshs_legacy_hash: the first 8 hex digits of
    sha256 over 64 KiB at offset 1 MiB of the file (what sd-webui-additional-networks computes)."""
    header_length = struct.unpack("<Q", blob[:8])[0]
    body = blob[8 + header_length :]
    legacy = hashlib.sha256(blob[0x100000 : 0x110000]).hexdigest()[:8]
    return hashlib.sha256(body).hexdigest(), legacy


def save_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    if fmt == "safetensors":
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        model_hash, legacy_hash = model_hashes(safetensors_bytes(tensors, metadata))
        metadata = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
        tmp.write_bytes(safetensors_bytes(tensors, metadata))
    else:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)  # readers never see a half-written file
    return path


def epoch_file(cfg: TrainConfig, epoch: int | None) -> Path:
    stem = cfg.output_name if epoch is None else f"{cfg.output_name}-{epoch:06d}"
    return Path(cfg.output_dir) / f"{stem}.{cfg.save_model_as}"


def prune_old_epochs(cfg: TrainConfig, current_epoch: int) -> list[Path]:
    """save_last_n_epochs: remove the epoch files older than the last n saves."""
    if not cfg.save_last_n_epochs:
        return []
    cadence = cfg.save_every_n_epochs or 1
    keep_from = current_epoch - cadence * cfg.save_last_n_epochs
    removed = []
    for epoch in range(1, keep_from + 1):
        path = epoch_file(cfg, epoch)
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
