"""Other trainers' config files → job parameters with a report; a job → sd-scripts files that reproduce it."""

from __future__ import annotations

import io
import json
import shutil
import tomllib
import zipfile

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import png_bytes, register

SD_SCRIPTS_SECTIONED = """
[model_arguments]
pretrained_model_name_or_path = "/models/anyLoRA.safetensors"
v2 = false

[additional_network_arguments]
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
unet_lr = 0.0005
text_encoder_lr = 0.0001
network_args = ["conv_dim=8", "conv_alpha=4"]

[optimizer_arguments]
optimizer_type = "AdamW8bit"
learning_rate = 0.0005
lr_scheduler = "cosine_with_restarts"
lr_scheduler_num_cycles = 3
lr_warmup_steps = 0.05
optimizer_args = ["weight_decay=0.1"]

[training_arguments]
max_train_epochs = 10
save_every_n_epochs = 1
train_batch_size = 4
clip_skip = 2
min_snr_gamma = 5.0
seed = 1234
max_token_length = 225
mixed_precision = "fp16"
max_data_loader_n_workers = 2
persistent_data_loader_workers = true
log_with = "wandb"

[saving_arguments]
output_dir = "/out"
output_name = "mychar"
save_model_as = "safetensors"

[dataset_arguments]
dataset_config = "/configs/dataset.toml"

[sample_prompt_arguments]
sample_every_n_epochs = 2
sample_sampler = "euler_a"
sample_prompts = "/configs/prompts.txt"
"""

DATASET_CONFIG = """
[general]
shuffle_caption = true
keep_tokens = 1
caption_extension = ".txt"

[[datasets]]
resolution = [768, 768]
batch_size = 2
enable_bucket = true
max_bucket_reso = 1024

  [[datasets.subsets]]
  image_dir = "/data/10_mychar"
  num_repeats = 10
  flip_aug = true

  [[datasets.subsets]]
  image_dir = "/data/reg"
  num_repeats = 1
  is_reg = true
  flip_aug = false
  token_warmup_step = 3
"""

KOHYA_GUI = {
    "LoRA_type": "Standard", "additional_parameters": "", "bucket_no_upscale": True, "bucket_reso_steps": 64.0,
    "cache_latents": True, "caption_dropout_every_n_epochs": 0.0, "caption_dropout_rate": 0,
    "caption_extension": ".txt", "clip_skip": 2, "color_aug": False, "conv_alpha": 1, "conv_dim": 1,
    "enable_bucket": True, "epoch": 8, "flip_aug": False, "gradient_accumulation_steps": 1.0,
    "gradient_checkpointing": False, "keep_tokens": "0", "learning_rate": "0.0001", "lora_network_weights": "",
    "lr_scheduler": "cosine", "lr_scheduler_num_cycles": "", "lr_warmup": "10", "max_data_loader_n_workers": "1",
    "max_resolution": "512,640", "max_token_length": "75", "max_train_epochs": "", "mem_eff_attn": True,
    "min_snr_gamma": 0, "mixed_precision": "bf16", "network_alpha": 64, "network_dim": 64, "noise_offset": "0.05",
    "num_cpu_threads_per_process": 2, "optimizer": "AdamW8bit", "optimizer_args": "weight_decay=0.05 betas=0.9,0.99",
    "output_dir": "C:/lora/out", "output_name": "edg",
    "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "prior_loss_weight": 1.0, "random_crop": False, "save_every_n_epochs": 1, "save_precision": "bf16",
    "seed": "1234", "shuffle_caption": False, "text_encoder_lr": "5e-05", "train_batch_size": 3,
    "train_data_dir": "C:/lora/img", "unet_lr": "0.0001", "v2": False, "vae_batch_size": 0, "xformers": "sdpa",
    "sample_every_n_steps": 200, "use_wandb": False,
}

LORA_EASY = {
    "base_model": "/models/nai.ckpt", "img_folder": "/data/img", "output_folder": "/out", "net_dim": 16,
    "alpha": 8, "scheduler": "cosine_with_restarts", "cosine_restarts": 2, "learning_rate": 1e-4,
    "unet_lr": 1e-4, "text_encoder_lr": 5e-5, "num_epochs": 6, "batch_size": 2, "train_resolution": 512,
    "shuffle_captions": True, "keep_tokens": 1, "use_8bit_adam": True, "warmup_lr_ratio": 0.1, "clip_skip": 2,
    "save_json_folder": "/json", "tag_occurrence_txt_file": True, "mixed_precision": "fp16", "seed": 23,
    "buckets": True, "min_bucket_resolution": 320, "max_bucket_resolution": 960,
}


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(var_dir=tmp_path / "var"))) as client:
        yield client


