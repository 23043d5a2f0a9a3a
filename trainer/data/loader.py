"""Training batches: bucketed, deterministic per (seed, epoch), with captions and augmentation applied.

Every random choice about data is drawn from a generator seeded by (seed, epoch, batch, position), so the
order and content of an epoch do not depend on worker processes, and a run resumed mid-epoch sees exactly
the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from trainer.data.buckets import BucketAssigner, Size, resize_for_bucket
from trainer.data.captions import CaptionRules, process_caption
from trainer.data.dataset import DatasetScan, ImageRecord
from trainer.data.masks import crop_mask, mask_image
from trainer.job.config import TrainConfig
from trainer.job.steps import bucket_settings, reg_sample_counts


def noise_seed(seed: int, epoch: int, batch: int) -> int:
    """The noise and noise levels of a batch depend on the run's seed and the batch's place only, like its data: the
    same with any number of processes, and after a resume."""
    digest = hashlib.blake2b(f"{seed}:noise:{epoch}:{batch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Sample:
    record: int  # index into the scan's images
    bucket: Size


def caption_rules(cfg: TrainConfig) -> CaptionRules:
    return CaptionRules(cfg.shuffle_caption, cfg.keep_tokens, cfg.caption_dropout_rate,
                        cfg.caption_dropout_every_n_epochs, cfg.caption_tag_dropout_rate)


def load_rgb(path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def color_jitter(image: Image.Image, rng: random.Random) -> Image.Image:
    """Hue shift up to ±0.05 of the circle and gamma in [0.8, 1.25]."""
    hue, sat, val = image.convert("HSV").split()
    shift = round(rng.uniform(-0.05, 0.05) * 256)
    hue = hue.point(lambda h: (h + shift) % 256)
    gamma = rng.uniform(0.8, 1.25)
    image = Image.merge("HSV", (hue, sat, val)).convert("RGB")
    return image.point([round(((i / 255) ** gamma) * 255) for i in range(256)] * 3)


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def crop_to_bucket(image: Image.Image, bucket: Size, rng: random.Random | None) -> tuple[Image.Image, tuple[int, int]]:
    """Scale to cover the bucket, then crop (centered, or at a random place); returns the crop's top-left."""
    width, height = resize_for_bucket(image.width, image.height, bucket)
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    spare_x, spare_y = width - bucket[0], height - bucket[1]
    if rng is not None:
        left, top = rng.randint(0, spare_x), rng.randint(0, spare_y)
    else:
        left, top = spare_x // 2, spare_y // 2
    return image.crop((left, top, left + bucket[0], top + bucket[1])), (top, left)


class EpochPlan:
    """The samples of one epoch grouped into batches: shuffled inside buckets, then batches shuffled."""

    def __init__(self, scan: DatasetScan, cfg: TrainConfig) -> None:
        self.scan = scan
        self.cfg = cfg
        assigner = BucketAssigner(bucket_settings(cfg))
        self.buckets = [assigner.assign(r.width, r.height) for r in scan.images]
        train = [i for i, r in enumerate(scan.images) if not r.is_reg]
        reg = [i for i, r in enumerate(scan.images) if r.is_reg]
        train_total = sum(scan.images[i].repeats for i in train)
        reg_counts = reg_sample_counts([scan.images[i].repeats for i in reg], train_total)
        self.samples: list[Sample] = []
        for i in train:
            self.samples += [Sample(i, self.buckets[i])] * scan.images[i].repeats
        for i, count in zip(reg, reg_counts, strict=True):
            self.samples += [Sample(i, self.buckets[i])] * count

    def batches(self, epoch: int) -> list[list[Sample]]:
        rng = random.Random(f"{self.cfg.seed}:order:{epoch}")
        by_bucket: dict[Size, list[Sample]] = {}
        for sample in self.samples:
            by_bucket.setdefault(sample.bucket, []).append(sample)
        batches: list[list[Sample]] = []
        size = self.cfg.train_batch_size
        for bucket in sorted(by_bucket):
            items = by_bucket[bucket]
            rng.shuffle(items)
            batches += [items[i : i + size] for i in range(0, len(items), size)]
        rng.shuffle(batches)
        return batches


