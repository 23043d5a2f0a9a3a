"""Qwen-Image through the family seam, on the tiny model.

The expected module names are derived here from Qwen-Image's published architecture (Qwen/Qwen-Image,
transformer/config.json: 60 double-stream blocks, 24 heads of 128, text features of 3584): every block's attention
(to_q / to_k / to_v / to_out.0 for the image stream, add_q_proj / add_k_proj / add_v_proj / to_add_out for the text
stream) and both streams' MLPs (net.0.proj, net.2); the modulation layers are left out, as musubi-tuner does. Names
are `diffusion_model.` + the diffusers module path, the layout ComfyUI's Qwen-Image LoRA loader maps one to one:
60 × 12 = 720 modules.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers import QwenImageTransformer2DModel
from safetensors import safe_open
from safetensors.torch import save_file

from tests.conftest import base_values, peft_and_musubi, predictions_per_layout, predictions_with_lora
from tests.test_training import Recorder
from trainer.families import folder_family, runtime
from trainer.families.qwen_image.model import TEMPLATE, pack
from trainer.job.config import build_config
from trainer.job.preflight import check
from trainer.job.prompts import PromptSpec
from trainer.output.generate import load_lora_file
from trainer.training.loop import train

BLOCK = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
         "attn.add_v_proj", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj",
         "txt_mlp.net.2")


def published_names(blocks: int) -> set[str]:
    return {f"diffusion_model.transformer_blocks.{i}.{m}" for i in range(blocks) for m in BLOCK}


def _values(tiny, data, out, **extra):
    qwen = {"model_family": "qwen_image", "network_module": "networks.lora_qwen_image",
            "network_train_unet_only": True, "timestep_sampling": "shift", "discrete_flow_shift": 2.2,
            "model_prediction_type": "raw"}
    return base_values(tiny, data, out, **{**qwen, **extra})


def _inputs(model):
    torch.manual_seed(3)
    family = runtime("qwen_image")
    return torch.randn(2, 16, 8, 8), torch.tensor([0.3, 0.8]), family._encode(model, ["sks, a red circle", "x"])


def test_module_names_on_the_full_size_architecture_match_the_published_layout():
    class Full:
        family = "qwen_image"
        with init_empty_weights():
            transformer = QwenImageTransformer2DModel(num_layers=60, attention_head_dim=128, num_attention_heads=24,
                                                      joint_attention_dim=3584)

    candidates = runtime("qwen_image").lora_targets(Full(), with_conv=True)
    assert {c.name for c in candidates} == published_names(60) and len(candidates) == 720
    assert sum(c.module.weight.numel() for c in candidates) > 10e9  # most of the 20 B transformer is trained


def test_a_qwen_image_folder_is_recognized_and_its_captions_keep_their_own_length(qwen_tiny):
    assert folder_family(str(qwen_tiny)) == "qwen_image"
    family = runtime("qwen_image")
    model = family.load_location(str(qwen_tiny))
    hidden, mask = family._encode(model, ["a long caption about a red circle", "short"])
    alone, alone_mask = family._encode(model, ["short"])
    assert mask[0].all() and mask[1].sum() < mask[0].sum() and hidden.shape[1] == mask.shape[1]
    # the caption's tokens read the same padded or alone (the system prompt is cut off in both)
    length = int(alone_mask.sum())
    assert torch.allclose(hidden[1, :length], alone[0], atol=1e-5)


def test_a_qwen_image_lora_trains_with_previews_and_reloads_in_diffusers_with_the_same_output(qwen_tiny, dataset,
                                                                                             tmp_path):
    cfg = build_config(_values(qwen_tiny, dataset, tmp_path / "out", cache_latents=True,
                               cache_text_encoder_outputs=True, gradient_checkpointing=True, save_every_n_epochs=1,
                               sample_every_n_epochs=1, sample_prompts=["sks --s 2 --l 4 --n blurry"],
                               sample_images_per_prompt=1))
    assert [f for f in check(cfg) if f.level == "error"] == []
    recorder = Recorder()
    result = train(cfg, recorder)
    assert (tmp_path / "out" / "sample" / "t_e000002_00_0.png").exists()
    with safe_open(str(result.final_path), framework="pt") as handle:
        meta = handle.metadata()
        modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in handle.keys()}  # noqa: SIM118
    assert meta["modelspec.architecture"] == "qwen-image/lora"
    assert meta["ss_network_module"] == "networks.lora_qwen_image"
    assert modules == published_names(2)
    out = predictions_with_lora("qwen_image", qwen_tiny, result.final_path, _inputs)
    assert (out["ours"] - out["base"]).abs().max() > 1e-4 and torch.equal(out["at_zero"], out["base"])
    assert torch.allclose(out["ours"], out["diffusers"], atol=1e-5)


def test_musubi_and_peft_qwen_image_files_read_as_lorabakes(qwen_tiny, dataset, tmp_path):
    ours = load_lora_file(train(build_config(_values(qwen_tiny, dataset, tmp_path / "out", max_train_epochs=1)),
                                Recorder()).final_path)
    peft, musubi = peft_and_musubi(ours)
    model = runtime("qwen_image").load_location(str(qwen_tiny))
    outputs = predictions_per_layout("qwen_image", model, _inputs, [ours, peft, musubi], 24)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6) and torch.allclose(outputs[0], outputs[2], atol=1e-6)
    save_file(peft, str(tmp_path / "peft.safetensors"))
    assert predictions_with_lora("qwen_image", qwen_tiny, tmp_path / "peft.safetensors", _inputs)["diffusers"] \
        .sub(outputs[0]).abs().max() < 1e-5


def test_a_preview_with_true_cfg_is_the_image_diffusers_pipeline_renders(qwen_tiny):
    family = runtime("qwen_image")
    model = family.load_location(str(qwen_tiny))
    spec = PromptSpec("a red circle", negative="blurry", width=64, height=64, steps=4, cfg_scale=4.0)
    ours = np.asarray(family.render(model, spec, seed=7, settings=family.settings_for((64, 64), "euler")))
    noise = torch.randn(family.noise_shape(model, 64, 64), generator=torch.Generator("cpu").manual_seed(7))
    pipe = family._diffusers(family.pipeline).from_pretrained(qwen_tiny)
    # the pipeline drops a fixed 34 tokens, the system prompt's length in Qwen's tokenizer; the tiny tokenizer reads
    # characters, so it is told the length lorabake measures
    pipe.prompt_template_encode_start_idx = len(pipe.tokenizer(TEMPLATE.split("{}")[0]).input_ids)
    theirs = pipe(prompt="a red circle", negative_prompt="blurry", true_cfg_scale=4.0, num_inference_steps=4,
                  width=64, height=64, latents=pack(noise), output_type="np").images[0]
    assert np.abs(ours.astype(float) - theirs * 255).max() <= 1.0
    plain = np.asarray(family.render(model, PromptSpec("a red circle", width=64, height=64, steps=4, cfg_scale=1.0),
                                     seed=7, settings=family.settings_for((64, 64), "euler")))
    assert not np.array_equal(plain, ours)  # --l 1: no guidance, a different image


def test_a_single_file_qwen_image_transformer_loads_like_the_folder(qwen_tiny, dataset, tmp_path):
    from trainer.families.tiny import write_single_file

    family = runtime("qwen_image")
    folder = family.load_location(str(qwen_tiny))
    single = write_single_file(qwen_tiny, "qwen_image", str(tmp_path / "qwen_image.safetensors"))
    cfg = build_config(_values(single, dataset, tmp_path / "out", pretrained_model_config=str(qwen_tiny),
                               max_train_epochs=1))
    model = family.load(cfg)
    noisy, sigmas, text = _inputs(folder)
    with torch.no_grad():
        assert torch.equal(family.predict(model, noisy, sigmas, text), family.predict(folder, noisy, sigmas, text))
