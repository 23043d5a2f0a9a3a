"""LyCORIS network types (LoHa, LoKr, DoRA) against their formulas, the LyCORIS library and diffusers.

The formulas the references below are written from (LyCORIS' papers and its kohya entry point):
  LoRA  ΔW = up · down · α/r
  LoHa  ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b) · α/r
  LoKr  ΔW = kron(w1, w2) · α/r (scale 1 when neither factor is split); a kernel rides on w2
  DoRA  W' = m ⊙ (W + ΔW) / ‖W + ΔW‖, row norms, m = dora_scale; with weight w the model gets W + w (W' − W)
The key set for full-size SD1.5 is what LyCORIS's own LycorisNetworkKohya makes on the same model with its full
preset. Two things differ from a run under sd-scripts and are accounted for, not hidden:
- transformers 5 dropped CLIPTextModel's `text_model` level, which sd-scripts' (transformers 4) names carry;
- LyCORIS 4.1.3 also lists the class TimestepEmbedding (for Anima). On a diffusers UNet that reaches
  time_embedding twice and trips its duplicate check, so the class is left out of the preset. The time embedding
  is still in, by name. sd-scripts' own UNet class is not called that.
For SDXL, sd-scripts' UNet (input_blocks …, time_embed / label_emb as nn.Sequential) has none of the by-name
modules. So the SDXL test compares which diffusers modules get an adapter, and leaves out those LyCORIS reaches
only through diffusers' names. Our SGM naming of them is pinned in test_network_names.py.
"""

import json

import lycoris.kohya as lycoris_kohya
import pytest
import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from diffusers import DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
from lycoris.functional.general import factorization as lycoris_factorization
from lycoris.modules.locon import LoConModule
from lycoris.modules.loha import LohaModule
from lycoris.modules.lokr import LokrModule
from safetensors import safe_open
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from tests.conftest import base_values
from tests.test_lora_file import _unet_inputs, _unet_out
from tests.test_network_names import CLIP_L, SD15_UNET, SDXL_UNET
from tests.test_training import Recorder
from trainer.families import FAMILIES, runtime
from trainer.families.sd.loading import load_base_model
from trainer.families.sd.targets import named_candidates, text_candidates, unet_candidates
from trainer.job.config import build_config
from trainer.job.preflight import check, errors
from trainer.networks.adapters import ADAPTERS
from trainer.networks.adapters.lokr import factorization
from trainer.networks.network import LoRANetwork
from trainer.networks.spec import NetworkSpec
from trainer.output.generate import load_lora_file
from trainer.output.saving import save_lora
from trainer.training.loop import train

TYPES = [("lora", False), ("lora", True), ("loha", False), ("loha", True), ("lokr", False), ("lokr", True)]
LYCORIS_CLASSES = {"lora": LoConModule, "loha": LohaModule, "lokr": LokrModule}


def _targets():
    torch.manual_seed(0)
    return [(nn.Linear(24, 40), torch.randn(3, 24)), (nn.Conv2d(8, 12, 3, padding=1), torch.randn(2, 8, 6, 6))]


def _randomised(kind, dora, target, spec_extra=None):
    spec = NetworkSpec(kind=kind, dora=dora, lycoris=True, **(spec_extra or {}))
    adapter = ADAPTERS[kind].create("m", target, 2, 1.5, spec)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.3)
        if adapter.dora_scale is not None:
            adapter.dora_scale.abs_()
    return adapter


def _reference_delta(tensors, weight_shape):
    """ΔW from the file's tensors, by the formulas above."""
    t = {k: v.detach() for k, v in tensors.items()}
    rows = weight_shape[0]
    if "lora_down.weight" in t:
        rank = t["lora_down.weight"].shape[0]
        delta = t["lora_up.weight"].reshape(rows, -1) @ t["lora_down.weight"].reshape(rank, -1)
    elif "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]
        delta = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
    else:
        w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
        w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"]
        w2 = w2.reshape(w2.shape[0], weight_shape[1] // w1.shape[1], *weight_shape[2:])
        w1 = w1.reshape(*w1.shape, *[1] * (len(weight_shape) - 2))
        # kron, written out: block (i, j) of the result is w1[i, j] · w2
        delta = torch.cat([torch.cat([w1[i, j] * w2 for j in range(w1.shape[1])], dim=1)
                           for i in range(w1.shape[0])], dim=0)
        split = "lokr_w1_b" in t or "lokr_w2_b" in t
        rank = t["lokr_w2_b"].shape[0] if "lokr_w2_b" in t else t["lokr_w1_b"].shape[0] if split else None
        return delta.reshape(weight_shape) * (float(t["alpha"]) / rank if rank else 1.0)
    return delta.reshape(weight_shape) * float(t["alpha"]) / rank


def _reference_weight(tensors, weight, multiplier):
    merged = weight + _reference_delta(tensors, weight.shape)
    if "dora_scale" in tensors:
        norms = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (weight.dim() - 1))
        merged = tensors["dora_scale"].detach() * merged / norms
    return weight + multiplier * (merged - weight)


