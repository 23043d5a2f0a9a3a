from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from trainer.families.tiny import make_tiny

    root = tmp_path_factory.mktemp("models")
    return {family: make_tiny(root / family, family) for family in ("sd15", "sd2", "sdxl")}


@pytest.fixture(scope="session")
def qwen_tiny(tmp_path_factory) -> Path:
    from trainer.families.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("qwen-models") / "tiny-qwen_image", "qwen_image")


@pytest.fixture
def dataset(tmp_path) -> Path:
    from trainer.data.synthetic import make_dataset

    root = tmp_path / "data"
    make_dataset(root, count=6, repeats=2)
    return root


def base_values(model: Path, data: Path, out: Path, **extra) -> dict:
    """The smallest realistic config: 64 px buckets on the tiny model."""
    values = {
        "pretrained_model_name_or_path": str(model), "train_data_dir": str(data), "output_dir": str(out),
        "output_name": "t", "resolution": "64", "enable_bucket": True, "min_bucket_reso": 32,
        "max_bucket_reso": 128, "bucket_reso_steps": 32, "max_train_epochs": 2, "train_batch_size": 2,
        "learning_rate": 1e-3, "network_dim": 4, "network_alpha": 2,
    }
    values.update(extra)
    return values


def predictions_with_lora(family_name: str, folder: Path, lora_file: Path, inputs) -> dict:
    """A DiT family's velocity for `inputs(model)` = (noisy, sigmas, text): without the LoRA, with it, with it at
    weight 0 (lorabake's network on the folder's model), and with diffusers' own loader (the pipeline's
    load_lora_weights) — the file must give diffusers what it gives us."""
    import torch

    from trainer.families import runtime
    from trainer.networks.network import LoRANetwork
    from trainer.output.generate import load_lora_file

    family = runtime(family_name)
    model = family.load_location(str(folder))
    noisy, sigmas, text = inputs(model)
    network, unmatched = LoRANetwork.from_weights(family.kohya_weights(load_lora_file(lora_file)),
                                                  family.lora_targets(model, with_conv=False))
    assert unmatched == []
    out = {}
    with torch.no_grad():
        out["base"] = family.predict(model, noisy, sigmas, text)
        network.attach()
        out["ours"] = family.predict(model, noisy, sigmas, text)
        network.set_multiplier(0.0)
        out["at_zero"] = family.predict(model, noisy, sigmas, text)
        network.detach()
        pipe = family._diffusers(family.pipeline).from_pretrained(folder)
        pipe.load_lora_weights(str(lora_file))
        out["diffusers"] = family.predict(family._from_pipeline(pipe, "diffusers"), noisy, sigmas, text)
    return out


def peft_and_musubi(ours: dict) -> tuple[dict, dict]:
    """A LoRA in the `diffusion_model.` + diffusers-path layout (Z-Image, Qwen-Image) written the two other ways
    users bring it: PEFT's lora_A / lora_B under `transformer.` (alpha folded into B) and musubi-tuner's
    `lora_unet_` names."""
    peft, musubi = {}, {}
    for key, tensor in ours.items():
        path = key.removeprefix("diffusion_model.")
        module, _, name = path.partition(".lora_")
        if key.endswith(".alpha"):
            musubi[f"lora_unet_{path.removesuffix('.alpha').replace('.', '_')}.alpha"] = tensor
            continue
        scale = ours[f"diffusion_model.{module}.alpha"] / ours[f"diffusion_model.{module}.lora_down.weight"].shape[0]
        peft[f"transformer.{module}.lora_{'A' if name.startswith('down') else 'B'}.weight"] = \
            tensor * scale if name.startswith("up") else tensor
        musubi[f"lora_unet_{module.replace('.', '_')}.lora_{name}"] = tensor
    return peft, musubi


def predictions_per_layout(family_name: str, model, inputs, layouts: list[dict], adapters: int) -> list:  # noqa: ANN001
    """The family's velocity with each file layout's LoRA attached; every layout must match all of its modules."""
    import torch

    from trainer.families import runtime
    from trainer.networks.network import LoRANetwork

    family = runtime(family_name)
    noisy, sigmas, text = inputs(model)
    outputs = []
    for weights in layouts:
        network, unmatched = LoRANetwork.from_weights(family.kohya_weights(weights),
                                                      family.lora_targets(model, with_conv=False))
        assert unmatched == [] and len(network.adapters) == adapters
        network.attach()
        with torch.no_grad():
            outputs.append(family.predict(model, noisy, sigmas, text))
        network.detach()
    return outputs
