"""End-to-end training on the tiny models, on the CPU."""

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import base_values
from trainer.data.synthetic import make_dataset
from trainer.families import FAMILIES, runtime
from trainer.families.sd.loading import encode_text, load_base_model
from trainer.job.config import build_config
from trainer.job.optimizers import OPTIMIZERS
from trainer.networks.network import LoRANetwork
from trainer.output.generate import load_lora_file
from trainer.training.callbacks import Callbacks
from trainer.training.loop import train
from trainer.training.optim import build_optimizer


class Recorder(Callbacks):
    def __init__(self, stop_at: int | None = None) -> None:
        self.progress, self.saved, self.previews, self.logs = [], [], [], []
        self.stop_at = stop_at

    def on_progress(self, p):
        self.progress.append(p)

    def on_epoch_saved(self, s):
        self.saved.append(s)

    def on_previews(self, p):
        self.previews.append(p)

    def on_log(self, m):
        self.logs.append(m)

    def should_stop(self):
        return self.stop_at is not None and self.progress[-1].step >= self.stop_at


@torch.no_grad()
def fixed_eval_loss(model_path, data_dir, lora_path=None) -> float:
    """Loss on a fixed batch: the dataset's images at fixed timesteps with fixed noise."""
    from trainer.data.dataset import scan_dataset
    from trainer.data.loader import crop_to_bucket, load_rgb, to_tensor

    model = load_base_model(str(model_path))
    if lora_path:
        network, _ = LoRANetwork.from_weights(load_lora_file(lora_path), runtime(model.family).lora_targets(
            model, with_conv=True, names=FAMILIES[model.family].lycoris_names))
        network.attach()
    records = [r for r in scan_dataset(data_dir, None).train if (r.width, r.height) == (64, 64)]
    pixels = torch.stack([to_tensor(crop_to_bucket(load_rgb(r.path), (64, 64), None)[0]) for r in records])
    latents = model.vae.encode(pixels).latent_dist.mean * model.vae.config.scaling_factor
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(latents.shape, generator=g)
    losses = []
    for t in (100, 300, 500, 700, 900):
        timesteps = torch.full((latents.shape[0],), t)
        noisy = model.noise_scheduler.add_noise(latents, noise, timesteps)
        hidden, _ = encode_text(model, [r.caption for r in records])
        losses.append(F.mse_loss(model.unet(noisy, timesteps, hidden).sample, noise).item())
    return sum(losses) / len(losses)


def test_loss_on_a_fixed_batch_goes_down_after_two_epochs(tiny_models, tmp_path):
    data = tmp_path / "data"
    make_dataset(data, count=6, repeats=5)
    cfg = build_config(base_values(tiny_models["sd15"], data, tmp_path / "out", learning_rate=2e-3))
    result = train(cfg)
    before = fixed_eval_loss(tiny_models["sd15"], data)
    after = fixed_eval_loss(tiny_models["sd15"], data, result.final_path)
    assert after < before * 0.98, (before, after)


