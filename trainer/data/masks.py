"""Masked loss (masked_loss, as sd-scripts users write it): a mask per image, white trained and black ignored, from
its alpha channel (alpha_mask) or from an image of the same name in conditioning_data_dir. It is cropped and
flipped with its image and weights the loss in latent space, for every family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from trainer.data.buckets import Size, resize_for_bucket

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def mask_source(image_path: Path, alpha_mask: bool, conditioning_dir: str | None) -> Path | None:
    """Where the image's mask is, found from file headers and names only: the image itself when alpha_mask is on
    and it has an alpha channel, else the conditioning folder's image of the same name; None when neither."""
    if alpha_mask:
        with Image.open(image_path) as image:  # the header tells the bands
            if "A" in image.getbands():
                return image_path
    if conditioning_dir:
        return next((c for c in _candidates(image_path, Path(conditioning_dir)) if c.is_file()), None)
    return None


def mask_image(image_path: Path, alpha_mask: bool, conditioning_dir: str | None) -> Image.Image | None:
    """The image's mask in L mode (its alpha channel, or the conditioning image's brightness); None when it has
    none (then the whole image is trained)."""
    source = mask_source(image_path, alpha_mask, conditioning_dir)
    if source is None:
        return None
    with Image.open(source) as picture:
        upright = ImageOps.exif_transpose(picture)
        return upright.getchannel("A") if source == image_path else upright.convert("L")


def _candidates(image_path: Path, root: Path) -> list[Path]:
    """Where an image's mask may be: beside the image's own folder names under the root (`10_alice/x.png`, and
    `reg/1_woman/x.png` for a regularization image: the layout lorabake's export mirrors), or flat (`x.png`)."""
    folders = [Path(*image_path.parent.parts[-depth:]) for depth in (2, 1) if len(image_path.parent.parts) >= depth]
    return [root / folder / f"{image_path.stem}{suffix}" for folder in [*folders, Path()] for suffix in IMAGE_SUFFIXES]


def crop_mask(mask: Image.Image, size: tuple[int, int], bucket: Size, corner: tuple[int, int],
              flip: bool) -> torch.Tensor:
    """The mask scaled to its image's size, cut where the image was cut (`corner` = top, left), flipped with it:
    [1, H, W] in 0–1."""
    width, height = resize_for_bucket(*size, bucket)
    top, left = corner
    mask = mask.resize((width, height), Image.Resampling.BILINEAR).crop((left, top, left + bucket[0],
                                                                          top + bucket[1]))
    if flip:
        mask = ImageOps.mirror(mask)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0).unsqueeze(0)


def per_sample(elementwise: torch.Tensor, batch: dict) -> torch.Tensor:
    """An elementwise loss [B, C, h, w] averaged per sample, weighted by the batch's masks scaled to the latents'
    size: what a mask leaves out adds nothing to the loss and sends no gradient."""
    masks = batch.get("masks")
    if masks is not None:
        weights = F.interpolate(masks.to(elementwise.device, elementwise.dtype), size=elementwise.shape[-2:],
                                mode="area")
        elementwise = elementwise * weights
    return elementwise.mean(dim=(1, 2, 3))
