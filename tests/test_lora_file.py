"""The written file loads in diffusers like a kohya LoRA and reproduces our in-memory model."""

import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open

from trainer.families import runtime
from trainer.families.sd.loading import load_base_model
from trainer.networks.network import LoRANetwork
from trainer.output.saving import save_lora


def _randomised_network(model, seed: int, conv_dim=None) -> LoRANetwork:
    torch.manual_seed(seed)
    network = LoRANetwork.from_candidates(runtime(model.family).lora_targets(model, with_conv=conv_dim is not None),
                                          dim=4, alpha=2.0, conv_dim=conv_dim, conv_alpha=1.0)
    with torch.no_grad():
        for lora in network.loras.values():
            lora.lora_up.weight.normal_(0, 0.2)
    return network


def _unet_inputs(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 700])
    width = sum(e.config.hidden_size for e in model.text_encoders)
    hidden = torch.randn(2, 77, width, generator=g)
    extra = {}
    if model.family == "sdxl":
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 32, generator=g),
                                      "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    return latents, t, hidden, extra


@torch.no_grad()
def _unet_out(unet, inputs):
    latents, t, hidden, extra = inputs
    return unet(latents, t, hidden, **extra).sample


@torch.no_grad()
def _te_out(encoder, ids):
    return encoder(ids).last_hidden_state


def _roundtrip(tiny, family, tmp_path, conv_dim=None):
    model = load_base_model(str(tiny[family]))
    inputs = _unet_inputs(model)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    base_unet = _unet_out(model.unet, inputs)
    network = _randomised_network(model, seed=3, conv_dim=conv_dim)
    network.attach()
    ours_unet, ours_te = _unet_out(model.unet, inputs), _te_out(model.text_encoders[0], ids)
    assert not torch.allclose(ours_unet, base_unet, atol=1e-4)  # the LoRA really changes the output
    path = save_lora(tmp_path / "x.safetensors", network.kohya_state_dict(), {"ss_network_dim": "4"}, "safetensors")

    pipe = DiffusionPipeline.from_pretrained(tiny[family])
    pipe.load_lora_weights(str(path), adapter_name="x")
    theirs_unet = _unet_out(pipe.unet, inputs)
    assert torch.allclose(theirs_unet, ours_unet, atol=1e-5), (theirs_unet - ours_unet).abs().max()
    assert torch.allclose(_te_out(pipe.text_encoder, ids), ours_te, atol=1e-5)
    pipe.set_adapters(["x"], adapter_weights=[0.0])
    assert torch.allclose(_unet_out(pipe.unet, inputs), base_unet, atol=1e-6)  # peft reorders float sums
    network.set_multiplier(0.0)
    assert torch.equal(_unet_out(model.unet, inputs), base_unet)
    network.detach()
    assert torch.equal(_unet_out(model.unet, inputs), base_unet)
    return path


def test_sd15_file_reloads_in_diffusers_and_reproduces_our_output(tiny_models, tmp_path):
    path = _roundtrip(tiny_models, "sd15", tmp_path)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        alpha = f.get_tensor("lora_unet_down_blocks_0_attentions_0_proj_in.alpha")
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in keys
    assert float(alpha) == 2.0  # the real alpha, not the rank


def test_sdxl_file_reloads_in_diffusers_and_reproduces_our_output(tiny_models, tmp_path):
    path = _roundtrip(tiny_models, "sdxl", tmp_path)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight" in keys
    assert not any("down_blocks" in k for k in keys)


def test_locon_file_reloads_in_diffusers(tiny_models, tmp_path):
    path = _roundtrip(tiny_models, "sd15", tmp_path, conv_dim=2)
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight").shape[0] == 2


def test_our_generator_resolves_lora_tags_and_weight_zero_is_the_base(tiny_models, tmp_path):
    from trainer.job.prompts import PromptSpec
    from trainer.output.generate import generate

    model = load_base_model(str(tiny_models["sd15"]))
    network = _randomised_network(model, seed=5)
    path = save_lora(tmp_path / "mine.safetensors", network.kohya_state_dict(), {}, "safetensors")
    spec = PromptSpec("sks <lora:mine:0>", steps=2, width=64, height=64)
    base = generate(model, PromptSpec("sks", steps=2, width=64, height=64), {}, seed=1)[0]
    zero = generate(model, spec, {"mine": path}, seed=1)[0]
    full = generate(model, PromptSpec("sks <lora:mine:1>", steps=2, width=64, height=64), {"mine": path}, seed=1)[0]
    assert list(base.get_flattened_data()) == list(zero.get_flattened_data())
    assert list(base.get_flattened_data()) != list(full.get_flattened_data())
    import pytest

    from trainer.job.config import ConfigError

    with pytest.raises(ConfigError, match='no LoRA called "other"'):
        generate(model, PromptSpec("<lora:other:1> x", steps=1), {"mine": path}, seed=1)


def test_a_lora_that_fits_only_in_part_is_reported_module_by_module(tiny_models, tmp_path):
    from trainer.job.prompts import PromptSpec
    from trainer.output.generate import generate

    model = load_base_model(str(tiny_models["sd15"]))
    weights = _randomised_network(model, seed=4).kohya_state_dict()
    weights["lora_unet_not_a_module.lora_down.weight"] = torch.zeros(4, 8)
    weights["lora_unet_not_a_module.lora_up.weight"] = torch.zeros(8, 4)
    weights["lora_unet_not_a_module.alpha"] = torch.tensor(4.0)
    path = save_lora(tmp_path / "half.safetensors", weights, {}, "safetensors")
    notes: list[str] = []
    generate(model, PromptSpec("x <lora:half:1>", steps=1, width=64, height=64), {"half": path}, seed=1, notes=notes)
    total = len({k.split(".")[0] for k in weights})
    assert notes == [f'LoRA "half": 1 of {total} modules match nothing in this SD 1.5 base model and were left out '
                     "(lora_unet_not_a_module)"]
