"""An exponential moving average of the LoRA's weights (ema_decay): what the files hold and say, and resume."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import base_values
from tests.test_training import Recorder
from trainer.job.config import build_config
from trainer.job.preflight import check
from trainer.training.loop import train


def _ups(path) -> float:
    weights = load_file(str(path))
    return sum(float(t.norm()) for k, t in weights.items() if k.endswith("lora_up.weight"))


def test_the_file_holds_the_average_between_the_start_and_the_last_step_and_says_which(tiny_models, dataset,
                                                                                      tmp_path):
    values = base_values(tiny_models["sd15"], dataset, tmp_path / "a", max_train_epochs=2, ema_decay=0.999999,
                         save_ema="both")
    result = train(build_config(values))
    averaged, raw = result.final_path, result.final_path.with_name("t-raw.safetensors")
    with safe_open(str(averaged), framework="pt") as ours, safe_open(str(raw), framework="pt") as theirs:
        assert ours.metadata()["lorabake_weights"] == "ema" and theirs.metadata()["lorabake_weights"] == "raw"
        assert ours.metadata()["lorabake_ema_decay"] == "0.999999"
    # the average starts at the first update's weights: one that barely moves is still the one-step run's file
    one_step = train(build_config({**values, "output_dir": str(tmp_path / "one"), "max_train_epochs": None,
                                   "max_train_steps": 1, "ema_decay": None, "save_ema": "ema"}))
    first, held = load_file(str(one_step.final_path)), load_file(str(averaged))
    assert all(torch.allclose(first[k], held[k], atol=1e-5) for k in first)
    assert _ups(averaged) < 0.5 * _ups(raw)
    # with a decay near 0 the average is the last step's weights
    near = train(build_config({**values, "output_dir": str(tmp_path / "b"), "ema_decay": 1e-9, "save_ema": "ema"}))
    last, plain = load_file(str(near.final_path)), load_file(str(raw))
    assert all(torch.allclose(last[k], plain[k], atol=1e-6) for k in plain)
    # updating every other step, or with the warm-up, averages other weights
    sparse = train(build_config({**values, "output_dir": str(tmp_path / "c"), "ema_decay": 0.5,
                                 "ema_every_n_steps": 2, "save_ema": "ema"}))
    dense = train(build_config({**values, "output_dir": str(tmp_path / "d"), "ema_decay": 0.5, "save_ema": "ema"}))
    assert _ups(sparse.final_path) != _ups(dense.final_path)


def test_a_resumed_run_restores_the_average_bit_for_bit(tiny_models, dataset, tmp_path):
    values = base_values(tiny_models["sd15"], dataset, tmp_path / "a", lr_scheduler="cosine", save_state=True,
                         ema_decay=0.8, ema_warmup=True, ema_on_cpu=True)
    whole = train(build_config(values))
    stopped = train(build_config({**values, "output_dir": str(tmp_path / "b")}), Recorder(stop_at=4))
    assert stopped.stopped and stopped.state_dir is not None
    resumed = train(build_config({**values, "output_dir": str(tmp_path / "b"), "resume": str(stopped.state_dir)}))
    a, b = load_file(str(whole.final_path)), load_file(str(resumed.final_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_options_without_a_decay_are_said_to_do_nothing(tiny_models, dataset, tmp_path):
    cfg = build_config(base_values(tiny_models["sd15"], dataset, tmp_path, ema_on_cpu=True, save_ema="raw"))
    warned = {f.field: f.message for f in check(cfg) if f.level == "warning"}
    assert warned["ema_on_cpu"] == warned["save_ema"] == "has no effect without ema_decay (the average is off)"