@pytest.fixture
def alice(client):
    return register(client, "alice@example.com")


def import_config(client, headers, name: str, text: str, dataset: str | None = None):
    files = {"file": (name, text.encode(), "application/octet-stream")}
    if dataset is not None:
        files["dataset_config"] = ("dataset.toml", dataset.encode(), "application/toml")
    return client.post("/api/v1/jobs/import-config", files=files, headers=headers)


def notes(items: list[dict]) -> dict[str, str]:
    return {i["key"]: i["message"] for i in items}


def test_sectioned_sd_scripts_toml_with_its_dataset_config(client, alice):
    body = import_config(client, alice, "config.toml", SD_SCRIPTS_SECTIONED, DATASET_CONFIG).json()
    assert body["format"] == "sd-scripts" and body["problems"] == []
    params = body["params"]
    assert (params["network_dim"], params["network_alpha"], params["optimizer_type"]) == (32, 16, "AdamW8bit")
    assert params["network_args"] == ["conv_dim=8", "conv_alpha=4"] and params["lr_warmup_steps"] == 0.05
    assert (params["num_workers"], params["persistent_workers"]) == (2, True)
    # the dataset_config wins for the dataset's options; the first subset's flip_aug is used
    assert (params["resolution"], params["train_batch_size"], params["flip_aug"]) == ("768,768", 2, True)
    assert params["shuffle_caption"] and params["keep_tokens"] == 1 and params["max_bucket_reso"] == 1024
    assert body["default_repeats"] == 10 and body["subsets"][1] == {"image_dir": "/data/reg", "num_repeats": 1,
                                                                    "is_reg": True}
    assert body["base_model_hint"] == "/models/anyLoRA.safetensors"
    ignored = notes(body["ignored"])
    assert {"output_dir", "output_name", "dataset_config", "pretrained_model_name_or_path", "v2"} <= set(ignored)
    assert "prompt file path" in ignored["sample_prompts"] and "differs between subsets" in ignored["flip_aug"]
    assert "not a dataset option" in ignored["token_warmup_step"]
    assert notes(body["unknown"]) == {"log_with": 'unknown parameter "log_with"'}


def test_flat_toml_reports_a_misspelled_key_with_a_suggestion_and_bad_values_as_problems(client, alice):
    flat = 'network_dim = 8\nnetwork_alpah = 4\nlearning_rate = -1\nsample_prompts = ["a cat", "a dog"]\n'
    body = import_config(client, alice, "flat.toml", flat).json()
    assert body["params"] == {"network_dim": 8, "learning_rate": -1}
    assert body["sample_prompts"] == ["a cat", "a dog"]
    assert notes(body["unknown"]) == {"network_alpah": 'unknown parameter "network_alpah" (did you mean '
                                                       '"network_alpha"?)'}
    assert notes(body["problems"])["learning_rate"] == "Input should be greater than or equal to 0"