def test_run_reports_progress_saves_epochs_and_previews(tiny_models, dataset, tmp_path):
    rec = Recorder()
    cfg = build_config(base_values(
        tiny_models["sd15"], dataset, tmp_path / "out", save_every_n_epochs=1, sample_every_n_epochs=1,
        sample_prompts=["sks, red circle --n blurry --s 2 --d 5", "blue square --s 2 --sampler dpm++ 2m karras"],
        sample_images_per_prompt=2, training_comment="hello", max_train_epochs=3, save_last_n_epochs=1,
    ))
    result = train(cfg, rec)
    out = tmp_path / "out"
    # 6 images × 2 repeats in 3 buckets of 4 → 2 batches each → 6 steps per epoch
    assert [p.step for p in rec.progress] == list(range(1, 19)) and rec.progress[-1].total_steps == 18
    assert all(p.loss > 0 and p.lr == pytest.approx(1e-3) for p in rec.progress)
    assert [s.epoch for s in rec.saved] == [1, 2, 3]
    assert not (out / "t-000001.safetensors").exists()  # pruned by save_last_n_epochs=1
    assert (out / "t-000002.safetensors").exists() and result.final_path == out / "t.safetensors"
    names = sorted(p.name for p in (out / "sample").iterdir())
    assert names == [f"t_e{e:06d}_{p:02d}_{k}.png" for e in (1, 2, 3) for p in (0, 1) for k in (0, 1)]
    assert [len(p.paths) for p in rec.previews] == [4, 4, 4]
    with safe_open(str(result.final_path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_epoch"] == "3" and meta["ss_steps"] == "18" and meta["ss_num_epochs"] == "3"
    assert meta["ss_num_train_images"] == "12" and meta["ss_num_reg_images"] == "0"
    assert meta["ss_output_name"] == "t" and meta["ss_training_comment"] == "hello" and meta["ss_seed"] == "42"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(meta["ss_dataset_dirs"]) == {"2_sks shape": {"n_repeats": 2, "img_count": 6}}
    frequency = json.loads(meta["ss_tag_frequency"])["2_sks shape"]
    assert frequency["sks"] == 6 and frequency["simple"] == 6
    blob = result.final_path.read_bytes()
    import hashlib
    import struct

    header = struct.unpack("<Q", blob[:8])[0]
    assert meta["sshs_model_hash"] == hashlib.sha256(blob[8 + header:]).hexdigest()


def test_logging_dir_gets_tensorboard_scalars_per_step_and_epoch(tiny_models, dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rec = Recorder()
    cfg = build_config(base_values(tiny_models["sd15"], dataset, tmp_path / "out", logging_dir=str(tmp_path / "logs"),
                                   max_train_epochs=2, text_encoder_lr=5e-4))
    train(cfg, rec)
    (run,) = (tmp_path / "logs").iterdir()
    events = EventAccumulator(str(run / "network_train"))
    events.Reload()
    current = events.Scalars("loss/current")
    assert [e.step for e in current] == [p.step for p in rec.progress]
    assert [e.value for e in current] == pytest.approx([p.loss for p in rec.progress])
    assert [e.step for e in events.Scalars("loss/epoch")] == [1, 2]
    assert [e.value for e in events.Scalars("lr/unet")] == pytest.approx([1e-3] * len(current))
    assert [e.value for e in events.Scalars("lr/te1")] == pytest.approx([5e-4] * len(current))


def test_resume_continues_bit_for_bit(tiny_models, dataset, tmp_path):
    values = base_values(tiny_models["sd15"], dataset, tmp_path / "a", lr_scheduler="cosine", shuffle_caption=True,
                         caption_tag_dropout_rate=0.2, flip_aug=True, noise_offset=0.05, save_state=True)
    whole = train(build_config(values))
    stopped = train(build_config({**values, "output_dir": str(tmp_path / "b")}), Recorder(stop_at=4))
    assert stopped.stopped and stopped.state_dir is not None and stopped.final_path is None
    resumed = train(build_config({**values, "output_dir": str(tmp_path / "b"), "resume": str(stopped.state_dir)}))
    a, b = load_file(str(whole.final_path)), load_file(str(resumed.final_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an epoch-end state resumes too: 1 epoch + 1 more from its state equals the 2-epoch run
    first = train(build_config({**values, "output_dir": str(tmp_path / "c"), "max_train_epochs": 2,
                                "save_every_n_epochs": 1}), Recorder(stop_at=6))
    again = train(build_config({**values, "output_dir": str(tmp_path / "c"), "resume": str(first.state_dir)}))
    c = load_file(str(again.final_path))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_continuing_a_finished_run_for_more_epochs_equals_the_longer_run(tiny_models, dataset, tmp_path):
    """Optimizer, RNGs and position come from the stored state: with a constant rate, 2 epochs and then 1 more are
    the 3-epoch run bit for bit."""
    values = base_values(tiny_models["sd15"], dataset, tmp_path / "a", lr_scheduler="constant", shuffle_caption=True,
                         save_state=True, max_train_epochs=3)
    whole = train(build_config(values))
    short = train(build_config({**values, "output_dir": str(tmp_path / "b"), "max_train_epochs": 2}))
    assert short.state_dir is not None
    more = train(build_config({**values, "output_dir": str(tmp_path / "b"), "resume": str(short.state_dir)}))
    a, b = load_file(str(whole.final_path)), load_file(str(more.final_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_restarted_schedule_runs_again_over_the_added_steps(tiny_models):
    from trainer.training.optim import build_scheduler

    def rates(**extra):
        cfg = build_config({"lr_scheduler": "cosine", "learning_rate": 1.0, **extra})
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_scheduler(cfg, optimizer, total_steps=30, warmup=0)
        out = []
        for _ in range(30):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    extended, restarted = rates(), rates(lr_restart_step=20)
    assert extended[20] < 0.5 and restarted[20] == 1.0  # back to the peak at the restart
    assert restarted[:20] == [1.0] * 20  # before it: the peak (the old run's own schedule is not replayed)
    assert all(x > y for x, y in zip(restarted[20:], restarted[21:], strict=False))  # then down again
    assert restarted[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))


def test_held_out_images_give_a_validation_loss_per_epoch_at_fixed_noise(tiny_models, dataset, tmp_path):
    from trainer.training.loop import setup
    from trainer.training.validation import validation_loss

    held_out = tmp_path / "val"
    make_dataset(held_out, count=3, repeats=1)
    values = base_values(tiny_models["sdxl"], dataset, tmp_path / "out", validation_data_dir=str(held_out),
                         save_every_n_epochs=1)
    rec = Recorder()
    train(build_config(values), rec)
    scores = [s.validation_loss for s in rec.saved]
    assert len(scores) == 2 and all(math.isfinite(v) for v in scores) and scores[0] != scores[1]
    assert any(m.startswith("epoch 2: validation loss") and "3 held-out image(s)" in m for m in rec.logs)
    # the same network scored twice gives the same number: the noise levels and the noise are fixed
    session, _, _ = setup(build_config({**values, "output_dir": str(tmp_path / "again")}), Recorder())
    first, second = (validation_loss(session.validation, session.family, session.model, session.cfg,
                                     session.accelerator.autocast) for _ in range(2))
    assert first == second


def test_sdxl_trains_with_cached_latents_and_cached_text(tiny_models, dataset, tmp_path):
    cfg = build_config(base_values(
        tiny_models["sdxl"], dataset, tmp_path / "out", network_train_unet_only=True, cache_latents=True,
        cache_latents_to_disk=True, flip_aug=True, cache_text_encoder_outputs=True, max_train_epochs=1,
        sample_every_n_epochs=1, sample_prompts=["sks --s 2"], sample_images_per_prompt=1,
    ))
    result = train(cfg)
    weights = load_file(str(result.final_path))
    assert weights and all(k.startswith("lora_unet_") for k in weights)
    assert any("input_blocks" in k for k in weights)
    assert len(list((tmp_path / "out" / ".latent_cache").iterdir())) == 12  # 6 images × (plain, flipped)
    with safe_open(str(result.final_path), "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"


def test_sd2_v_prediction_with_locon_min_snr_and_multires(tiny_models, dataset, tmp_path):
    cfg = build_config(base_values(
        tiny_models["sd2"], dataset, tmp_path / "out", v2=True, v_parameterization=True, conv_dim=2,
        conv_alpha=1, min_snr_gamma=5, multires_noise_iterations=4, max_train_epochs=1, clip_skip=2,
        max_token_length=150, gradient_accumulation_steps=2, lr_scheduler="cosine_with_restarts",
        lr_warmup_steps=0.5, text_encoder_lr=0.0,
    ))
    rec = Recorder()
    result = train(cfg, rec)
    assert len(rec.progress) == 3  # 6 batches / accumulation 2
    weights = load_file(str(result.final_path))
    assert any("resnets_0_conv1" in k for k in weights)
    assert not any(k.startswith("lora_te") for k in weights)  # lr 0 drops the text-encoder group entirely
    with safe_open(str(result.final_path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sd_v2_v" and json.loads(meta["ss_network_args"])["conv_dim"] == "2"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_is_built_with_sd_scripts_defaults_under_the_users_arguments(name):
    entry = OPTIMIZERS[name]
    if entry.package and importlib.util.find_spec(entry.module.split(".")[0]) is None:
        pytest.skip(f"{entry.package} is not installed here")
    weight = torch.nn.Parameter(torch.zeros(2))
    cfg = build_config({"optimizer_type": name, "learning_rate": 2e-4, "optimizer_args": ["weight_decay=0.05"]})
    optimizer = build_optimizer(cfg, [{"params": [weight]}])
    assert type(optimizer).__name__ == entry.cls
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 0.05 and group["lr"] == 2e-4
    expected = {"SGDNesterov": {"momentum": 0.9, "nesterov": True},
                "Adafactor": {"scale_parameter": False, "relative_step": False, "warmup_init": False}}.get(name, {})
    assert {key: group[key] for key in expected} == expected
    if name == "Adafactor":  # finding its own rate, it is given none
        own = build_optimizer(build_config({"optimizer_type": name, "optimizer_args": ["relative_step=True"]}),
                              [{"params": [weight]}])
        assert own.param_groups[0]["lr"] is None and own.param_groups[0]["relative_step"] is True


@pytest.mark.parametrize("optimizer", ["Lion", "Prodigy", "Adafactor", "SGDNesterov"])
def test_other_optimizers_train(tiny_models, dataset, tmp_path, optimizer):
    lr = 1.0 if optimizer == "Prodigy" else 1e-3
    cfg = build_config(base_values(tiny_models["sd15"], dataset, tmp_path, optimizer_type=optimizer,
                                   learning_rate=lr, max_train_epochs=1, save_precision="fp16"))
    weights = load_file(str(train(cfg).final_path))
    assert all(v.dtype == torch.float16 for v in weights.values())


def test_network_weights_start_from_an_existing_lora(tiny_models, dataset, tmp_path):
    first = train(build_config(base_values(tiny_models["sd15"], dataset, tmp_path / "a", max_train_epochs=1,
                                           network_dim=3)))
    cfg = build_config(base_values(tiny_models["sd15"], dataset, tmp_path / "b", max_train_epochs=1,
                                   network_weights=str(first.final_path), dim_from_weights=True,
                                   learning_rate=1e-12))
    second = load_file(str(train(cfg).final_path))
    start = load_file(str(first.final_path))
    key = next(k for k in start if k.endswith("lora_up.weight"))
    assert second[key].shape == start[key].shape and torch.allclose(second[key], start[key], atol=1e-6)


def test_cli_exit_codes(tiny_models, dataset, tmp_path):
    config = tmp_path / "c.toml"
    lines = [f'{k} = {json.dumps(v)}' for k, v in base_values(tiny_models["sd15"], dataset, tmp_path / "o").items()]
    config.write_text("\n".join(lines) + "\n")
    cli = [sys.executable, "-m", "trainer.cli", "train", "--config", str(config)]
    ok = subprocess.run(cli + ["--set", "max_train_epochs=1"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "step 1/6" in ok.stderr and ok.stdout.strip().endswith("t.safetensors")
    bad = subprocess.run(cli + ["--set", "netwrk_dim=8"], capture_output=True, text=True)
    assert bad.returncode == 2 and 'did you mean "network_dim"' in bad.stderr
    broken = subprocess.run(cli + ["--set", f'pretrained_model_name_or_path="{tmp_path}/none"'], capture_output=True,
                            text=True)
    assert broken.returncode == 1 and "training failed" in broken.stderr


def test_the_run_starts_with_a_report_of_folders_buckets_batches_and_steps(tiny_models, tmp_path):
    make_dataset(tmp_path / "train", count=4, repeats=3, sizes=((64, 64),))
    make_dataset(tmp_path / "reg", count=2, repeats=1, concept="shape", captions=False, seed=3, sizes=((64, 64),))
    cfg = build_config(base_values(tiny_models["sd15"], tmp_path / "train", tmp_path / "out",
                                   reg_data_dir=str(tmp_path / "reg"), max_train_epochs=1, train_batch_size=2,
                                   enable_bucket=False))
    rec = Recorder()
    train(cfg, rec)
    # 4 × 3 = 12 training samples; 2 reg images cycled to 12; 24 samples in one 64×64 bucket, batches of 2
    for line in ("3_sks shape: 4 training images × 3 repeats = 12 samples",
                 "1_shape: 2 regularization images × 1 repeats = 2 samples",
                 "12 training samples per epoch, 12 regularization samples (cycled to match)",
                 "buckets (samples per epoch): 64×64: 24",
                 "batch size 2, gradient accumulation 1: 12 batches = 12 optimisation steps per epoch",
                 "1 epochs, 12 optimisation steps in all"):
        assert line in rec.logs, (line, rec.logs)
    assert len(rec.progress) == 12
