"""FLUX.1 and Chroma through the family seam: names as sd-scripts' lora_flux writes them, files diffusers loads,
flow-matching training, previews and test generation on the tiny models.

The expected name set is written out from the original (BFL) architecture the way lora_flux walks it: every
Linear inside a DoubleStreamBlock (img_/txt_ × mod.lin, attn.qkv, attn.proj, mlp.0, mlp.2) and a SingleStreamBlock
(linear1, linear2, modulation.lin), named `lora_unet_` + the module path with dots as underscores. Full size:
19 double × 10 + 38 single × 3 = 304 modules. CLIP-L is `lora_te1_` (as for SD), T5 `lora_te3_`
(T5Attention q/k/v/o and T5DenseGatedActDense wi_0/wi_1/wo per block).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors import safe_open

from tests.conftest import base_values
from tests.test_training import Recorder
from trainer.families import runtime
from trainer.families.base import ModelLoadError
from trainer.families.flux.model import image_ids, pack, unpack
from trainer.job.config import ConfigError, build_config
from trainer.job.preflight import check
from trainer.job.prompts import PromptSpec
from trainer.networks.network import LoRANetwork
from trainer.output.generate import generate, load_lora_file
from trainer.output.saving import save_lora
from trainer.training.loop import train

DOUBLE = ["img_mod_lin", "img_attn_qkv", "img_attn_proj", "img_mlp_0", "img_mlp_2",
          "txt_mod_lin", "txt_attn_qkv", "txt_attn_proj", "txt_mlp_0", "txt_mlp_2"]
SINGLE = ["linear1", "linear2", "modulation_lin"]


def lora_flux_names(double: int, single: int) -> set[str]:
    names = {f"lora_unet_double_blocks_{i}_{m}" for i in range(double) for m in DOUBLE}
    return names | {f"lora_unet_single_blocks_{i}_{m}" for i in range(single) for m in SINGLE}


@pytest.fixture(scope="module")
def flux_tiny(tmp_path_factory):
    from trainer.families.tiny import make_tiny

    root = tmp_path_factory.mktemp("flux-models")
    return {family: make_tiny(root / family, family) for family in ("flux", "chroma")}


@pytest.fixture(scope="module")
def full_flux():
    with init_empty_weights():
        return FluxTransformer2DModel(guidance_embeds=True)


class _Full:
    """A stand-in loaded model around the meta-device transformer (no text encoders)."""

    def __init__(self, transformer):
        self.transformer, self.text_encoders, self.family = transformer, [], "flux"


def test_full_size_flux_names_equal_the_lora_flux_set(full_flux):
    flux = runtime("flux")
    candidates = flux.lora_targets(_Full(full_flux), with_conv=False, text=False)
    names = {c.name for c in candidates}
    assert names == lora_flux_names(19, 38) and len(names) == 304
    by_name = {c.name: c for c in candidates}
    assert [p.out_features for p in by_name["lora_unet_double_blocks_0_img_attn_qkv"].targets] == [3072] * 3
    assert [p.out_features for p in by_name["lora_unet_single_blocks_5_linear1"].targets] == [3072] * 3 + [12288]
    single = {c.name for c in flux.lora_targets(_Full(full_flux), with_conv=False, text=False,
                                                network_args=["train_blocks=single"])}
    assert single == lora_flux_names(0, 38)
    with torch.device("meta"):
        lora = LoRANetwork.from_candidates([by_name["lora_unet_single_blocks_5_linear1"]], dim=16, alpha=8)
    module = lora.loras["lora_unet_single_blocks_5_linear1"]
    assert module.lora_up.weight.shape == (21504, 16) and module.lora_down.weight.shape == (16, 3072)


def test_t5_names_are_lora_te3_and_clip_is_lora_te1():
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from trainer.families.flux.model import FluxModel

    with init_empty_weights():
        t5 = T5EncoderModel(T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                                     feed_forward_proj="gated-gelu"))
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12))
    model = FluxModel("flux", "full", torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), [clip, t5], [None, None])
    names = {c.name for c in runtime("flux").lora_targets(model, with_conv=False, denoiser=False)}
    t5_names = {f"lora_te3_encoder_block_{i}_layer_0_SelfAttention_{p}" for i in range(24) for p in "qkvo"}
    t5_names |= {f"lora_te3_encoder_block_{i}_layer_1_DenseReluDense_{p}" for i in range(24)
                 for p in ("wi_0", "wi_1", "wo")}
    clip_names = {f"lora_te1_text_model_encoder_layers_{i}_{p}" for i in range(12)
                  for p in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj",
                            "mlp_fc1", "mlp_fc2")}
    assert names == t5_names | clip_names


def _inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 16, 8, 8, generator=g)
    hidden = torch.randn(2, 12, 32, generator=g)
    pooled = torch.randn(2, 32, generator=g)
    return latents, torch.tensor([0.2, 0.9]), hidden, pooled


@torch.no_grad()
def _transformer_out(transformer, inputs, guidance=1.0):
    latents, t, hidden, pooled = inputs
    out = transformer(hidden_states=pack(latents), timestep=t, guidance=torch.full((2,), guidance),
                      pooled_projections=pooled, encoder_hidden_states=hidden, txt_ids=torch.zeros(12, 3),
                      img_ids=image_ids(8, 8)).sample
    return unpack(out, 8, 8, 16)


def _randomised(model, seed, **kwargs):
    torch.manual_seed(seed)
    network = LoRANetwork.from_candidates(runtime("flux").lora_targets(model, with_conv=False, **kwargs), dim=4,
                                          alpha=2.0)
    with torch.no_grad():
        for lora in network.loras.values():
            lora.lora_up.weight.normal_(0, 0.2)
    return network


def test_saved_flux_lora_reloads_in_diffusers_and_reproduces_our_output(flux_tiny, tmp_path):
    flux = runtime("flux")
    model = flux.load_location(str(flux_tiny["flux"]))
    inputs = _inputs(model)
    base = _transformer_out(model.transformer, inputs)
    # diffusers' kohya converter splits single blocks' linear1 at full-size widths (3072 × 3 + 12288), so the
    # tiny model's single blocks are checked against the merged weights below instead.
    network = _randomised(model, 3, network_args=["train_blocks=double"])
    network.attach()
    ours = _transformer_out(model.transformer, inputs)
    ids = torch.tensor([[5, 9, 13, 2]])
    ours_clip = model.clip(ids).pooler_output
    assert not torch.allclose(ours, base, atol=1e-4)
    path = save_lora(tmp_path / "f.safetensors", network.kohya_state_dict(), {"ss_network_dim": "4"}, "safetensors")
    pipe = FluxPipeline.from_pretrained(flux_tiny["flux"])
    pipe.load_lora_weights(str(path), adapter_name="f")
    assert torch.allclose(_transformer_out(pipe.transformer, inputs), ours, atol=1e-5)
    assert torch.allclose(pipe.text_encoder(ids).pooler_output, ours_clip, atol=1e-5)
    pipe.set_adapters(["f"], adapter_weights=[0.0])
    assert torch.allclose(_transformer_out(pipe.transformer, inputs), base, atol=1e-6)
    network.set_multiplier(0.0)
    assert torch.equal(_transformer_out(model.transformer, inputs), base)
    network.detach()
    assert torch.equal(_transformer_out(model.transformer, inputs), base)


@torch.no_grad()
def test_fused_modules_equal_their_update_merged_into_the_split_weights(flux_tiny):
    """W_part += α/r · up[rows of part] @ down, for every fused module: what ComfyUI does with a kohya file."""
    flux = runtime("flux")
    model = flux.load_location(str(flux_tiny["flux"]))
    merged = flux.load_location(str(flux_tiny["flux"]))
    inputs = _inputs(model)
    network = _randomised(model, 5, text=False)
    state = network.kohya_state_dict()
    by_name = {c.name: c for c in flux.lora_targets(merged, with_conv=False, text=False)}
    for name, candidate in by_name.items():
        delta = state[f"{name}.lora_up.weight"] @ state[f"{name}.lora_down.weight"]
        delta = delta * state[f"{name}.alpha"] / state[f"{name}.lora_down.weight"].shape[0]
        row = 0
        for part in candidate.targets if isinstance(candidate.targets, tuple) else (candidate.targets,):
            part.weight += delta[row : row + part.out_features]
            row += part.out_features
        assert row == delta.shape[0]
    network.attach()
    assert torch.allclose(_transformer_out(model.transformer, inputs), _transformer_out(merged.transformer, inputs),
                          atol=1e-5)


@torch.no_grad()
def test_network_weights_reads_kohya_and_diffusers_peft_flux_loras(flux_tiny, tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    flux = runtime("flux")
    pipe = FluxPipeline.from_pretrained(flux_tiny["flux"])
    inputs = _inputs(None)
    targets = (r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_out\.0|"
               r"to_add_out)|proj_mlp|proj_out|norm1\.linear|norm\.linear|ff\.net\.0\.proj|ff\.net\.2)")
    torch.manual_seed(7)
    pipe.transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=targets, init_lora_weights=False))
    theirs = _transformer_out(pipe.transformer, inputs)
    FluxPipeline.save_lora_weights(tmp_path / "peft", transformer_lora_layers=get_peft_model_state_dict(
        pipe.transformer), safe_serialization=True)
    weights = load_lora_file(tmp_path / "peft" / "pytorch_lora_weights.safetensors")
    assert any(k.startswith("transformer.") and ".lora_A." in k for k in weights)
    model = flux.load_location(str(flux_tiny["flux"]))
    kohya = flux.kohya_weights(weights)
    assert "lora_unet_single_blocks_0_linear1.lora_down.weight" in kohya
    network, unmatched = LoRANetwork.from_weights(kohya, flux.lora_targets(model, with_conv=False))
    assert not unmatched
    network.attach()
    assert torch.allclose(_transformer_out(model.transformer, inputs), theirs, atol=1e-5)
    # and the kohya file of that network reads back to the same network
    path = save_lora(tmp_path / "k.safetensors", network.kohya_state_dict(), {}, "safetensors")
    again, unmatched = LoRANetwork.from_weights(flux.kohya_weights(load_lora_file(path)),
                                                           flux.lora_targets(model, with_conv=False))
    assert not unmatched and set(again.loras) == set(network.loras)
    # a module lora_flux has no name for is reported, not dropped silently
    weights["transformer.proj_out.lora_A.weight"] = torch.zeros(2, 16)
    weights["transformer.proj_out.lora_B.weight"] = torch.zeros(64, 2)
    _, unmatched = LoRANetwork.from_weights(flux.kohya_weights(weights),
                                                       flux.lora_targets(model, with_conv=False))
    assert unmatched == ["lora_unet_proj_out"]


def _flux_values(tiny, data, out, **extra):
    flux = {"model_family": "flux", "network_module": "networks.lora_flux", "network_train_unet_only": True,
            "timestep_sampling": "flux_shift", "model_prediction_type": "raw"}
    return base_values(tiny, data, out, **{**flux, **extra})


def test_flux_trains_with_cached_latents_and_text_on_disk_fp8_and_previews(flux_tiny, dataset, tmp_path):
    cfg = build_config(_flux_values(
        flux_tiny["flux"], dataset, tmp_path / "out", cache_latents=True, cache_text_encoder_outputs=True,
        cache_text_encoder_outputs_to_disk=True, gradient_checkpointing=True, fp8_base=True, mixed_precision="bf16",
        blocks_to_swap=2,
        save_every_n_epochs=1, sample_every_n_epochs=1, sample_prompts=["sks --s 2 --g 3.5"],
        sample_images_per_prompt=2,
    ))
    rec = Recorder()
    result = train(cfg, rec)
    assert [s.epoch for s in rec.saved] == [1, 2] and len(rec.previews[-1].paths) == 2
    assert any((tmp_path / "out" / ".text_cache").iterdir())
    with safe_open(str(result.final_path), framework="pt") as handle:
        meta, keys = handle.metadata(), set(handle.keys())
        up = handle.get_tensor("lora_unet_single_blocks_0_linear1.lora_up.weight")
    assert {k.split(".")[0] for k in keys} == lora_flux_names(1, 2)
    assert up.abs().sum() > 0  # it learned something
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["ss_network_module"] == "networks.lora_flux" and meta["ss_guidance_scale"] == "1.0"
    assert meta["ss_timestep_sampling"] == "flux_shift" and meta["ss_model_prediction_type"] == "raw"
    assert "ss_clip_skip" not in meta and "ss_v2" in meta
    assert meta["ss_weighting_scheme"] == "none"  # the default, as sd-scripts' FLUX runs write it


@pytest.mark.parametrize("sampling", ["flux_shift", "sigma", "uniform", "sigmoid", "shift"])
def test_every_timestep_sampling_and_prediction_type_trains(flux_tiny, dataset, tmp_path, sampling, monkeypatch):
    """Each sampling reaches the loss (its formulas are checked in test_flow.py) and the LoRA learns under it."""
    import trainer.families.dit as dit

    drawn: list[tuple[str, torch.Tensor]] = []

    def recording(method: str, *args: object, **kwargs: object) -> torch.Tensor:
        levels = dit_sample_t(method, *args, **kwargs)
        drawn.append((method, levels))
        return levels

    dit_sample_t = dit.sample_t
    monkeypatch.setattr(dit, "sample_t", recording)
    kind = {"sigma": "sigma_scaled", "uniform": "additive"}.get(sampling, "raw")
    scheme = "uniform" if sampling == "uniform" else "logit_normal"  # sd-scripts' name for "none" is taken too
    cfg = build_config(_flux_values(flux_tiny["flux"], dataset, tmp_path / "out", timestep_sampling=sampling,
                                    model_prediction_type=kind, weighting_scheme=scheme, max_train_epochs=1))
    rec = Recorder()
    result = train(cfg, rec)
    assert rec.progress and all(torch.isfinite(torch.tensor(p.loss)) for p in rec.progress)
    assert len(drawn) == len(rec.progress) and {method for method, _ in drawn} == {sampling}
    levels = torch.cat([t for _, t in drawn])
    assert levels.min() >= 0 and levels.max() <= 1 and levels.unique().numel() == levels.numel()
    with safe_open(str(result.final_path), framework="pt") as handle:
        assert handle.metadata()["ss_weighting_scheme"] == scheme  # written back as given
        assert handle.metadata()["ss_timestep_sampling"] == sampling
        assert handle.get_tensor("lora_unet_single_blocks_0_linear1.lora_up.weight").abs().sum() > 0


def test_chroma_trains_with_masked_t5_and_no_modulation_modules(flux_tiny, dataset, tmp_path):
    cfg = build_config(base_values(flux_tiny["chroma"], dataset, tmp_path / "out", model_family="chroma",
                                   model_type="chroma", network_module="networks.lora_flux",
                                   network_train_unet_only=True, apply_t5_attn_mask=True, guidance_scale=0.0,
                                   timestep_sampling="sigmoid", sample_every_n_epochs=2,
                                   sample_prompts=["sks --n blurry --l 4 --s 2"], sample_images_per_prompt=1))
    result = train(cfg, Recorder())
    with safe_open(str(result.final_path), framework="pt") as handle:
        meta, names = handle.metadata(), {k.split(".")[0] for k in handle.keys()}  # noqa: SIM118
    assert meta["modelspec.architecture"] == "chroma/lora" and meta["ss_model_type"] == "chroma"
    assert not any("mod" in n for n in names) and "lora_unet_double_blocks_0_img_attn_qkv" in names
    assert (tmp_path / "out" / "sample" / "t_e000002_00_0.png").exists()


def test_flux_refuses_sd_only_options_and_warns_on_training_guidance(flux_tiny, tmp_path):
    def found(**extra):
        cfg = build_config(_flux_values(flux_tiny["flux"], tmp_path, tmp_path, **extra))
        return {(f.level, f.field): f.message for f in check(cfg)}

    assert "no CLIP layer to skip" in found(clip_skip=2)[("error", "clip_skip")]
    assert ("error", "max_token_length") in found(max_token_length=225)
    assert ("error", "v_parameterization") in found(v_parameterization=True)
    assert ("warning", "guidance_scale") in found(guidance_scale=3.5)
    assert ("warning", "conv_dim") in found(conv_dim=8)
    assert ("error", "cache_text_encoder_outputs") in found(cache_text_encoder_outputs=True,
                                                           network_args=["train_t5xxl=True"])
    chroma = build_config(base_values(flux_tiny["chroma"], tmp_path, tmp_path, model_family="chroma"))
    assert any(f.field == "apply_t5_attn_mask" and f.level == "error" for f in check(chroma))
    sd = build_config(base_values(flux_tiny["flux"], tmp_path, tmp_path, model_family="sd15",
                                  timestep_sampling="shift"))
    assert any(f.field == "timestep_sampling" and "FLUX" in f.message for f in check(sd))


def test_flux_folder_is_detected_and_never_taken_for_sdxl(flux_tiny, tmp_path):
    from trainer.families import folder_family, resolve_family
    from trainer.families.sd.loading import ModelLoadError, load_base_model

    assert folder_family(str(flux_tiny["flux"])) == "flux" and folder_family(str(flux_tiny["chroma"])) == "chroma"
    assert resolve_family(build_config({"pretrained_model_name_or_path": str(flux_tiny["flux"])})) == "flux"
    with pytest.raises(ModelLoadError, match="flux model folder"):
        load_base_model(str(flux_tiny["flux"]))


def test_test_generation_with_a_flux_lora_and_a_foreign_lora_refused(flux_tiny, tiny_models, tmp_path):
    flux = runtime("flux")
    model = flux.load_location(str(flux_tiny["flux"]))
    path = save_lora(tmp_path / "mine.safetensors", _randomised(model, 9).kohya_state_dict(),
                     {"modelspec.architecture": "flux-1-dev/lora"}, "safetensors")
    spec = PromptSpec("sks <lora:mine:0>", width=64, height=64, steps=2)
    base = generate(model, PromptSpec("sks", width=64, height=64, steps=2), {}, seed=1)[0]
    assert generate(model, spec, {"mine": path}, seed=1)[0].tobytes() == base.tobytes()
    full = generate(model, PromptSpec("sks <lora:mine:1>", width=64, height=64, steps=2), {"mine": path}, seed=1)[0]
    assert full.tobytes() != base.tobytes()
    sd = runtime("sd15").load_location(str(tiny_models["sd15"]))
    sd_lora = save_lora(tmp_path / "sd.safetensors", LoRANetwork.from_candidates(
        runtime("sd15").lora_targets(sd, with_conv=False), dim=2, alpha=1).kohya_state_dict(),
                        {"ss_base_model_version": "sd_v1"}, "safetensors")
    with pytest.raises(ConfigError, match="does not fit this FLUX.1 base model .it was made for sd_v1"):
        generate(model, PromptSpec("<lora:sd:1> x", steps=1), {"sd": sd_lora}, seed=1)


def test_cli_trains_a_flux_toml_and_names_a_refused_key(flux_tiny, dataset, tmp_path):
    toml = tmp_path / "flux.toml"
    toml.write_text(
        f'pretrained_model_name_or_path = "{flux_tiny["flux"]}"\nnetwork_module = "networks.lora_flux"\n'
        f'train_data_dir = "{dataset}"\noutput_dir = "{tmp_path / "out"}"\noutput_name = "cli"\n'
        'resolution = "64"\nmax_train_epochs = 1\ntrain_batch_size = 2\nnetwork_dim = 2\n'
        'network_train_unet_only = true\ntimestep_sampling = "flux_shift"\nguidance_scale = 1.0\n')
    run = [sys.executable, "-m", "trainer.cli", "train", "--config", str(toml)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "cli.safetensors").exists()
    refused = subprocess.run([*run, "--set", "clip_skip=2"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "clip_skip: does not apply to FLUX.1" in refused.stderr


def test_make_tiny_flux_is_deterministic(tmp_path):
    from trainer.families.tiny import make_tiny

    first, second = make_tiny(tmp_path / "a", "flux"), make_tiny(tmp_path / "b", "flux")
    for part in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder_2/model.safetensors"):
        assert (first / part).read_bytes() == (second / part).read_bytes()
    assert (first / "tokenizer_2" / "tokenizer.json").is_file()


def test_a_single_file_flux_transformer_with_its_config_folder_trains_like_the_folder(flux_tiny, dataset, tmp_path):
    from safetensors.torch import load_file, save_file

    from trainer.families.flux.checkpoint import from_bfl, to_bfl
    from trainer.families.tiny import write_single_file as write_tiny_single_file

    single = write_tiny_single_file(flux_tiny["flux"], "flux", str(tmp_path / "flux1-tiny.safetensors"))
    keys = set(load_file(single))
    assert {"double_blocks.0.img_attn.qkv.weight", "single_blocks.1.linear1.weight", "img_in.weight",
            "final_layer.adaLN_modulation.1.weight", "guidance_in.in_layer.weight"} <= keys
    folder = runtime("flux").load_location(str(flux_tiny["flux"]))
    state = folder.transformer.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in from_bfl(to_bfl(state), state).items())
    t5 = tmp_path / "t5xxl.safetensors"
    save_file({k: v.clone() for k, v in folder.t5.state_dict().items() if k != "shared.weight"}, str(t5))
    cfg = build_config(_flux_values(single, dataset, tmp_path / "out", pretrained_model_config=str(flux_tiny["flux"]),
                                    t5xxl=str(t5), max_train_epochs=1))
    model = runtime("flux").load(cfg)
    inputs = _inputs(model)
    assert torch.equal(_transformer_out(model.transformer, inputs), _transformer_out(folder.transformer, inputs))
    assert train(cfg, Recorder()).final_path.exists()
    from trainer.families.sd.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="needs a local diffusers folder"):
        runtime("flux").load(build_config({"pretrained_model_name_or_path": str(single)}))
    with pytest.raises(ModelLoadError, match="not reachable as a hub id"):
        runtime("flux").load_location("someone/not-a-real-flux-for-lorabake")


def test_lokr_with_dora_trains_on_flux_with_fp8_and_block_swap_and_reloads(flux_tiny, dataset, tmp_path):
    cfg = build_config(_flux_values(flux_tiny["flux"], dataset, tmp_path / "out", network_module="lycoris.kohya",
                                    network_args=["algo=lokr", "dora_wd=True"], fp8_base=True, blocks_to_swap=2,
                                    mixed_precision="bf16", max_train_epochs=1))
    assert not [f for f in check(cfg) if f.level == "error"]
    result = train(cfg, Recorder())
    weights = load_lora_file(result.final_path)
    assert {k.split(".")[0] for k in weights} == lora_flux_names(1, 2)
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    assert f"{qkv}.lokr_w1" in weights and weights[f"{qkv}.dora_scale"].shape[1:] == (1,)
    model = runtime("flux").load_location(str(flux_tiny["flux"]))
    network, unmatched = LoRANetwork.from_weights(weights, runtime("flux").lora_targets(model,
                                                                                                   with_conv=False))
    assert not unmatched and {type(a).__name__ for a in network.adapters.values()} == {"LoKrModule"}
    assert network.adapters[qkv].dora_scale.shape[0] == 3 * model.transformer.config.num_attention_heads * \
        model.transformer.config.attention_head_dim


@pytest.mark.parametrize("layout", ["text_model.{}", "{}", "transformer.text_model.{}",
                                    "text_encoders.clip_l.transformer.text_model.{}"])
def test_a_clip_l_file_in_any_common_layout_loads_as_flux_text_encoder(flux_tiny, tmp_path, layout):
    from safetensors.torch import save_file

    from trainer.families.text_files import load_text_encoder_file

    folder = runtime("flux").load_location(str(flux_tiny["flux"]))
    original = {k: v.clone() for k, v in folder.clip.state_dict().items()}
    file = tmp_path / "clip_l.safetensors"
    save_file({layout.format(k.removeprefix("text_model.")): v for k, v in original.items()}, str(file))
    fresh = runtime("flux").load_location(str(flux_tiny["flux"])).clip
    for parameter in fresh.parameters():
        parameter.data.zero_()
    load_text_encoder_file(fresh, str(file))
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in original.items())
    save_file({"unrelated.weight": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ModelLoadError, match="not a text-encoder file for this model"):
        load_text_encoder_file(fresh, str(tmp_path / "wrong.safetensors"))
