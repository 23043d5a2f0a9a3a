"""Z-Image (Base and Turbo) through the family seam, on the tiny model.

The expected module names are derived here from Z-Image's published architecture (Tongyi-MAI/Z-Image-Turbo,
transformer/config.json: dim 3840, 30 layers, 2 noise-refiner and 2 context-refiner blocks): every block has
attention to_q / to_k / to_v / to_out.0 and feed_forward w1 / w2 / w3; the main layers and the noise refiner are
modulated by the timestep (adaLN_modulation.0), the context refiner is not. Names are `diffusion_model.` + the
diffusers module path, the layout ComfyUI maps onto its fused qkv and diffusers' Z-Image loader reads:
30 × 8 + 2 × 8 + 2 × 7 = 270 modules.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import ZImageTransformer2DModel
from safetensors import safe_open
from safetensors.torch import save_file

from tests.conftest import base_values, peft_and_musubi, predictions_per_layout, predictions_with_lora
from tests.test_training import Recorder
from trainer.families import folder_family, runtime
from trainer.families.base import ModelLoadError
from trainer.job.config import build_config
from trainer.job.preflight import check
from trainer.job.prompts import PromptSpec
from trainer.output.generate import generate, load_lora_file
from trainer.training.loop import train

ATTENTION = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0")
FEED_FORWARD = ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


def published_names(layers: int, refiners: int) -> set[str]:
    modulated = (*ATTENTION, *FEED_FORWARD, "adaLN_modulation.0")
    names = {f"layers.{i}.{m}" for i in range(layers) for m in modulated}
    names |= {f"noise_refiner.{i}.{m}" for i in range(refiners) for m in modulated}
    names |= {f"context_refiner.{i}.{m}" for i in range(refiners) for m in (*ATTENTION, *FEED_FORWARD)}
    return {f"diffusion_model.{name}" for name in names}


@pytest.fixture(scope="module")
def zimage_tiny(tmp_path_factory):
    from trainer.families.tiny import make_tiny

    root = tmp_path_factory.mktemp("zimage-models")
    return make_tiny(root / "tiny-zimage", "zimage")


def _values(tiny, data, out, **extra):
    zimage = {"model_family": "zimage", "network_module": "networks.lora_zimage", "network_train_unet_only": True,
              "timestep_sampling": "shift", "discrete_flow_shift": 3.0, "model_prediction_type": "raw"}
    return base_values(tiny, data, out, **{**zimage, **extra})


def _inputs(model):
    torch.manual_seed(3)
    family = runtime(model.family)
    return torch.randn(2, 16, 8, 8), torch.tensor([0.3, 0.8]), family._encode(model, ["sks, a red circle", "x"])


def test_module_names_on_the_full_size_architecture_match_the_published_layout():
    class Full:
        family = "zimage"
        with init_empty_weights():
            transformer = ZImageTransformer2DModel(dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30,
                                                   n_kv_heads=30, cap_feat_dim=2560)

    names = {c.name for c in runtime("zimage").lora_targets(Full(), with_conv=True)}
    assert names == published_names(30, 2) and len(names) == 270


def test_a_zimage_lora_trains_with_previews_and_reloads_in_diffusers_with_the_same_output(zimage_tiny, dataset,
                                                                                         tmp_path):
    cfg = build_config(_values(zimage_tiny, dataset, tmp_path / "out", cache_latents=True,
                               cache_text_encoder_outputs=True, gradient_checkpointing=True, save_every_n_epochs=1,
                               sample_every_n_epochs=1, sample_prompts=["sks --s 2"], sample_images_per_prompt=1))
    assert [f for f in check(cfg) if f.level == "error"] == []
    result = train(cfg, Recorder())
    assert (tmp_path / "out" / "sample" / "t_e000002_00_0.png").exists()
    with safe_open(str(result.final_path), framework="pt") as handle:
        meta = handle.metadata()
        modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in handle.keys()}  # noqa: SIM118
    assert meta["modelspec.architecture"] == "z-image/lora" and meta["ss_network_module"] == "networks.lora_zimage"
    assert modules == published_names(2, 1)

    out = predictions_with_lora("zimage", zimage_tiny, result.final_path, _inputs)
    assert (out["ours"] - out["base"]).abs().max() > 1e-3 and torch.equal(out["at_zero"], out["base"])
    assert torch.allclose(out["ours"], out["diffusers"], atol=1e-5)


def test_other_zimage_lora_layouts_read_as_lorabakes(zimage_tiny, dataset, tmp_path):
    cfg = build_config(_values(zimage_tiny, dataset, tmp_path / "out", max_train_epochs=1))
    ours = load_lora_file(train(cfg, Recorder()).final_path)
    peft, musubi = peft_and_musubi(ours)
    model = runtime("zimage").load_location(str(zimage_tiny))
    outputs = predictions_per_layout("zimage", model, _inputs, [ours, peft, musubi], 31)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6) and torch.allclose(outputs[0], outputs[2], atol=1e-6)
    path = tmp_path / "peft.safetensors"
    save_file(peft, str(path))
    again = build_config(_values(zimage_tiny, dataset, tmp_path / "again", max_train_epochs=1,
                                 network_weights=str(path)))
    assert train(again, Recorder()).final_path.exists()


def test_zimage_trains_with_fp8_storage_and_block_swap(zimage_tiny, dataset, tmp_path):
    cfg = build_config(_values(zimage_tiny, dataset, tmp_path / "out", fp8_base=True, blocks_to_swap=2,
                               mixed_precision="bf16", max_train_epochs=1))
    assert train(cfg, Recorder()).final_path.exists()


def test_turbo_warns_about_its_distillation_and_trains_over_a_merged_training_adapter(zimage_tiny, dataset,
                                                                                       tmp_path):
    plain = build_config(_values(zimage_tiny, dataset, tmp_path / "a", model_family="zimage_turbo",
                                 max_train_epochs=1))
    warning = {f.field: f.message for f in check(plain) if f.level == "warning"}["training_adapter"]
    assert "step-distilled" in warning and "Z-Image Base" in warning
    adapter = train(plain, Recorder()).final_path
    adapted = build_config(_values(zimage_tiny, dataset, tmp_path / "b", model_family="zimage_turbo",
                                   max_train_epochs=1, training_adapter=str(adapter)))
    assert "training_adapter" not in {f.field for f in check(adapted)}
    family = runtime("zimage_turbo")
    base = family.load_location(str(zimage_tiny))
    merged = family.load(adapted)
    before = base.transformer.state_dict()
    changed = [n for n, w in merged.transformer.state_dict().items() if not torch.equal(w, before[n])]
    assert changed and all(n.endswith(".weight") for n in changed)
    result = train(adapted, Recorder())
    assert set(load_lora_file(result.final_path)) == set(load_lora_file(adapter))  # the adapter is not in the file
    errors = {f.field for f in check(build_config(_values(zimage_tiny, dataset, tmp_path / "c",
                                                          network_train_unet_only=False))) if f.level == "error"}
    assert "network_train_unet_only" in errors
    other = tmp_path / "sd-lora.safetensors"
    save_file({"lora_unet_mid_block_proj.lora_down.weight": torch.zeros(2, 4),
               "lora_unet_mid_block_proj.lora_up.weight": torch.zeros(4, 2)}, str(other))
    for wrong, message in ((other, "not a Z-Image LoRA"), (tmp_path / "missing.safetensors", "no such file")):
        with pytest.raises(ModelLoadError, match=message):
            family.load(build_config(_values(zimage_tiny, dataset, tmp_path / "d", model_family="zimage_turbo",
                                             training_adapter=str(wrong))))


def test_turbo_and_base_render_with_their_own_steps_and_guidance(zimage_tiny, tmp_path):
    family = runtime("zimage_turbo")
    assert folder_family(str(zimage_tiny)) == "zimage"
    turbo_folder = tmp_path / "Z-Image-Turbo"
    turbo_folder.symlink_to(zimage_tiny)
    assert folder_family(str(turbo_folder)) == "zimage_turbo"
    model = family.load_location(str(zimage_tiny))
    turbo = family.settings_for((64, 64), "euler")
    base = runtime("zimage").settings_for((64, 64), "euler")
    assert (turbo.steps, turbo.cfg_scale, base.steps, base.cfg_scale) == (9, 0.0, 28, 4.0)
    spec = PromptSpec("sks", steps=2)
    first = generate(model, spec, {}, seed=5, default_size=(64, 64))[0]
    assert first.size == (64, 64) and generate(model, spec, {}, seed=5, default_size=(64, 64))[0].tobytes() == \
        first.tobytes()


def test_a_single_file_zimage_transformer_and_qwen3_file_load_like_the_folder(zimage_tiny, dataset, tmp_path):
    from trainer.families.tiny import write_single_file

    family = runtime("zimage")
    folder = family.load_location(str(zimage_tiny))
    single = write_single_file(zimage_tiny, "zimage", str(tmp_path / "z_image.safetensors"))
    qwen = tmp_path / "qwen_3.safetensors"  # ComfyUI keeps the causal-LM layout: model.… and lm_head
    save_file({**{f"model.{k}": v.clone() for k, v in folder.text_encoders[0].state_dict().items()},
               "lm_head.weight": torch.zeros(3, 3)}, str(qwen))
    cfg = build_config(_values(single, dataset, tmp_path / "out", pretrained_model_config=str(zimage_tiny),
                               qwen3=str(qwen), max_train_epochs=1))
    model = family.load(cfg)
    noisy, sigmas, text = _inputs(folder)
    with torch.no_grad():
        assert torch.equal(family.predict(model, noisy, sigmas, text), family.predict(folder, noisy, sigmas, text))
    assert train(cfg, Recorder()).final_path.exists()
    with pytest.raises(ModelLoadError, match="needs a local diffusers folder"):
        family.load(build_config({"pretrained_model_name_or_path": str(single), "model_family": "zimage"}))