def _apply(target, weight, x):
    if isinstance(target, nn.Conv2d):
        return F.conv2d(x, weight, target.bias, target.stride, target.padding)
    return F.linear(x, weight, target.bias)


@pytest.mark.parametrize(("kind", "dora"), TYPES)
def test_each_type_computes_its_formula_at_any_weight(kind, dora):
    for target, x in _targets():
        adapter = _randomised(kind, dora, target)
        adapter.multiplier = 0.6
        adapter.attach()
        ours = target(x)
        adapter.detach()
        expected = _apply(target, _reference_weight(adapter.kohya_tensors(), target.weight.detach(), 0.6), x)
        assert torch.allclose(ours, expected, atol=1e-5), (kind, dora, (ours - expected).abs().max())


@pytest.mark.parametrize(("kind", "dora"), TYPES)
def test_each_type_matches_the_lycoris_library(kind, dora):
    for target, x in _targets():
        ours = _randomised(kind, dora, target, {"decompose_both": kind == "lokr" and dora})
        reference = LYCORIS_CLASSES[kind]("m", target, 1.0, 2, 1.5, weight_decompose=dora,
                                          decompose_both=kind == "lokr" and dora)
        result = reference.load_state_dict({k: v.detach() for k, v in ours.kohya_tensors().items()}, strict=False)
        assert not result.unexpected_keys and not [k for k in result.missing_keys if "scalar" not in k]
        ours.attach()
        mine = target(x)
        ours.detach()
        assert torch.allclose(mine, reference(x), atol=1e-5)


@pytest.mark.parametrize(("kind", "dora"), TYPES)
def test_a_fresh_adapter_changes_nothing_and_weight_zero_is_the_base(kind, dora):
    for target, x in _targets():
        base = target(x)
        adapter = ADAPTERS[kind].create("m", target, 2, 1.5, NetworkSpec(kind=kind, dora=dora, lycoris=True))
        adapter.attach()
        assert torch.allclose(target(x), base, atol=1e-6)
        with torch.no_grad():
            for p in adapter.parameters():
                p.normal_(0, 0.3)
        adapter.multiplier = 0.0
        assert torch.equal(target(x), base)
        adapter.detach()


@pytest.mark.parametrize("autocast", [False, True])
def test_lora_on_a_linear_gives_the_formulas_output_and_gradients(autocast):
    """The LoRA path adds scale · h · upᵀ into the Linear's own output in place: same result and gradients as the
    plain formula, on a 3-D input, at a weight other than 1, with bf16 autocast too."""
    torch.manual_seed(2)
    target = nn.Linear(24, 40).requires_grad_(False)
    adapter = _randomised("lora", False, target)
    adapter.multiplier = 0.7
    x = torch.randn(2, 5, 24, requires_grad=True)
    down, up = adapter.lora_down.weight, adapter.lora_up.weight
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        expected = target(x) + F.linear(F.linear(x, down), up) * adapter.scale * 0.7
        reference_grads = torch.autograd.grad(expected.float().square().sum(), (x, down, up))
        adapter.attach()
        ours = target(x)
        adapter.detach()
        grads = torch.autograd.grad(ours.float().square().sum(), (x, down, up))
    assert ours.shape == (2, 5, 40) and ours.dtype == expected.dtype
    tolerance = 3e-2 if autocast else 1e-5
    assert torch.allclose(ours.float(), expected.float(), atol=tolerance, rtol=tolerance)
    for mine, reference in zip(grads, reference_grads, strict=True):
        assert torch.allclose(mine.float(), reference.float(), atol=tolerance * 10, rtol=tolerance)


