"""Validation loss: held-out images scored after every epoch at the same noise levels and the same noise, so the
numbers of two epochs compare (a falling training loss alone does not say when a LoRA starts to overfit).

The images come from `validation_data_dir` (a kohya folder like the training data; the service fills it with the
share of the dataset that `validation_split` holds out). Each is center-cropped to the training resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.data.dataset import scan_dataset
from trainer.data.loader import crop_to_bucket, load_rgb, to_tensor
from trainer.families.base import LoadedModel, ModelFamily, TextOut
from trainer.job.config import TrainConfig

SEED_OFFSET = 7919  # the validation noise is its own stream, apart from the training noise


@dataclass
class ValidationSet:
    latents: list[torch.Tensor]  # one [1, C, h, w] per image
    captions: list[str]
    batches: list[dict]  # what the family's loss reads besides latents and text (SDXL: sizes and crops)
    texts: list[TextOut] | None  # encoded once when the text encoders are frozen, else at every evaluation


def prepare_validation(cfg: TrainConfig, family: ModelFamily, model: LoadedModel, device: torch.device,
                       vae_dtype: torch.dtype, text_frozen: bool) -> ValidationSet | None:
    if not cfg.validation_data_dir:
        return None
    records = scan_dataset(cfg.validation_data_dir, None, cfg.caption_extension).train
    if not records:
        return None
    width, height = cfg.resolution_wh
    latents, batches = [], []
    with torch.no_grad():
        for record in records:
            image = load_rgb(record.path)
            cropped, crop = crop_to_bucket(image, (width, height), None)
            pixels = to_tensor(cropped)[None].to(device, vae_dtype)
            latents.append(family.encode_images(model, pixels).float())
            batches.append({"original_sizes": [(image.height, image.width)], "crops": [crop],
                            "is_reg": torch.tensor([False])})
    captions = [r.caption for r in records]
    vset = ValidationSet(latents, captions, batches, None)
    if text_frozen:
        vset.texts = _encode(family, model, cfg, captions)
    return vset


def _encode(family: ModelFamily, model: LoadedModel, cfg: TrainConfig, captions: list[str]) -> list[TextOut]:
    with torch.no_grad():
        return [family.encode_text(model, [caption], cfg) for caption in captions]


def validation_loss(vset: ValidationSet, family: ModelFamily, model: LoadedModel, cfg: TrainConfig,
                    autocast) -> float:  # noqa: ANN001 - accelerate's autocast context factory
    """The mean loss over the held-out images, with the noise generator started from the same seed each time."""
    device = vset.latents[0].device
    generator = torch.Generator(device).manual_seed(cfg.seed + SEED_OFFSET)
    texts = vset.texts or _encode(family, model, cfg, vset.captions)
    losses = []
    with torch.no_grad(), autocast():
        for latents, text, batch in zip(vset.latents, texts, vset.batches, strict=True):
            losses.append(float(family.loss(model, cfg, latents, text, batch, generator).float().mean()))
    return sum(losses) / len(losses)
