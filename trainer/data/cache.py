"""cache_latents (memory or disk, both flips) and cache_text_encoder_outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import ImageOps
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pad_sequence

from trainer.data.loader import EpochPlan, crop_to_bucket, load_mask, load_rgb, to_tensor
from trainer.families.base import LoadedModel, ModelFamily, TextOut
from trainer.job.config import TrainConfig


def _disk_key(path: Path, bucket: tuple[int, int], flip: bool) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{bucket}:{flip}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


@torch.no_grad()
def cache_latents(plan: EpochPlan, family: ModelFamily, model: LoadedModel, device: torch.device,
                  dtype: torch.dtype, disk_dir: Path | None, with_flip: bool) -> dict:
    """{(record index, flipped): {latents, original_size, crop}} for every image used in training."""
    cache: dict = {}
    used = sorted({s.record for s in plan.samples})
    for index in used:
        record, bucket = plan.scan.images[index], plan.buckets[index]
        image = load_rgb(record.path)
        original = (image.height, image.width)
        cropped, crop = crop_to_bucket(image, bucket, None)
        for flip in ((False, True) if with_flip else (False,)):
            file = disk_dir / f"{_disk_key(record.path, bucket, flip)}.safetensors" if disk_dir else None
            if file is not None and file.is_file():
                latents = load_file(str(file))["latents"]
            else:
                pixels = to_tensor(ImageOps.mirror(cropped) if flip else cropped).unsqueeze(0)
                latents = family.encode_images(model, pixels.to(device, dtype)).squeeze(0).float().cpu()
                if file is not None:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    save_file({"latents": latents}, str(file))
            cache[(index, flip)] = {"latents": latents, "original_size": original, "crop": crop,
                                    "mask": load_mask(plan.cfg, record, original, bucket, crop, flip)}
    return cache


@torch.no_grad()
def cache_text(plan: EpochPlan, family: ModelFamily, model: LoadedModel, cfg: TrainConfig,
               disk_dir: Path | None = None) -> dict[str, TextOut]:
    """{caption: the family's text outputs}: only valid when captions never change and the text encoders are
    frozen. On disk (cache_text_encoder_outputs_to_disk) each caption is one file named by its hash."""
    captions = sorted({plan.scan.images[s.record].caption for s in plan.samples})
    out = {}
    for caption in captions:
        file = None
        if disk_dir is not None:
            settings = sorted(family.text_settings(cfg).items())
            ident = f"{model.name}:{family.info.name}:{settings}:{caption}"
            file = disk_dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.safetensors"
        if file is not None and file.is_file():
            stored = load_file(str(file))
            out[caption] = tuple(stored.get(str(i)) for i in range(int(stored["count"].item())))
            continue
        encoded = family.encode_text(model, [caption], cfg)
        out[caption] = tuple(t[0].float().cpu() if t is not None else None for t in encoded)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tensors = {str(i): t for i, t in enumerate(out[caption]) if t is not None}
            save_file({**tensors, "count": torch.tensor(len(out[caption]))}, str(file))
    return out


def stack_text(entries: list[TextOut], device: torch.device) -> TextOut:
    """Cached per-caption outputs → one batch. Text of varying length (a Qwen encoder gives each caption its own)
    is padded with zeros at the end to the longest: its attention mask, one of the outputs, pads with 0 = masked."""
    out = []
    for i in range(len(entries[0])):
        parts = [e[i] for e in entries]
        if parts[0] is None:
            out.append(None)
        elif parts[0].ndim and len({p.shape[0] for p in parts}) > 1:
            out.append(pad_sequence(parts, batch_first=True).to(device))
        else:
            out.append(torch.stack(parts).to(device))
    return tuple(out)