@pytest.mark.parametrize(("kind", "dora"), TYPES)
def test_fused_targets_each_get_their_rows_of_the_fused_update(kind, dora):
    torch.manual_seed(1)
    parts = (nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 32))
    x = torch.randn(5, 16)
    adapter = _randomised(kind, dora, parts)
    fused_weight = torch.cat([p.weight.detach() for p in parts])
    fused_bias = torch.cat([p.bias.detach() for p in parts])
    expected = F.linear(x, _reference_weight(adapter.kohya_tensors(), fused_weight, 1.0), fused_bias)
    adapter.attach()
    ours = torch.cat([p(x) for p in parts], dim=-1)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_lokr_factors_and_storage_follow_lycoris():
    for dim in (12, 64, 127, 250, 320, 360, 768, 1280, 3072, 9216):
        for factor in (-1, 2, 4, 8, 16):
            assert factorization(dim, factor) == lycoris_factorization(dim, factor), (dim, factor)
    cases = [(nn.Linear(320, 1280), {}, 4), (nn.Linear(320, 1280), {"decompose_both": True}, 4),
             (nn.Linear(320, 1280), {"full_matrix": True}, 4), (nn.Linear(320, 1280), {"factor": 8}, 2),
             (nn.Conv2d(320, 640, 3), {}, 4), (nn.Conv2d(64, 64, 3), {}, 32)]
    for target, options, dim in cases:
        ours = ADAPTERS["lokr"].create("m", target, dim, 1, NetworkSpec(kind="lokr", lycoris=True, **options))
        theirs = LokrModule("m", target, 1.0, dim, 1, **options)
        shapes = {k: tuple(v.shape) for k, v in ours.kohya_tensors().items()}
        assert shapes == {k: tuple(v.shape) for k, v in theirs.custom_state_dict().items()}, (target, options)
        assert float(ours.alpha) == float(theirs.alpha) and ours.scale == pytest.approx(theirs.scale)


@pytest.fixture(scope="module")
def full_sd():
    with init_empty_weights():
        return {"sd15": UNet2DConditionModel(**SD15_UNET), "sdxl": UNet2DConditionModel(**SDXL_UNET),
                "clip_l": CLIPTextModel(CLIPTextConfig(**CLIP_L))}


def _lycoris_network(text_encoder, unet):
    preset = dict(lycoris_kohya.PRESET["full"])
    preset["unet_target_module"] = [m for m in preset["unet_target_module"] if m != "TimestepEmbedding"]
    lycoris_kohya.LycorisNetworkKohya.apply_preset(preset)
    return lycoris_kohya.LycorisNetworkKohya(text_encoder, unet, lora_dim=1, conv_lora_dim=1, alpha=1, conv_alpha=1,
                                             network_module="loha", warn_on_unmatched=False)


def _ours(unet, text_encoder, family):
    text = text_candidates([text_encoder], family) if text_encoder is not None else []
    return text + unet_candidates(unet, family, with_conv=True) + named_candidates(
        unet, family, FAMILIES[family].lycoris_names)


def test_full_size_sd15_key_set_equals_what_lycoris_makes(full_sd):
    network = _lycoris_network(full_sd["clip_l"], full_sd["sd15"])
    theirs = {m.lora_name.replace("lora_te_encoder_", "lora_te_text_model_encoder_")
              for m in network.unet_loras + network.text_encoder_loras}
    ours = {c.name for c in _ours(full_sd["sd15"], full_sd["clip_l"], "sd15")}
    assert ours == theirs and len(ours) == 354
    assert {"lora_unet_conv_in", "lora_unet_conv_out", "lora_unet_time_embedding_linear_1"} <= ours


def test_full_size_sdxl_adapts_the_modules_lycoris_adapts_in_sd_scripts_unet(full_sd):
    unet = full_sd["sdxl"]
    by_diffusers_name_only = {id(m) for path, m in unet.named_modules()
                              if path.split(".")[0] in ("conv_in", "conv_out", "time_embedding", "add_embedding")}
    theirs = {id(m.org_module[0]) for m in _lycoris_network(None, unet).unet_loras} - by_diffusers_name_only
    ours = _ours(unet, None, "sdxl")
    assert {id(c.module) for c in ours} == theirs and len(ours) == len(theirs) == 788
    assert all(c.name.startswith(("lora_unet_input_blocks", "lora_unet_middle_block", "lora_unet_output_blocks"))
               for c in ours)


