"""Writing LoRA files the way sd-scripts does: kohya keys, ss_* / sshs_* / modelspec.* metadata, pruning."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from trainer.data.dataset import DatasetScan
from trainer.job.config import Family, TrainConfig

# sd-scripts writes "sd-scripts/<git commit>": the code that made the file, here lorabake's release
IMPLEMENTATION_VERSION = f"lorabake/{package_version('lorabake')}"
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
    total_steps: int = 0  # optimisation steps of the whole run (what sd-scripts writes as ss_max_train_steps)
    batches_per_epoch: int = 0
    bucket_info: dict[str, Any] | None = None
    optimizer: str = ""  # the optimizer's class path and arguments, as sd-scripts writes ss_optimizer
    session_id: int = 0
    base_file: str | None = None  # a local single-file base model, hashed into ss_sd_model_hash


def file_hashes(path: str) -> tuple[str, str]:
    """(ss_sd_model_hash, ss_new_sd_model_hash): sd-scripts' legacy hash (sha256 of 64 KiB at offset 1 MiB, first
    8 hex digits) and the sha256 of the whole file."""
    whole = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(0x100000)
        legacy = hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
        handle.seek(0)
        while chunk := handle.read(1 << 20):
            whole.update(chunk)
    return legacy, whole.hexdigest()


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
        "ss_network_alpha": _number(cfg.effective_alpha),
        "ss_sd_model_name": facts.model_name,
        "ss_session_id": facts.session_id,
        "ss_num_batches_per_epoch": facts.batches_per_epoch,
        "ss_total_batch_size": cfg.train_batch_size * cfg.gradient_accumulation_steps * cfg.gpus,
        "ss_min_bucket_reso": cfg.min_bucket_reso,
        "ss_max_bucket_reso": cfg.max_bucket_reso,
        "ss_bucket_no_upscale": cfg.bucket_no_upscale,
        "ss_bucket_info": json.dumps(facts.bucket_info),
        "ss_cache_latents": cfg.cache_latents,
        "ss_max_grad_norm": cfg.max_grad_norm,
        "ss_gradient_checkpointing": cfg.gradient_checkpointing,
        "ss_multires_noise_discount": cfg.multires_noise_discount,
        "ss_caption_dropout_every_n_epochs": cfg.caption_dropout_every_n_epochs,
        "ss_color_aug": cfg.color_aug,
        "ss_flip_aug": cfg.flip_aug,
        "ss_random_crop": cfg.random_crop,
        "ss_full_fp16": False,
        "ss_lowram": False,
        "ss_network_dropout": None,
        "ss_adaptive_noise_scale": None,
        "ss_zero_terminal_snr": False,
        "ss_face_crop_aug_range": None,
        "ss_scale_weight_norms": None,
        "ss_ip_noise_gamma": None,
        "ss_debiased_estimation": False,
        "ss_noise_offset_random_strength": False,
        "ss_ip_noise_gamma_random_strength": False,
        "ss_loss_type": "l2",
        "ss_output_name": cfg.output_name,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_num_epochs": facts.num_epochs,
        "ss_num_train_images": sum(r.repeats for r in scan.train),
        "ss_num_reg_images": sum(r.repeats for r in scan.reg),
        "ss_learning_rate": cfg.learning_rate,
        "ss_unet_lr": cfg.unet_learning_rate,
        "ss_text_encoder_lr": te_lr,
        "ss_optimizer": facts.optimizer or cfg.optimizer_type,
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": cfg.lr_warmup_steps,
        "ss_max_train_steps": facts.total_steps or cfg.max_train_steps,
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
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.implementation_version": IMPLEMENTATION_VERSION,
        "modelspec.title": f"{cfg.output_name}-{epoch:06d}" if not finished else cfg.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": now.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if facts.base_file:
        values["ss_sd_model_hash"], values["ss_new_sd_model_hash"] = file_hashes(facts.base_file)
    if network_args:  # sd-scripts leaves the key out when there are none (readers json.loads it)
        values["ss_network_args"] = json.dumps(network_args)
    values.update(family_values)
    # unset ss_* values are written as sd-scripts writes them ("None"); modelspec.* keys only when set
    metadata = {key: str(value) for key, value in values.items() if value is not None or key.startswith("ss_")}
    if cfg.no_metadata:
        metadata = {key: metadata[key] for key in MINIMUM_KEYS if key in metadata}
    return metadata


def _number(value: float) -> int | float:
    """4.0 → 4: sd-scripts writes an integer alpha as the integer it was given."""
    return int(value) if float(value).is_integer() else value


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
        # as sd-scripts: both hashes of the file written with only the ss_* metadata
        model_hash, legacy_hash = model_hashes(safetensors_bytes(tensors, {k: v for k, v in metadata.items()
                                                                           if k.startswith("ss_")}))
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
        for path in (epoch_file(cfg, epoch), raw_file(epoch_file(cfg, epoch))):
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed


def raw_file(path: Path) -> Path:
    """Where save_ema = both puts an epoch's raw weights, beside its averaged ones."""
    return path.with_name(f"{path.stem}-raw{path.suffix}")
