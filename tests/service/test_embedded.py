"""`make run`'s stack with no servers: SQLite, the SQLAlchemy Celery transport, local storage, a training worker and
a worker for the light tasks."""

from __future__ import annotations

import io
import json
import tomllib
import zipfile

import httpx
import pytest

from tests.service.conftest import EmbeddedStack, png_bytes, register, wait_for


@pytest.fixture
def embedded(tmp_path, tiny_sd15):
    with EmbeddedStack(tmp_path, tiny_sd15) as stack, httpx.Client(base_url=stack.url, timeout=30) as client:
        yield client, stack.log
    assert stack.leftovers() == [], "the worker outlived `make run`"


def test_embedded_service_trains_a_job_and_serves_its_file(embedded):
    client, describe = embedded
    lines = [line for line in describe().splitlines() if line.strip()]
    assert any("lorabake is running at http://" in line for line in lines), lines
    assert not any("celery@" in line or "[queues]" in line for line in lines), "the worker banner is printed"
    me = register(client, "solo@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "d", "default_repeats": 1}, headers=me).json()
    files = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(4)]
    assert all(r["id"] for r in client.post(f"/api/v1/datasets/{dataset['id']}/images", files=files,
                                            headers=me).json())
    job = client.post("/api/v1/jobs", headers=me, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "style", "name": "solo",
        "params": {"max_train_epochs": 1}}).json()
    # Without Redis the event stream polls the database; it ends by itself when the job does
    with client.stream("GET", f"/api/v1/jobs/{job['id']}/events", headers=me, timeout=180) as stream:
        events = [line.removeprefix("event: ") for line in stream.iter_lines() if line.startswith("event: ")]
    assert events.count("progress") >= 2 and "epoch" in events and events[-1] == "status"
    state = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}", headers=me).json())["status"]
                     in ("succeeded", "failed") and j, 180, "the job", describe=describe)
    assert state["status"] == "succeeded", state["error"]
    (epoch,) = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=me).json()
    blob = client.get(f"/api/v1/jobs/{job['id']}/epochs/1/download", headers=me, follow_redirects=True).content
    assert len(blob) == epoch["size"] and blob[8:9] == b"{"  # a safetensors header follows the length

    # Testing an epoch does not wait behind a training run: the light tasks have a worker of their own
    long = client.post("/api/v1/jobs", headers=me, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "style", "name": "long",
        "params": {"max_train_epochs": 200, "sample_every_n_epochs": None}}).json()
    wait_for(lambda: client.get(f"/api/v1/jobs/{long['id']}", headers=me).json()["status"] == "running", 60,
             "the long job to start", describe=describe)
    assert_an_epoch_renders(client, me, job["id"], 1, {"prompt": "x", "steps": 2}, describe)
    assert client.get(f"/api/v1/jobs/{long['id']}", headers=me).json()["status"] == "running"
    client.post(f"/api/v1/jobs/{long['id']}/cancel", headers=me)


def test_a_flux_job_trains_two_epochs_with_previews_tests_an_epoch_and_downloads(tmp_path, tiny_sd15, tiny_flux):
    with EmbeddedStack(tmp_path, tiny_sd15, tiny_flux) as stack, \
            httpx.Client(base_url=stack.url, timeout=30) as client:
        me = register(client, "flux@example.com")
        models = {m["name"]: m["family"] for m in client.get("/api/v1/base-models").json()}
        assert models == {"tiny-sd15": "sd15", "tiny-flux": "flux"}
        dataset = client.post("/api/v1/datasets", json={"name": "f", "default_repeats": 1}, headers=me).json()
        files = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(4)]
        client.post(f"/api/v1/datasets/{dataset['id']}/images", files=files, headers=me)
        body = {"dataset_id": dataset["id"], "base_model": "tiny-flux", "preset": "anime_character", "name": "fx",
                "params": {"max_train_epochs": 2}, "sample_prompts": ["sks, red circle --s 2 --g 3.5"]}
        refused = client.post("/api/v1/jobs/estimate", headers=me,
                              json={**body, "mode": "pro", "preset": None, "params": {"clip_skip": 2}})
        errors = refused.json()["errors"]
        assert [e["field"] for e in errors] == ["clip_skip"] and "does not apply to FLUX.1" in errors[0]["message"]
        estimate = client.post("/api/v1/jobs/estimate", json=body, headers=me).json()
        assert estimate["errors"] == [] and estimate["total_steps"] == 2 * estimate["steps_per_epoch"] > 0
        job = client.post("/api/v1/jobs", json=body, headers=me).json()
        assert job["params"]["model_family"] == "flux" and job["params"]["timestep_sampling"] == "flux_shift"
        assert "clip_skip" not in job["params"] or job["params"]["clip_skip"] is None
        state = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}", headers=me).json())["status"]
                         in ("succeeded", "failed") and j, 240, "the FLUX job", describe=stack.log)
        assert state["status"] == "succeeded", state["error"]
        assert state["step"] == estimate["total_steps"]
        epochs = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=me).json()
        assert [e["n"] for e in epochs] == [1, 2] and all(len(e["previews"]) == 4 for e in epochs)
        blob = client.get(f"/api/v1/jobs/{job['id']}/epochs/2/download", headers=me, follow_redirects=True).content
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
        assert header["__metadata__"]["modelspec.architecture"] == "flux-1-dev/lora"
        assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in header
        assert_an_epoch_renders(client, me, job["id"], 2, {"prompt": "sks <lora:fx:0.8>", "steps": 2, "seed": 3},
                                stack.log)
        exported = client.get(f"/api/v1/jobs/{job['id']}/export-config", headers=me)
        assert exported.status_code == 200
        with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
            config = archive.read("config.toml").decode()
        assert "accelerate launch flux_train_network.py" in config
        values = tomllib.loads(config)
        assert values["network_module"] == "networks.lora_flux" and values["guidance_scale"] == 1.0
        assert "clip_skip" not in values and "v2" not in values and "sdxl" not in values
    assert stack.leftovers() == []


