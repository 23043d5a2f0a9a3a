"""A DoRA (or LoHa / LoKr) file as a plain LoRA of a chosen rank: the converted file's update equals the source's
merged update W' − W within the error the conversion reports, and a full-rank conversion reproduces the model's
output."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from tests.test_lora_file import _unet_inputs, _unet_out
from trainer.families import runtime
from trainer.networks.convert import convert_file, merged_update
from trainer.networks.network import LoRANetwork
from trainer.networks.spec import NetworkSpec
from trainer.output.generate import load_lora_file
from trainer.output.saving import save_lora


def _trained_like(model, spec: NetworkSpec, seed: int) -> LoRANetwork:
    """A network of the type with random values everywhere, DoRA magnitudes moved off ‖W‖: a trained file's shape."""
    family = runtime(model.family)
    candidates = family.lora_targets(model, with_conv=True, names=family.info.lycoris_names)
    network = LoRANetwork.from_candidates(candidates, dim=4, alpha=2, conv_dim=4, conv_alpha=2, spec=spec)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("dora_scale"):
                parameter.mul_(1 + 0.2 * noise)
            else:
                parameter.add_(0.05 * noise)
    return network


def _updates(model, path) -> dict[str, torch.Tensor]:
    family = runtime(model.family)
    candidates = family.lora_targets(model, with_conv=True, names=family.info.lycoris_names)
    network, unmatched = LoRANetwork.from_weights(load_lora_file(path), candidates)
    assert unmatched == []
    return {name: merged_update(adapter) for name, adapter in network.adapters.items()}


@pytest.mark.parametrize(("kind", "dora"), [("lora", True), ("loha", False), ("lokr", True)])
def test_the_converted_update_equals_the_source_update_within_the_reported_error(tiny_models, tmp_path, kind, dora):
    model = runtime("sd15").load_location(str(tiny_models["sd15"]))
    source = tmp_path / "source.safetensors"
    network = _trained_like(model, NetworkSpec(kind=kind, dora=dora, lycoris=True), seed=1)
    args = json.dumps({"algo": kind, "dora_wd": str(dora)})
    save_lora(source, network.kohya_state_dict(), {"ss_network_module": "lycoris.kohya", "ss_network_args": args},
              "safetensors")
    wanted = _updates(model, source)

    low = convert_file(model, source, tmp_path / "rank2.safetensors", rank=2)
    got = _updates(model, tmp_path / "rank2.safetensors")
    assert set(got) == set(wanted) and low.modules == len(wanted) and low.rank == 2
    left = sum(float(((got[n] - wanted[n]) ** 2).sum()) for n in wanted)
    whole = sum(float((wanted[n] ** 2).sum()) for n in wanted)
    assert 0 < low.relative_error < 1
    assert math.isclose(math.sqrt(left / whole), low.relative_error, rel_tol=1e-3)
    assert low.worst_error >= low.relative_error
    with safe_open(str(tmp_path / "rank2.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
        keys = set(handle.keys())
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "2" == meta["ss_network_alpha"]
    assert "ss_network_args" not in meta and "dora_scale" not in " ".join(keys)
    assert json.loads(meta["lorabake_converted_from"])["network_module"] == "lycoris.kohya"

    # at full rank nothing is left out, and the model with the plain file gives what it gives with the source
    full = convert_file(model, source, tmp_path / "full.safetensors", rank=10_000)
    assert full.relative_error < 1e-5
    inputs = _unet_inputs(model)
    outputs = []
    for path in (source, tmp_path / "full.safetensors"):
        family = runtime(model.family)
        attached, _ = LoRANetwork.from_weights(
            load_lora_file(path), family.lora_targets(model, with_conv=True, names=family.info.lycoris_names))
        attached.attach()
        outputs.append(_unet_out(model.denoiser, inputs))
        attached.detach()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)
    assert not torch.allclose(outputs[0], _unet_out(model.denoiser, inputs), atol=1e-4)  # the update is really there


def test_a_file_for_another_base_model_is_refused_by_name(tiny_models, tmp_path):
    sd15 = runtime("sd15").load_location(str(tiny_models["sd15"]))
    sdxl = runtime("sdxl").load_location(str(tiny_models["sdxl"]))
    source = tmp_path / "xl.safetensors"
    save_lora(source, _trained_like(sdxl, NetworkSpec(dora=True, lycoris=True), 2).kohya_state_dict(), {},
              "safetensors")
    with pytest.raises(ValueError, match="does not fit this SD 1.5 base model"):
        convert_file(sd15, source, tmp_path / "out.safetensors", rank=4)


def test_the_command_line_converts_and_says_what_the_rank_leaves_out(tiny_models, tmp_path, capsys):
    from trainer.cli import main

    model = runtime("sd15").load_location(str(tiny_models["sd15"]))
    source = tmp_path / "dora.safetensors"
    save_lora(source, _trained_like(model, NetworkSpec(dora=True, lycoris=True), 3).kohya_state_dict(), {},
              "safetensors")
    out = tmp_path / "plain.safetensors"
    assert main(["to-lora", "--model", str(tiny_models["sd15"]), "--lora", str(source), "--rank", "2",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert out.exists() and "a plain LoRA of rank 2" in said and "it leaves out" in said
    assert main(["to-lora", "--model", str(tiny_models["sdxl"]), "--lora", str(source), "--out", str(out)]) == 2
