"""cache_latents (memory or disk, both flips) and cache_text_encoder_outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import ImageOps
from safetensors.torch import load_file, save_file

from trainer.data import EpochPlan, crop_to_bucket, load_rgb, to_tensor
from trainer.models import BaseModel, encode_text


def _disk_key(path: Path, bucket: tuple[int, int], flip: bool) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{bucket}:{flip}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


@torch.no_grad()
def cache_latents(plan: EpochPlan, model: BaseModel, device: torch.device, dtype: torch.dtype,
                  disk_dir: Path | None, with_flip: bool) -> dict:
    """{(record index, flipped): {latents, original_size, crop}} for every image used in training."""
    cache: dict = {}
    used = sorted({s.record for s in plan.samples})
    scale = model.vae.config.scaling_factor
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
                dist = model.vae.encode(pixels.to(device, dtype)).latent_dist
                latents = (dist.mean * scale).squeeze(0).float().cpu()
                if file is not None:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    save_file({"latents": latents}, str(file))
            cache[(index, flip)] = {"latents": latents, "original_size": original, "crop": crop}
    return cache


@torch.no_grad()
def cache_text(plan: EpochPlan, model: BaseModel, clip_skip: int | None, max_token_length: int | None) -> dict:
    """{caption: (hidden states, pooled)}: only valid when captions never change and the TE is frozen."""
    captions = sorted({plan.scan.images[s.record].caption for s in plan.samples})
    out = {}
    for caption in captions:
        hidden, pooled = encode_text(model, [caption], clip_skip, max_token_length)
        out[caption] = (hidden[0].cpu(), pooled[0].cpu() if pooled is not None else None)
    return out