def test_a_dora_file_reloads_in_diffusers_and_reproduces_our_output(tiny_models, tmp_path):
    """diffusers' pipeline loader drops `dora_scale`; its kohya converter maps it to PEFT's lora_magnitude_vector
    but keeps LyCORIS's (out, 1…) layout, so the test lays the same numbers out as PEFT keeps them."""
    model = load_base_model(str(tiny_models["sd15"]))
    torch.manual_seed(0)
    network = LoRANetwork.from_candidates(runtime("sd15").lora_targets(model, with_conv=True), dim=4, alpha=4,
                                          conv_dim=4, conv_alpha=4, spec=NetworkSpec(dora=True, lycoris=True))
    with torch.no_grad():
        for adapter in network.adapters.values():
            adapter.lora_up.weight.normal_(0, 0.2)
            adapter.dora_scale.mul_(1 + 0.1 * torch.randn_like(adapter.dora_scale))
    inputs = _unet_inputs(model)
    base = _unet_out(model.unet, inputs)
    network.attach()
    ours = _unet_out(model.unet, inputs)
    path = save_lora(tmp_path / "dora.safetensors", network.kohya_state_dict(), {}, "safetensors")
    state, _ = _convert_non_diffusers_lora_to_diffusers(load_lora_file(path))
    state = {k: (v.reshape(1, -1, 1, 1) if v.dim() == 4 else v.flatten()) if "magnitude" in k else v
             for k, v in state.items()}
    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd15"])
    pipe.load_lora_weights(state, adapter_name="dora")
    theirs = _unet_out(pipe.unet, inputs)
    assert not torch.allclose(ours, base, atol=1e-3)
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()


@pytest.mark.parametrize(("algo", "extra", "marker"), [
    ("loha", [], "hada_w1_a"), ("lokr", ["factor=4"], "lokr_w1"), ("locon", ["dora_wd=True"], "dora_scale"),
])
def test_each_type_trains_on_the_tiny_model_and_writes_lycoris_keys(tiny_models, dataset, tmp_path, algo, extra,
                                                                    marker):
    args = [f"algo={algo}", *extra]
    cfg = build_config(base_values(tiny_models["sd15"], dataset, tmp_path / "out", network_module="lycoris.kohya",
                                   network_args=args, max_train_epochs=1))
    assert not errors(check(cfg))
    result = train(cfg, Recorder())
    with safe_open(str(result.final_path), framework="pt") as handle:
        meta, keys = handle.metadata(), set(handle.keys())
    assert meta["ss_network_module"] == "lycoris.kohya"
    written = json.loads(meta["ss_network_args"])
    assert {k: written[k] for k in ("algo", "dora_wd", "factor") if k in written} == dict(a.split("=") for a in args)
    assert any(k.endswith(f".{marker}") for k in keys)
    assert "lora_unet_conv_in.alpha" in keys and "lora_unet_down_blocks_0_resnets_0_conv1.alpha" in keys
    model = load_base_model(str(tiny_models["sd15"]))
    inputs = _unet_inputs(model)
    base = _unet_out(model.unet, inputs)
    network, unmatched = LoRANetwork.from_weights(load_lora_file(result.final_path), runtime("sd15").lora_targets(
        model, with_conv=True, names=FAMILIES["sd15"].lycoris_names))
    assert not unmatched
    network.attach()
    assert not torch.allclose(_unet_out(model.unet, inputs), base, atol=1e-6)  # it learned something


@pytest.mark.parametrize(("values", "phrase"), [
    ({"network_args": ["dora_wd=True"]}, "DoRA (dora_wd) needs network_module lycoris.kohya"),
    ({"network_args": ["algo=loha"]}, "algo is read by lycoris.kohya only"),
    ({"network_module": "lycoris.kohya", "network_args": ["algo=ia3"]}, "algo=ia3 is not offered"),
    ({"network_module": "lycoris.kohya", "network_args": ["preset=attn-mlp"]}, "only LyCORIS's preset=full"),
    ({"network_module": "lycoris.kohya", "network_args": ["algo=loha", "use_tucker=True"]}, "use_tucker"),
    ({"network_module": "lycoris.kohya", "network_args": ["dora_wd=True", "wd_on_output=False"]}, "wd_on_output"),
    ({"network_module": "lycoris.kohya", "network_args": ["algo=lokr", "factor=x"]}, "factor=x"),
    ({"network_module": "lycoris.kohya", "network_args": ["train_blocks=single"]}, "train_blocks is read by"),
])
def test_pre_flight_refuses_what_a_network_type_cannot_carry(tiny_models, dataset, tmp_path, values, phrase):
    cfg = build_config(base_values(tiny_models["sd15"], dataset, tmp_path, **values))
    found = [str(f) for f in errors(check(cfg))]
    assert any(phrase in f for f in found), found


def test_lycoris_trains_convolutions_at_the_linear_rank_unless_told():
    cfg = build_config({"network_module": "lycoris.kohya", "network_dim": 8, "network_alpha": 4})
    assert cfg.effective_conv_dim == 8 and cfg.effective_conv_alpha == 4
    cfg = build_config({"network_module": "lycoris.kohya", "network_dim": 8, "network_args": ["conv_dim=2"]})
    assert cfg.effective_conv_dim == 2
    assert build_config({"network_dim": 8}).effective_conv_dim is None