def test_kohya_ss_gui_json_values_are_converted(client, alice):
    body = import_config(client, alice, "edg.json", json.dumps(KOHYA_GUI)).json()
    assert body["format"] == "kohya_ss" and body["problems"] == [], body
    params = body["params"]
    assert params["max_train_epochs"] == 8 and params["resolution"] == "512,640"
    assert params["learning_rate"] == 0.0001 and params["text_encoder_lr"] == 5e-05 and params["seed"] == 1234
    assert params["lr_warmup_steps"] == 0.1 and params["max_token_length"] == 75 and params["noise_offset"] == 0.05
    assert params["optimizer_type"] == "AdamW8bit" and params["optimizer_args"] == ["weight_decay=0.05",
                                                                                     "betas=0.9,0.99"]
    assert (params["sdpa"], params["xformers"]) == (True, False) and params["bucket_reso_steps"] == 64
    assert "min_snr_gamma" not in params and "conv_dim" not in params and "max_train_steps" not in params
    ignored = notes(body["ignored"])
    assert {"train_data_dir", "output_dir", "output_name", "mem_eff_attn", "num_cpu_threads_per_process",
            "sample_every_n_steps"} <= set(ignored)
    assert "use_wandb" not in ignored and body["unknown"] == []
    lokr = {**KOHYA_GUI, "LoRA_type": "LyCORIS/LoKr", "dora_wd": True, "factor": "8", "conv_dim": 4, "conv_alpha": 2,
            "use_tucker": False}
    lycoris = import_config(client, alice, "lokr.json", json.dumps(lokr)).json()
    assert lycoris["problems"] == [] and lycoris["unknown"] == []
    assert lycoris["params"]["network_module"] == "lycoris.kohya"
    assert lycoris["params"]["network_args"] == ["algo=lokr", "dora_wd=True", "factor=8"]
    assert (lycoris["params"]["conv_dim"], lycoris["params"]["conv_alpha"]) == (4, 2)
    ia3 = import_config(client, alice, "ia3.json", json.dumps({**KOHYA_GUI, "LoRA_type": "LyCORIS/iA3"})).json()
    assert "not offered" in notes(ia3["ignored"])["LoRA_type"] and "network_module" not in ia3["params"]


def test_lora_easy_json_with_old_names(client, alice):
    body = import_config(client, alice, "easy.json", json.dumps(LORA_EASY)).json()
    assert body["format"] == "lora_easy" and body["problems"] == [], body
    params = body["params"]
    assert (params["network_dim"], params["network_alpha"], params["lr_scheduler_num_cycles"]) == (16, 8, 2)
    assert params["optimizer_type"] == "AdamW8bit" and params["max_train_epochs"] == 6
    assert (params["train_batch_size"], params["resolution"], params["enable_bucket"]) == (2, "512", True)
    assert (params["min_bucket_reso"], params["max_bucket_reso"], params["shuffle_caption"]) == (320, 960, True)
    ignored = notes(body["ignored"])
    assert {"save_json_folder", "tag_occurrence_txt_file", "pretrained_model_name_or_path", "train_data_dir",
            "output_dir"} <= set(ignored)


def test_unreadable_config_files_are_refused_by_name(client, alice):
    broken = import_config(client, alice, "config.toml", "network_dim = [")
    assert broken.status_code == 422 and "config.toml: not valid TOML" in broken.json()["detail"]["errors"][0][
        "message"]
    binary = client.post("/api/v1/jobs/import-config", files={"file": ("x.toml", b"\xff\xfe\x00bad", "x")},
                         headers=alice)
    assert binary.status_code == 422 and binary.json()["detail"]["errors"][0]["message"] == "not UTF-8 text"
    twice = import_config(client, alice, "c.toml", "[a]\nseed = 1\n[b]\nseed = 2\n")
    assert twice.status_code == 422 and "given twice" in twice.json()["detail"]["errors"][0]["message"]


