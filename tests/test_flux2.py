"""FLUX.2 [klein] through the family seam, on the tiny model.

The expected module names are derived here from FLUX.2 [klein] 4B's published architecture (black-forest-labs,
transformer/config.json: 5 double-stream and 20 single-stream blocks) in the original (BFL) layout: each double
block has img_attn / txt_attn qkv and proj, img_mlp / txt_mlp 0 and 2; each single block linear1 and linear2;
named `lora_unet_` + the path with dots as underscores, as musubi-tuner writes them and ComfyUI and diffusers read
them: 5 × 8 + 20 × 2 = 80 modules.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import Flux2Transformer2DModel
from safetensors import safe_open
from safetensors.torch import save_file

from tests.conftest import base_values, predictions_with_lora
from tests.test_training import Recorder
from trainer.families import runtime
from trainer.job.config import build_config
from trainer.job.preflight import check
from trainer.job.prompts import PromptSpec
from trainer.output.generate import generate, load_lora_file
from trainer.training.loop import train

DOUBLE = ("img_attn_qkv", "img_attn_proj", "txt_attn_qkv", "txt_attn_proj", "img_mlp_0", "img_mlp_2", "txt_mlp_0",
          "txt_mlp_2")


def bfl_names(double: int, single: int) -> set[str]:
    names = {f"lora_unet_double_blocks_{i}_{m}" for i in range(double) for m in DOUBLE}
    return names | {f"lora_unet_single_blocks_{i}_{m}" for i in range(single) for m in ("linear1", "linear2")}


@pytest.fixture(scope="module")
def flux2_tiny(tmp_path_factory):
    from trainer.families.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("flux2-models") / "tiny-flux2", "flux2")


def _values(tiny, data, out, **extra):
    flux2 = {"model_family": "flux2", "network_module": "networks.lora_flux_2", "network_train_unet_only": True,
             "timestep_sampling": "flux_shift", "model_prediction_type": "raw"}
    return base_values(tiny, data, out, **{**flux2, **extra})


def _inputs(model):
    torch.manual_seed(3)
    return torch.randn(2, 128, 4, 4), torch.tensor([0.3, 0.8]), runtime("flux2")._encode(model, ["sks", "a cat"])


def test_module_names_on_the_klein_4b_architecture_match_the_published_layout():
    class Full:
        family = "flux2"
        with init_empty_weights():
            transformer = Flux2Transformer2DModel(num_layers=5, num_single_layers=20, num_attention_heads=24,
                                                  joint_attention_dim=7680, guidance_embeds=False)

    candidates = runtime("flux2").lora_targets(Full(), with_conv=True)
    assert {c.name for c in candidates} == bfl_names(5, 20) and len(candidates) == 80
    qkv = next(c for c in candidates if c.name == "lora_unet_double_blocks_0_img_attn_qkv")
    assert len(qkv.parts) == 3 and sum(p.out_features for p in qkv.parts) == 3 * 3072


def test_a_flux2_lora_trains_with_previews_and_reloads_in_diffusers_with_the_same_output(flux2_tiny, dataset,
                                                                                        tmp_path):
    cfg = build_config(_values(flux2_tiny, dataset, tmp_path / "out", cache_latents=True,
                               cache_text_encoder_outputs=True, gradient_checkpointing=True, save_every_n_epochs=1,
                               sample_every_n_epochs=1, sample_prompts=["sks --s 2"], sample_images_per_prompt=1))
    assert [f for f in check(cfg) if f.level == "error"] == []
    result = train(cfg, Recorder())
    assert (tmp_path / "out" / "sample" / "t_e000002_00_0.png").exists()
    with safe_open(str(result.final_path), framework="pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "flux-2-klein/lora"
        assert {k.split(".")[0] for k in handle.keys()} == bfl_names(1, 2)  # noqa: SIM118
    out = predictions_with_lora("flux2", flux2_tiny, result.final_path, _inputs)
    assert (out["ours"] - out["base"]).abs().max() > 1e-4 and torch.equal(out["at_zero"], out["base"])
    assert torch.allclose(out["ours"], out["diffusers"], atol=1e-5)

    # ai-toolkit's layout of the same LoRA (BFL names under diffusion_model., lora_A / lora_B, alpha folded in)
    weights = load_lora_file(result.final_path)
    toolkit = {}
    for key, tensor in weights.items():
        module, _, name = key.partition(".")
        if name == "alpha":
            continue
        path = module.removeprefix("lora_unet_").replace("_blocks_", "_blocks.").replace("_img_", ".img_")
        path = path.replace("_txt_", ".txt_").replace("_linear", ".linear").replace("attn_", "attn.")
        path = path.replace("mlp_", "mlp.").replace("double.blocks", "double_blocks")
        scale = weights[f"{module}.alpha"] / weights[f"{module}.lora_down.weight"].shape[0]
        toolkit[f"diffusion_model.{path}.lora_{'A' if 'down' in name else 'B'}.weight"] = \
            tensor * scale if "up" in name else tensor
    save_file(toolkit, str(tmp_path / "ai-toolkit.safetensors"))
    theirs = predictions_with_lora("flux2", flux2_tiny, tmp_path / "ai-toolkit.safetensors", _inputs)
    assert torch.allclose(theirs["ours"], out["ours"], atol=1e-6)

    # diffusers' own layout: PEFT lora_A / lora_B on each split module (q, k, v apart), fused back when read
    model = runtime("flux2").load_location(str(flux2_tiny))
    paths = {id(module): path for path, module in model.transformer.named_modules()}
    split = {}
    for candidate in runtime("flux2").lora_targets(model, with_conv=False):
        down, up = weights[f"{candidate.name}.lora_down.weight"], weights[f"{candidate.name}.lora_up.weight"]
        scale = weights[f"{candidate.name}.alpha"] / down.shape[0]
        row = 0
        for part in candidate.parts or (candidate.module,):
            split[f"transformer.{paths[id(part)]}.lora_A.weight"] = down * scale
            split[f"transformer.{paths[id(part)]}.lora_B.weight"] = up[row : row + part.out_features]
            row += part.out_features
    save_file(split, str(tmp_path / "diffusers.safetensors"))
    theirs = predictions_with_lora("flux2", flux2_tiny, tmp_path / "diffusers.safetensors", _inputs)
    assert torch.allclose(theirs["ours"], out["ours"], atol=1e-6)
    assert torch.allclose(theirs["diffusers"], out["ours"], atol=1e-5)

def test_flux2_trains_with_fp8_storage_and_block_swap_and_renders_its_few_steps(flux2_tiny, dataset, tmp_path):
    cfg = build_config(_values(flux2_tiny, dataset, tmp_path / "out", fp8_base=True, blocks_to_swap=2,
                               mixed_precision="bf16", max_train_epochs=1))
    assert train(cfg, Recorder()).final_path.exists()
    family = runtime("flux2")
    settings = family.settings_for((64, 64), "euler")
    assert (settings.steps, settings.cfg_scale) == (4, 1.0)
    model = family.load_location(str(flux2_tiny))
    first = generate(model, PromptSpec("sks"), {}, seed=2, default_size=(64, 64))[0]
    assert first.size == (64, 64) and first.tobytes() == generate(model, PromptSpec("sks"), {}, seed=2,
                                                                  default_size=(64, 64))[0].tobytes()
    assert first.tobytes() != generate(model, PromptSpec("sks", cfg_scale=3.0, negative="blurry"), {}, seed=2,
                                       default_size=(64, 64))[0].tobytes()


def test_a_single_file_flux2_transformer_and_qwen3_file_load_like_the_folder(flux2_tiny, dataset, tmp_path):
    from trainer.families.tiny import write_single_file

    family = runtime("flux2")
    folder = family.load_location(str(flux2_tiny))
    single = write_single_file(flux2_tiny, "flux2", str(tmp_path / "flux-2-klein.safetensors"))
    qwen = tmp_path / "qwen_3.safetensors"
    save_file({k: v.clone() for k, v in folder.text_encoders[0].state_dict().items() if k != "lm_head.weight"},
              str(qwen))
    cfg = build_config(_values(single, dataset, tmp_path / "out", pretrained_model_config=str(flux2_tiny),
                               qwen3=str(qwen), max_train_epochs=1))
    model = family.load(cfg)
    noisy, sigmas, text = _inputs(folder)
    with torch.no_grad():
        assert torch.equal(family.predict(model, noisy, sigmas, text), family.predict(folder, noisy, sigmas, text))
    assert train(cfg, Recorder()).final_path.exists()