# model fixture, family, label, its sampling, modelspec.architecture, a key its file must have
NEW_DIT_FAMILIES = [
    ("tiny_zimage", "zimage", "Z-Image", "shift", "z-image/lora",
     "diffusion_model.layers.0.attention.to_q.lora_down.weight"),
    ("tiny_flux2", "flux2", "FLUX.2 [klein]", "flux_shift", "flux-2-klein/lora",
     "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"),
    ("tiny_qwen_image", "qwen_image", "Qwen-Image", "shift", "qwen-image/lora",
     "diffusion_model.transformer_blocks.0.attn.to_q.lora_down.weight"),
]


def test_each_new_dit_family_trains_two_epochs_with_previews_tests_an_epoch_and_downloads(tmp_path, tiny_sd15,
                                                                                          request):
    """One stack offers every new DiT family's tiny model; each trains, renders, tests and downloads in turn."""
    models = [request.getfixturevalue(model) for model, *_ in NEW_DIT_FAMILIES]
    with EmbeddedStack(tmp_path, tiny_sd15, *models) as stack, \
            httpx.Client(base_url=stack.url, timeout=30) as client:
        me = register(client, "dit@example.com")
        offered = {m["name"]: m["family"] for m in client.get("/api/v1/base-models").json()}
        assert offered == {"tiny-sd15": "sd15", **{f"tiny-{family}": family for _, family, *_ in NEW_DIT_FAMILIES}}
        families = {f["name"]: f for f in client.get("/api/v1/families").json()}
        for _, family, label, sampling, architecture, first_key in NEW_DIT_FAMILIES:
            assert families[family]["label"] == label and "1024x1024" in families[family]["crop_sizes"]
            assert families[family]["captions"] == "sentences"
            _trains_tests_and_downloads(client, stack, me, family, label, sampling, architecture, first_key)
    assert stack.leftovers() == []


def _trains_tests_and_downloads(client, stack, me, family, label, sampling, architecture, first_key) -> None:  # noqa: ANN001
    dataset = client.post("/api/v1/datasets", json={"name": "z", "default_repeats": 1}, headers=me).json()
    files = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(4)]
    client.post(f"/api/v1/datasets/{dataset['id']}/images", files=files, headers=me)
    body = {"dataset_id": dataset["id"], "base_model": f"tiny-{family}", "preset": "real_person",
            "name": f"zx_{family}", "params": {"max_train_epochs": 2},
            "sample_prompts": ["a photo of sks, red circle --s 2"]}
    refused = client.post("/api/v1/jobs/estimate", headers=me,
                          json={**body, "mode": "pro", "preset": None, "params": {"min_snr_gamma": 5}})
    assert f"does not apply to {label}" in refused.json()["errors"][0]["message"]
    estimate = client.post("/api/v1/jobs/estimate", json=body, headers=me).json()
    assert estimate["errors"] == [] and estimate["total_steps"] == 2 * estimate["steps_per_epoch"] > 0
    job = client.post("/api/v1/jobs", json=body, headers=me).json()
    assert job["params"]["model_family"] == family and job["params"]["timestep_sampling"] == sampling
    state = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}", headers=me).json())["status"]
                     in ("succeeded", "failed") and j, 240, f"the {label} job", describe=stack.log)
    assert state["status"] == "succeeded", state["error"]
    epochs = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=me).json()
    assert [e["n"] for e in epochs] == [1, 2] and all(len(e["previews"]) == 4 for e in epochs)
    blob = client.get(f"/api/v1/jobs/{job['id']}/epochs/2/download", headers=me, follow_redirects=True).content
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    assert header["__metadata__"]["modelspec.architecture"] == architecture and first_key in header
    assert_an_epoch_renders(client, me, job["id"], 2, {"prompt": f"a photo of sks <lora:zx_{family}:0.8>", "seed": 3},
                  stack.log)
    exported = client.get(f"/api/v1/jobs/{job['id']}/export-config", headers=me)
    assert exported.status_code == 409 and f"sd-scripts does not train {label.split(' ')[0]}" in exported.text


def assert_an_epoch_renders(client, me, job_id: str, epoch: int, body: dict, describe) -> None:  # noqa: ANN001
    """"Test an epoch": the generation is accepted and ends succeeded."""
    generation = client.post(f"/api/v1/jobs/{job_id}/epochs/{epoch}/generate", headers=me, json=body)
    assert generation.status_code == 202, generation.text
    done = wait_for(lambda: (g := client.get(f"/api/v1/generations/{generation.json()['id']}", headers=me)
                             .json())["status"] in ("succeeded", "failed") and g, 120, "the generation",
                    describe=describe)
    assert done["status"] == "succeeded", done["error"]