def two_and_a_reg(client, headers, repeats: int) -> dict:
    """A dataset "mychar" of two training images and one regularization image."""
    dataset = client.post("/api/v1/datasets", json={"name": "mychar", "default_repeats": repeats},
                          headers=headers).json()
    uploaded = client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=headers,
                           files=[("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(3)]).json()
    client.patch(f"/api/v1/datasets/{dataset['id']}/images/{uploaded[2]['id']}", json={"is_reg": True},
                 headers=headers)
    return dataset


def test_exported_sd_scripts_config_reproduces_the_job_and_imports_back(client, alice):
    dataset = two_and_a_reg(client, alice, repeats=5)
    job = client.post("/api/v1/jobs", headers=alice, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "name": "mychar", "mode": "pro", "preset": None,
        "params": {"network_dim": 8, "network_alpha": 4, "max_train_epochs": 3, "train_batch_size": 2,
                   "resolution": "64", "mixed_precision": "no", "learning_rate": 1e-3, "shuffle_caption": True,
                   "keep_tokens": 1, "num_workers": 1, "optimizer_args": ["weight_decay=0.1"]},
        "sample_prompts": ["mychar, smiling --n blurry"]}).json()
    exported = client.get(f"/api/v1/jobs/{job['id']}/export-config", headers=alice)
    assert exported.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    assert sorted(archive.namelist()) == ["config.toml", "dataset_config.toml", "sample_prompts.txt"]
    config_text = archive.read("config.toml").decode()
    assert "accelerate launch train_network.py --config_file config.toml" in config_text
    config = tomllib.loads(config_text)
    assert config["output_name"] == "mychar" and config["dataset_config"] == "dataset_config.toml"
    assert config["max_data_loader_n_workers"] == 1 and "num_workers" not in config and "sdxl" not in config
    assert config["sample_prompts"] == "sample_prompts.txt" and "resolution" not in config
    dataset_config = tomllib.loads(archive.read("dataset_config.toml").decode())
    assert dataset_config["datasets"][0]["resolution"] == [64, 64] and dataset_config["datasets"][0][
        "batch_size"] == 2
    assert dataset_config["datasets"][0]["subsets"] == [
        {"image_dir": "dataset/5_mychar", "num_repeats": 5},
        {"image_dir": "dataset/reg/1_mychar", "num_repeats": 1, "is_reg": True}]
    assert dataset_config["general"]["shuffle_caption"] is True and dataset_config["general"]["keep_tokens"] == 1

    back = import_config(client, alice, "config.toml", config_text,
                         archive.read("dataset_config.toml").decode()).json()
    assert back["problems"] == [] and back["unknown"] == [] and back["default_repeats"] == 5
    stored = client.get(f"/api/v1/jobs/{job['id']}", headers=alice).json()["params"]
    defaults = {p["key"]: p["default"] for group in client.get("/api/v1/params").json() for p in group["params"]}
    for key, value in back["params"].items():  # what the job set, and the defaults it ran with for the rest
        expected = stored[key] if key in stored else defaults[key]
        assert expected == value or (key == "resolution" and value == "64,64"), (key, expected, value)
    assert {k: back["params"][k] for k in ("network_dim", "network_alpha", "max_train_epochs", "train_batch_size",
                                            "num_workers", "optimizer_args")} == {
        "network_dim": 8, "network_alpha": 4, "max_train_epochs": 3, "train_batch_size": 2, "num_workers": 1,
        "optimizer_args": ["weight_decay=0.1"]}


SD_SCRIPTS_FLUX = """
pretrained_model_name_or_path = "/models/flux1-dev.safetensors"
clip_l = "/models/clip_l.safetensors"
t5xxl = "/models/t5xxl_fp16.safetensors"
ae = "/models/ae.safetensors"
network_module = "networks.lora_flux"
network_dim = 16
network_alpha = 16
network_train_unet_only = true
timestep_sampling = "shift"
discrete_flow_shift = 3.1582
model_prediction_type = "raw"
guidance_scale = 1.0
t5xxl_max_token_length = 512
cache_text_encoder_outputs = true
cache_text_encoder_outputs_to_disk = true
fp8_base = true
optimizer_type = "AdamW8bit"
learning_rate = 1e-4
mixed_precision = "bf16"
gradient_checkpointing = true
max_train_epochs = 8
"""


def test_a_lycoris_job_exports_its_network_as_sd_scripts_reads_it(client, alice):
    dataset = client.post("/api/v1/datasets", json={"name": "lyco", "default_repeats": 2}, headers=alice).json()
    client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=alice,
                files=[("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(2)])
    job = client.post("/api/v1/jobs", headers=alice, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "name": "lyco", "mode": "pro", "preset": None,
        "params": {"network_module": "lycoris.kohya", "network_args": ["algo=loha"], "conv_dim": 4, "conv_alpha": 2,
                   "resolution": "64", "max_train_epochs": 1}}).json()
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/jobs/{job['id']}/export-config", headers=alice).content))
    config = tomllib.loads(archive.read("config.toml").decode())
    assert config["network_module"] == "lycoris.kohya" and "conv_dim" not in config
    assert config["network_args"] == ["algo=loha", "conv_dim=4", "conv_alpha=2.0"]
    refused = client.post("/api/v1/jobs", headers=alice, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "name": "lyco2", "mode": "pro", "preset": None,
        "params": {"network_module": "lycoris.kohya", "network_args": ["algo=ia3"]}})
    assert refused.status_code == 422 and "algo=ia3 is not offered" in refused.text


def test_a_flux_train_network_toml_imports_and_a_flux_job_exports_back(client, alice, tmp_path, tiny_flux):
    body = import_config(client, alice, "flux.toml", SD_SCRIPTS_FLUX).json()
    assert body["problems"] == [] and body["unknown"] == [] and body["family_hint"] == "flux"
    params = body["params"]
    assert (params["timestep_sampling"], params["discrete_flow_shift"], params["guidance_scale"]) == (
        "shift", 3.1582, 1.0)
    assert params["fp8_base"] and params["t5xxl_max_token_length"] == 512
    assert {"clip_l", "t5xxl", "ae", "pretrained_model_name_or_path"} <= set(notes(body["ignored"]))

    shutil.copytree(tiny_flux, tmp_path / "var" / "models" / "tiny-flux")
    dataset = client.post("/api/v1/datasets", json={"name": "fx", "default_repeats": 2}, headers=alice).json()
    client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=alice,
                files=[("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(2)])
    job = client.post("/api/v1/jobs", headers=alice, json={
        "dataset_id": dataset["id"], "base_model": "tiny-flux", "name": "fx", "mode": "pro", "preset": None,
        "params": {**params, "optimizer_type": "AdamW"}})  # bitsandbytes is CUDA-only
    assert job.status_code == 201, job.text
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/jobs/{job.json()['id']}/export-config",
                                                    headers=alice).content))
    config_text = archive.read("config.toml").decode()
    assert "accelerate launch flux_train_network.py" in config_text
    back = import_config(client, alice, "config.toml", config_text, archive.read("dataset_config.toml").decode())
    back = back.json()
    assert back["problems"] == [] and back["family_hint"] == "flux"
    for key in ("timestep_sampling", "discrete_flow_shift", "model_prediction_type", "guidance_scale",
                "t5xxl_max_token_length", "network_module", "network_dim", "cache_text_encoder_outputs"):
        assert back["params"][key] == params[key], key


