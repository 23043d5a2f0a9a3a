"""Masked loss (masked_loss with alpha_mask or conditioning_data_dir): masks cut and flipped with their images,
and a region a mask leaves out sends no gradient, for the SD and the DiT loss alike."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import base_values
from tests.test_training import Recorder
from trainer.data.dataset import scan_dataset
from trainer.data.loader import BatchDataset, EpochPlan
from trainer.families import runtime
from trainer.job.config import build_config
from trainer.job.preflight import check
from trainer.training.loop import train


def half_masked_dataset(root):
    """Two 64 px images whose right half is the subject: one says so in its alpha channel, one in a mask image."""
    folder = root / "data" / "1_sks"
    folder.mkdir(parents=True)
    masks = root / "masks"
    masks.mkdir()
    half = Image.new("L", (64, 64), 0)
    half.paste(255, (32, 0, 64, 64))
    rgba = Image.new("RGBA", (64, 64), (200, 30, 30, 255))
    rgba.putalpha(half)
    rgba.save(folder / "a.png")
    Image.new("RGB", (64, 64), (30, 30, 200)).save(folder / "b.png")
    half.resize((32, 32)).save(masks / "b.png")  # a mask need not be the image's size
    for name in ("a", "b"):
        (folder / f"{name}.txt").write_text("sks, a square")
    return root / "data", masks


def test_masks_come_from_alpha_or_the_conditioning_folder_and_are_flipped_with_their_image(tmp_path):
    data, masks = half_masked_dataset(tmp_path)
    values = base_values(tmp_path, data, tmp_path / "out", masked_loss=True, alpha_mask=True,
                         conditioning_data_dir=str(masks), enable_bucket=False, resolution="64", flip_aug=True,
                         train_batch_size=1)
    cfg = build_config(values)
    plan = EpochPlan(scan_dataset(str(data), None), cfg)
    flips = set()
    for epoch in range(1, 6):
        for batch in BatchDataset(plan, epoch):
            mask = batch["masks"][0, 0]
            left, right = float(mask[:, :32].mean()), float(mask[:, 32:].mean())
            # the right half, or mirrored (a mask scaled from 32 px has a soft edge of a pixel or so)
            assert (round(left, 1), round(right, 1)) in ((0.0, 1.0), (1.0, 0.0)), (left, right)
            flips.add(left > 0.5)
    assert flips == {True, False}  # flip_aug flipped some masks with their images and left others
    plain = build_config({**values, "masked_loss": False, "alpha_mask": False, "conditioning_data_dir": None})
    assert "masks" not in next(iter(BatchDataset(EpochPlan(scan_dataset(str(data), None), plain), 1)))


def _gradient_of_the_prediction(family_name, model, latents, text, batch, cfg):
    family = runtime(family_name)
    captured = {}
    if family_name == "sd15":
        def keep(module, args, output):
            output.sample.retain_grad()
            captured["prediction"] = output.sample
        handle = model.unet.register_forward_hook(keep)
    else:
        original = family.training_velocity

        def velocity(*args):
            captured["prediction"] = original(*args)
            captured["prediction"].retain_grad()
            return captured["prediction"]
        family.training_velocity = velocity
    try:
        family.loss(model, cfg, latents, text, batch, torch.Generator().manual_seed(0)).sum().backward()
    finally:
        if family_name == "sd15":
            handle.remove()
        else:
            del family.training_velocity
    return captured["prediction"].grad


@pytest.mark.parametrize("family_name", ["sd15", "qwen_image"])
def test_a_region_the_mask_leaves_out_gets_no_gradient(family_name, tiny_models, qwen_tiny, tmp_path):
    folder = tiny_models["sd15"] if family_name == "sd15" else qwen_tiny
    family = runtime(family_name)
    model = family.load_location(str(folder))
    cfg = build_config(base_values(folder, tmp_path, tmp_path / "out", model_family=family_name))
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = family.encode_images(model, pixels).float()
        text = family.encode_text(model, ["sks", "a square"], cfg)
    masks = torch.zeros(2, 1, 64, 64)
    masks[..., 32:] = 1.0  # the right half of each picture is trained
    grad = _gradient_of_the_prediction(family_name, model, latents, text, {"masks": masks, "original_sizes":
                                       [(64, 64)] * 2, "crops": [(0, 0)] * 2}, cfg)
    half = grad.shape[-1] // 2
    assert torch.count_nonzero(grad[..., :half]) == 0 and torch.count_nonzero(grad[..., half:]) > 0
    unmasked = _gradient_of_the_prediction(family_name, model, latents, text, {}, cfg)
    assert torch.count_nonzero(unmasked[..., :half]) > 0


def test_masked_training_runs_with_cached_latents_and_needs_masks(tiny_models, tmp_path):
    data, masks = half_masked_dataset(tmp_path)
    values = base_values(tiny_models["sd15"], data, tmp_path / "out", masked_loss=True, alpha_mask=True,
                         conditioning_data_dir=str(masks), cache_latents=True, max_train_epochs=1)
    assert train(build_config(values), Recorder()).final_path.exists()
    lacking = build_config({**values, "alpha_mask": False, "conditioning_data_dir": None})
    assert {f.field: f.message for f in check(lacking) if f.level == "error"}["masked_loss"].startswith("needs masks")
    idle = build_config({**values, "masked_loss": False})
    assert {f.field for f in check(idle) if f.level == "warning"} >= {"alpha_mask"}
