"""A quantized frozen base (base_weights fp8 / int8 / nf4, torchao weight-only) on the tiny Qwen-Image, on the CPU.

Stated tolerances for the transformer's velocity against the bf16 base's, relative (‖Δ‖ / ‖v‖): fp8 and int8 within
2 %, nf4 within 5 % (measured here: 0.5 %, 0.3 % and 1.0 %). Storage of the blocks' Linear weights, scales
included: fp8 and int8 0.55–0.57 of bf16, nf4 0.26.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tests.test_qwen_image import _inputs, _values
from tests.test_training import Recorder
from trainer.data.dataset import scan_dataset
from trainer.data.loader import crop_to_bucket, load_rgb, to_tensor
from trainer.families import runtime
from trainer.job.config import build_config
from trainer.job.preflight import check
from trainer.networks.network import LoRANetwork
from trainer.output.generate import load_lora_file
from trainer.training.loop import train

TOLERANCE = {"fp8": 0.02, "int8": 0.02, "nf4": 0.05}


def placed(folder, dataset, tmp_path, kind):
    family = runtime("qwen_image")
    cfg = build_config(_values(folder, dataset, tmp_path / kind, base_weights=kind, mixed_precision="bf16"))
    model = family.load(cfg)
    family.place(model, cfg, torch.device("cpu"), torch.bfloat16)
    return family, cfg, model


def linear_bytes(model) -> int:
    def size(tensor) -> int:
        inner = [getattr(tensor, name) for name in getattr(tensor, "__tensor_flatten__", lambda: ([], None))()[0]]
        return sum(size(t) for t in inner) if inner else tensor.numel() * tensor.element_size()

    return sum(size(m.weight) for m in model.transformer.transformer_blocks.modules()
               if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("kind", ["fp8", "int8", "nf4"])
def test_a_quantized_base_predicts_within_tolerance_of_bf16_in_less_memory(qwen_tiny, dataset, tmp_path, kind):
    family, _, reference = placed(qwen_tiny, dataset, tmp_path, "bf16")
    _, _, quantized = placed(qwen_tiny, dataset, tmp_path, kind)
    noisy, sigmas, text = _inputs(reference)
    with torch.no_grad():
        ours = family.predict(quantized, noisy, sigmas, text).float()
        theirs = family.predict(reference, noisy, sigmas, text).float()
    assert (ours - theirs).norm() / theirs.norm() < TOLERANCE[kind]
    assert not torch.equal(ours, theirs)  # the weights really are stored differently
    ratio = linear_bytes(quantized) / linear_bytes(reference)
    assert ratio < {"fp8": 0.6, "int8": 0.6, "nf4": 0.4}[kind], ratio


def fixed_loss(family, cfg, model, dataset, lora=None) -> float:
    """The flow-matching loss on the dataset's 64 px images, fixed noise and noise levels."""
    records = [r for r in scan_dataset(str(dataset), None).train if (r.width, r.height) == (64, 64)]
    pixels = torch.stack([to_tensor(crop_to_bucket(load_rgb(r.path), (64, 64), None)[0]) for r in records])
    if lora:
        network, unmatched = LoRANetwork.from_weights(load_lora_file(lora),
                                                      family.lora_targets(model, with_conv=False))
        network.attach()
    with torch.no_grad():
        latents = family.encode_images(model, pixels.to(torch.bfloat16)).float()
        text = family.encode_text(model, [r.caption for r in records], cfg)
        losses = [family.loss(model, cfg, latents, text, {}, torch.Generator().manual_seed(seed)).mean().item()
                  for seed in range(8)]
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def usual_file(qwen_tiny, tmp_path_factory):
    """What a run on the bf16 base writes: the layout a quantized run's file must have."""
    from trainer.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("usual")
    make_dataset(root / "data", count=6, repeats=2)
    return train(build_config(_values(qwen_tiny, root / "data", root / "out", max_train_epochs=1)),
                 Recorder()).final_path


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_a_lora_trained_on_a_quantized_base_lowers_the_loss_and_writes_the_usual_file(qwen_tiny, usual_file, dataset,
                                                                                       tmp_path, kind):
    cfg = build_config(_values(qwen_tiny, dataset, tmp_path / "q", base_weights=kind, mixed_precision="bf16",
                               learning_rate=3e-3, max_train_epochs=4, gradient_checkpointing=True))
    assert [f for f in check(cfg) if f.level == "error"] == []
    lora = train(cfg, Recorder()).final_path
    family, _, model = placed(qwen_tiny, dataset, tmp_path, kind)
    before = fixed_loss(family, cfg, model, dataset)
    after = fixed_loss(family, cfg, model, dataset, lora)
    assert after < before * 0.98, (before, after)
    with safe_open(str(lora), framework="pt") as ours, safe_open(str(usual_file), framework="pt") as usual:
        assert set(ours.keys()) == set(usual.keys())  # noqa: SIM118
        for key in usual.keys():  # noqa: SIM118
            assert ours.get_slice(key).get_shape() == usual.get_slice(key).get_shape()
            assert ours.get_slice(key).get_dtype() == usual.get_slice(key).get_dtype()


def test_fp8_base_is_sd_scripts_name_for_fp8_weights_and_refuses_another_choice(qwen_tiny, dataset, tmp_path):
    cfg = build_config(_values(qwen_tiny, dataset, tmp_path / "x", fp8_base=True, base_weights="nf4"))
    assert {f.field: f.message for f in check(cfg) if f.level == "error"}["base_weights"].startswith("fp8_base asks")
    family, _, model = placed(qwen_tiny, dataset, tmp_path, "bf16")
    cfg = build_config(_values(qwen_tiny, dataset, tmp_path / "y", fp8_base=True))
    family.place(model, cfg, torch.device("cpu"), torch.bfloat16)
    assert type(model.transformer.transformer_blocks[0].attn.to_q.weight).__name__ == "Float8Tensor"