def test_lorabake_train_reads_the_config_lorabake_exports(client, alice, tmp_path, tiny_sd15):
    from trainer.cli import main

    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    dataset = two_and_a_reg(client, alice, repeats=2)
    job = client.post("/api/v1/jobs", headers=alice, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "name": "mychar", "mode": "pro", "preset": None,
        "params": {"network_dim": 4, "network_alpha": 2, "max_train_epochs": 1, "resolution": "64",
                   "mixed_precision": "no", "learning_rate": 1e-3},
        "sample_prompts": ["mychar, smiling"]}).json()
    folder = tmp_path / "reproduce"
    zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/jobs/{job['id']}/export-config", headers=alice).content)
                    ).extractall(folder)
    zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/datasets/{dataset['id']}/export", headers=alice).content)
                    ).extractall(folder / "dataset")

    assert main(["train", "--config", str(folder / "config.toml"), "--set", f"output_dir={folder / 'out'}"]) == 0
    assert (folder / "out" / "mychar.safetensors").is_file()
    from trainer.job.config_io import load_config_file

    loaded = load_config_file(folder / "config.toml").config
    assert loaded.train_data_dir == str(folder / "dataset") and loaded.reg_data_dir == str(folder / "dataset" / "reg")
    assert loaded.sample_prompts == str(folder / "sample_prompts.txt") and loaded.resolution == "64,64"


def test_a_family_that_declares_no_exporter_exports_nothing(client, alice, monkeypatch):
    import dataclasses

    from trainer.families import FAMILIES
    from trainer.families.declare import Exporter

    dataset = client.post("/api/v1/datasets", json={"name": "x"}, headers=alice).json()
    client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=alice,
                files=[("files", ("0.png", png_bytes(), "image/png"))])
    job = client.post("/api/v1/jobs", headers=alice, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "name": "x", "mode": "basic",
        "preset": "standard"}).json()
    monkeypatch.setitem(FAMILIES, "sd15", dataclasses.replace(
        FAMILIES["sd15"], exporter=Exporter(reason="no outside trainer reads this family")))
    refused = client.get(f"/api/v1/jobs/{job['id']}/export-config", headers=alice)
    assert refused.status_code == 409
    assert refused.json()["detail"]["errors"] == [{"field": "base_model", "message": "SD 1.5 jobs cannot be exported: "
                                                   "no outside trainer reads this family"}]
