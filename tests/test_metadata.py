"""LoRA metadata as sd-scripts' train_network.py writes it. Every expected value here is computed in the test from
the run's own inputs (images, repeats, files), not by calling the code under test."""

from __future__ import annotations

import hashlib
import json
import struct
import tomllib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from tests.conftest import base_values
from tests.test_training import Recorder
from trainer.data.synthetic import make_dataset
from trainer.families.tiny import make_tiny
from trainer.families.tiny import write_single_file as write_tiny_single_file
from trainer.job.config import build_config
from trainer.training.loop import train


def _captions(folder, text: str) -> None:
    for path in folder.glob("*.png"):
        path.with_suffix(".txt").write_text(text)


def test_metadata_matches_what_sd_scripts_writes(tmp_path):
    config_folder = make_tiny(tmp_path / "m", "sd15")
    base = write_tiny_single_file(config_folder, "sd15", str(tmp_path / "m.safetensors"))
    make_dataset(tmp_path / "train", count=3, repeats=2, sizes=((64, 64),))
    make_dataset(tmp_path / "reg", count=2, repeats=3, concept="shape", seed=4, sizes=((64, 64),))
    _captions(tmp_path / "train" / "2_sks shape", "Sks, Red Circle, simple")
    _captions(tmp_path / "reg" / "3_shape", "shape, Red Circle")
    cfg = build_config(base_values(
        base, tmp_path / "train", tmp_path / "out", pretrained_model_config=str(config_folder),
        reg_data_dir=str(tmp_path / "reg"), network_dim=128, network_alpha=64, max_train_epochs=2,
        train_batch_size=2, optimizer_args=["weight_decay=0.01"], save_every_n_epochs=1,
    ))
    rec = Recorder()
    result = train(cfg, rec)
    with safe_open(str(result.final_path), "pt") as handle:
        meta = handle.metadata()
    with safe_open(str(tmp_path / "out" / "t-000001.safetensors"), "pt") as handle:
        epoch_meta = handle.metadata()

    # 3 images × 2 repeats = 6 samples; reg 2 × 3 = 6 (already matches); 12 samples of 64×64 in batches of 2
    assert meta["ss_num_train_images"] == "6" and meta["ss_num_reg_images"] == "6"
    assert meta["ss_num_batches_per_epoch"] == "6" and meta["ss_total_batch_size"] == "2"
    assert meta["ss_max_train_steps"] == str(len(rec.progress)) == "12"
    assert json.loads(meta["ss_tag_frequency"]) == {"2_sks shape": {"sks": 3, "red circle": 3, "simple": 3},
                                                    "3_shape": {"shape": 2, "red circle": 2}}
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01)"
    buckets = json.loads(meta["ss_bucket_info"])
    assert [b for b in buckets["buckets"].values()] == [{"resolution": [64, 64], "count": 12}]
    assert buckets["mean_img_ar_error"] == 0.0
    assert (meta["ss_min_bucket_reso"], meta["ss_max_bucket_reso"]) == ("32", "128")
    assert (meta["ss_cache_latents"], meta["ss_max_grad_norm"]) == ("False", "1.0")
    assert meta["ss_session_id"].isdigit() and meta["ss_session_id"] == epoch_meta["ss_session_id"]
    assert meta["ss_network_dropout"] == "None" and meta["ss_clip_skip"] == "None"  # unset, as sd-scripts writes it
    assert meta["ss_sd_model_name"] == "m.safetensors"
    blob = base.read_bytes()
    assert meta["ss_sd_model_hash"] == hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(blob).hexdigest()
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert meta["modelspec.implementation_version"] == f"lorabake/{project['version']}"  # sd-scripts/<commit> there
    assert epoch_meta["modelspec.title"] == "t-000001" and meta["modelspec.title"] == "t"
    # a plain LoRA has no network_args: sd-scripts leaves the key out rather than writing "None"
    assert "ss_network_args" not in meta and "ss_network_args" not in epoch_meta
    # network_alpha = 64, an integer: "64" and int64 alpha tensors, as torch.tensor(64) in sd-scripts
    assert meta["ss_network_alpha"] == "64"
    alphas = {k: v for k, v in load_file(str(result.final_path)).items() if k.endswith(".alpha")}
    assert alphas and all(v.dtype == torch.int64 and int(v) == 64 for v in alphas.values())

    # both hashes over the file as written with the ss_* keys only
    tensors = load_file(str(result.final_path))
    assert sum(t.numel() * t.element_size() for t in tensors.values()) > 0x110000  # past the legacy window
    ss_only = {k: v for k, v in meta.items() if k.startswith("ss_")}
    reference = safetensors_bytes({k: v.contiguous() for k, v in tensors.items()}, ss_only)
    assert meta["sshs_legacy_hash"] == hashlib.sha256(reference[0x100000:0x110000]).hexdigest()[:8]
    header = struct.unpack("<Q", reference[:8])[0]
    assert meta["sshs_model_hash"] == hashlib.sha256(reference[8 + header:]).hexdigest()
    with_modelspec = safetensors_bytes({k: v.contiguous() for k, v in tensors.items()},
                                       {k: v for k, v in meta.items() if not k.startswith("sshs_")})
    assert hashlib.sha256(with_modelspec[0x100000:0x110000]).hexdigest()[:8] != meta["sshs_legacy_hash"]
    assert torch.is_tensor(next(iter(tensors.values())))


def test_a_fractional_alpha_is_written_as_the_float_it_is(tmp_path):
    folder = make_tiny(tmp_path / "m", "sd15")
    make_dataset(tmp_path / "train", count=1, repeats=1, sizes=((64, 64),))
    cfg = build_config(base_values(folder, tmp_path / "train", tmp_path / "out", network_dim=4, network_alpha=1.5,
                                   max_train_epochs=1))
    path = train(cfg).final_path
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["ss_network_alpha"] == "1.5"
    alphas = [v for k, v in load_file(str(path)).items() if k.endswith(".alpha")]
    assert alphas and all(v.dtype == torch.float32 and float(v) == 1.5 for v in alphas)