class BatchDataset(torch.utils.data.Dataset):
    """Item i is a whole batch of an epoch, collated (used with batch_size=None): from `first_batch` on, every
    `every`-th one starting at `offset` (process `offset` of `every` takes its share)."""

    def __init__(self, plan: EpochPlan, epoch: int, latent_cache: dict | None = None, first_batch: int = 0,
                 every: int = 1, offset: int = 0) -> None:
        self.plan = plan
        self.epoch = epoch
        every_batch = plan.batches(epoch)
        self.epoch_batches = len(every_batch)  # the whole epoch's, whatever share this process takes
        self.batches = every_batch[first_batch + offset::every]
        self.first_batch, self.every, self.offset = first_batch, every, offset
        self.rules = caption_rules(plan.cfg)
        self.latent_cache = latent_cache

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        cfg, images = self.plan.cfg, self.plan.scan.images
        items = []
        for position, sample in enumerate(self.batches[index]):
            rng = random.Random(f"{cfg.seed}:sample:{self.epoch}:{self.batch_index(index)}:{position}")
            record: ImageRecord = images[sample.record]
            flip = cfg.flip_aug and rng.random() < 0.5
            caption = process_caption(record.caption, self.rules, rng, self.epoch)
            item = {"caption": caption, "is_reg": record.is_reg}
            if self.latent_cache is not None:
                cached = self.latent_cache[(sample.record, flip)]
                item.update(latents=cached["latents"], original_size=cached["original_size"], crop=cached["crop"],
                            mask=cached.get("mask"))
            else:
                item.update(self.load_pixels(record, sample.bucket, flip, rng))
            items.append(item)
        return collate(items)

    def batch_index(self, index: int) -> int:
        """The epoch's batch number of item `index`."""
        return self.first_batch + self.offset + index * self.every

    def load_pixels(self, record: ImageRecord, bucket: Size, flip: bool, rng: random.Random | None) -> dict:
        image = load_rgb(record.path)
        original = (image.height, image.width)
        image, crop = crop_to_bucket(image, bucket, rng if self.plan.cfg.random_crop else None)
        if flip:
            image = ImageOps.mirror(image)
        if self.plan.cfg.color_aug and rng is not None:
            image = color_jitter(image, rng)
        return {"pixels": to_tensor(image), "original_size": original, "crop": crop,
                "mask": load_mask(self.plan.cfg, record, original, bucket, crop, flip)}


def load_mask(cfg: TrainConfig, record: ImageRecord, original: tuple[int, int], bucket: Size, crop: tuple[int, int],
              flip: bool) -> torch.Tensor | None:
    """masked_loss: the image's mask, scaled to the image (`original` = height, width as loaded), cut and flipped as
    the image was; None when masks are off."""
    if not cfg.masked_loss:
        return None
    mask = mask_image(record.path, cfg.alpha_mask, cfg.conditioning_data_dir)
    if mask is None:  # an image without a mask is trained whole
        return torch.ones(1, bucket[1], bucket[0])
    return crop_mask(mask, (original[1], original[0]), bucket, crop, flip)


def collate(items: list[dict]) -> dict:
    key = "latents" if "latents" in items[0] else "pixels"
    out = {
        key: torch.stack([item[key] for item in items]),
        "captions": [item["caption"] for item in items],
        "is_reg": torch.tensor([item["is_reg"] for item in items]),
        "original_sizes": [item["original_size"] for item in items],
        "crops": [item["crop"] for item in items],
    }
    if items[0].get("mask") is not None:
        out["masks"] = torch.stack([item["mask"] for item in items])
    return out
