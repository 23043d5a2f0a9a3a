"""API behaviour on the embedded settings: auth, uploads, tags, estimates, pre-flight errors, ownership."""

from __future__ import annotations

import gc
import io
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import png_bytes, register
from trainer.families import FAMILIES
from trainer.job.presets import THEMES


@pytest.fixture
def client(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", max_images_per_dataset=5, max_image_pixels=1_000_000)
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:  # as a browser on this machine
        yield client


@pytest.fixture
def alice(client):
    return register(client, "alice@example.com")


def new_dataset(client, headers, **body) -> str:
    return client.post("/api/v1/datasets", json={"name": "d", **body}, headers=headers).json()["id"]


def upload(client, headers, dataset_id, *files):
    return client.post(f"/api/v1/datasets/{dataset_id}/images", files=[("files", f) for f in files],
                       headers=headers).json()


def test_login_failures_are_the_same_for_unknown_email_and_wrong_password(client, alice):
    unknown = client.post("/api/v1/auth/login", data={"username": "nobody@example.com", "password": "whatever1"})
    wrong = client.post("/api/v1/auth/login", data={"username": "alice@example.com", "password": "whatever1"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    assert client.post("/api/v1/auth/register",
                       json={"email": "ALICE@example.com", "password": "another one"}).status_code == 409
    assert client.post("/api/v1/auth/register", json={"email": "x@example.com", "password": "short"}).status_code == 422


def test_browser_cookie_session_needs_the_csrf_header_for_changes(client, alice):
    client.cookies.clear()
    client.post("/api/v1/auth/login", data={"username": "alice@example.com", "password": "correct horse battery"})
    assert client.get("/api/v1/me").json()["email"] == "alice@example.com"
    refused = client.post("/api/v1/datasets", json={"name": "x"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]["message"]
    csrf = client.cookies.get("lorabake_csrf")
    assert client.post("/api/v1/datasets", json={"name": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    assert client.get("/api/v1/me").status_code == 401


def test_personal_tokens_work_for_scripts_and_logout_revokes_a_session(client, alice):
    token = client.post("/api/v1/me/tokens", json={"name": "ci"}, headers=alice).json()["token"]
    script = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=script).status_code == 200
    client.cookies.clear()
    assert client.post("/api/v1/auth/logout", headers=alice).status_code == 204
    assert client.get("/api/v1/me", headers=alice).status_code == 401
    assert client.get("/api/v1/me", headers=script).status_code == 200
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"}).status_code == 401


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    image = Image.new("RGB", (120, 80), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_each_file_gets_its_own_result_and_good_files_stay_accepted(client, alice):
    dataset = new_dataset(client, alice)
    results = upload(client, alice, dataset,
                     ("good.png", png_bytes(), "image/png"),
                     ("fake.jpg", b"GIF89a" + b"\x00" * 100, "image/jpeg"),
                     ("bomb.png", bomb_png(20000, 20000), "image/png"),
                     ("rotated.jpg", exif_rotated_jpeg(), "image/jpeg"),
                     ("empty.png", b"", "image/png"))
    by_name = {r["filename"]: r for r in results}
    assert by_name["good.png"]["id"] and by_name["rotated.jpg"]["id"]
    assert "not a PNG or JPEG" in by_name["fake.jpg"]["error"]
    assert "decompression bomb" in by_name["bomb.png"]["error"]
    assert by_name["empty.png"]["error"] == "empty file"
    images = {i["filename"]: i for i in client.get(f"/api/v1/datasets/{dataset}/images", headers=alice).json()}
    assert set(images) == {"good.png", "rotated.jpg"}
    assert (images["rotated.jpg"]["width"], images["rotated.jpg"]["height"]) == (80, 120)  # EXIF applied
    thumb = client.get(images["good.png"]["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"


def test_a_full_dataset_refuses_more_images_by_name(client, alice):
    dataset = new_dataset(client, alice)
    results = upload(client, alice, dataset, *[(f"{i}.png", png_bytes(seed=i), "image/png") for i in range(7)])
    assert [bool(r["id"]) for r in results] == [True] * 5 + [False] * 2
    assert "dataset is full (5 images at most)" in results[-1]["error"]


def test_batch_tags_add_at_start_remove_and_replace(client, alice):
    dataset = new_dataset(client, alice)
    ids = [r["id"] for r in upload(client, alice, dataset, *[(f"{i}.png", png_bytes(seed=i), "image/png")
                                                            for i in range(3)])]
    client.patch(f"/api/v1/datasets/{dataset}/images/{ids[0]}", json={"tags": ["1girl", "red hair"]}, headers=alice)
    batch = f"/api/v1/datasets/{dataset}/tags/batch"
    client.post(batch, json={"action": "add", "tags": ["sks"], "position": "start"}, headers=alice)
    client.post(batch, json={"action": "add", "tags": ["smile"], "image_ids": [ids[1]]}, headers=alice)
    client.post(batch, json={"action": "replace", "tags": ["red hair"], "replace_with": ["long hair", "red"]},
                headers=alice)
    client.post(batch, json={"action": "remove", "tags": ["1girl"]}, headers=alice)
    tags = {i["id"]: i["tags"] for i in client.get(f"/api/v1/datasets/{dataset}/images", headers=alice).json()}
    assert tags == {ids[0]: ["sks", "long hair", "red"], ids[1]: ["sks", "smile"], ids[2]: ["sks"]}
    frequency = client.get(f"/api/v1/datasets/{dataset}/tags", headers=alice).json()
    assert frequency[0] == {"tag": "sks", "count": 3}
    missing = client.post(batch, json={"action": "add", "tags": ["x"], "image_ids": ["nope"]}, headers=alice)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]["message"]


def test_estimate_counts_repeats_reg_images_and_batches(client, alice):
    dataset = new_dataset(client, alice, default_repeats=3)
    ids = [r["id"] for r in upload(client, alice, dataset, *[(f"{i}.png", png_bytes(seed=i), "image/png")
                                                            for i in range(5)])]
    client.patch(f"/api/v1/datasets/{dataset}/images/{ids[4]}", json={"is_reg": True}, headers=alice)
    client.patch(f"/api/v1/datasets/{dataset}/images/{ids[0]}", json={"repeats": 5}, headers=alice)
    body = {"dataset_id": dataset, "base_model": "tiny-sd15", "preset": "standard",
            "params": {"max_train_epochs": 3, "train_batch_size": 2}}
    estimate = client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()
    # train samples 5 + 3×3 = 14; the reg image is cycled to 14 → 28 samples, all in the 64 px bucket: 14 batches of 2
    assert (estimate["train_samples"], estimate["reg_samples"]) == (14, 14)
    assert (estimate["steps_per_epoch"], estimate["total_steps"]) == (14, 42)
    assert estimate["estimated_seconds"] is None and estimate["errors"] == []  # no run finished here yet
    assert (estimate["train_images"], estimate["batch_size"], estimate["gradient_accumulation_steps"]) == (4, 2, 1)

    # the form's "Repeats per image" counts before the job exists, and the job runs with what was counted
    body["repeats"] = 20  # 5 + 3×20 = 65 train samples, reg cycled to 65 → 130 samples: 65 batches of 2
    estimate = client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()
    assert (estimate["train_samples"], estimate["steps_per_epoch"], estimate["total_steps"]) == (65, 65, 195)
    assert client.get(f"/api/v1/datasets/{dataset}", headers=alice).json()["default_repeats"] == 3  # only counted
    job = client.post("/api/v1/jobs", json=body, headers=alice).json()
    assert job["total_steps"] == 195
    assert client.get(f"/api/v1/datasets/{dataset}", headers=alice).json()["default_repeats"] == 20


def test_a_dataset_remembers_its_crop_family_and_a_job_on_another_family_is_warned(client, alice):
    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, ("a.png", png_bytes(), "image/png"))
    crop = f"/api/v1/datasets/{dataset}/crop"
    unknown = client.post(crop, json={"width": 512, "height": 512, "family": "sd9"}, headers=alice)
    assert unknown.status_code == 422 and unknown.json()["detail"]["errors"][0]["field"] == "family"
    assert client.post(crop, json={"width": 1024, "height": 1024, "family": "flux"}, headers=alice).json() == {
        "changed": 1}
    assert client.get(f"/api/v1/datasets/{dataset}", headers=alice).json()["crop_family"] == "flux"
    body = {"dataset_id": dataset, "base_model": "tiny-sd15", "preset": "standard"}
    warnings = client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()["warnings"]
    assert {"field": "base_model", "message": "this dataset's crops were made for FLUX.1, but this base model is "
            "SD 1.5: re-crop the images for SD 1.5 in the workbench, or pick a FLUX.1 base model"} in warnings
    client.post(crop, json={"width": 512, "height": 512, "family": "sd15"}, headers=alice)
    warnings = client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()["warnings"]
    assert not [w for w in warnings if "crops were made" in w["message"]]


def test_a_queued_task_says_what_it_waits_for(client, alice):
    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, ("a.png", png_bytes(), "image/png"))
    crop = {"mode": "focus", "width": 512, "height": 512}
    first, second = (client.post(f"/api/v1/datasets/{dataset}/crop", json=crop, headers=alice).json()
                     for _ in range(2))  # no worker runs here: both stay queued
    assert first["waiting_for"] == "waiting for a worker to take it (next in line)"
    assert second["waiting_for"] == "waiting for a free worker: 1 task ahead of it"
    listed = client.get(f"/api/v1/datasets/{dataset}/tasks", headers=alice).json()
    assert [t["waiting_for"] for t in listed] == [second["waiting_for"], first["waiting_for"]]


def test_names_and_numbers_people_type_get_reasons_they_can_read(client, alice):
    blank = client.post("/api/v1/datasets", json={"name": "   "}, headers=alice)
    assert blank.status_code == 422 and "not only spaces" in blank.json()["detail"]["errors"][0]["message"]
    spaced = client.post("/api/v1/datasets", json={"name": "  my   set "}, headers=alice).json()
    assert spaced["name"] == "my set"
    upload(client, alice, spaced["id"], ("a.png", png_bytes(), "image/png"))
    body = {"dataset_id": spaced["id"], "base_model": "tiny-sd15", "name": "my lora", "preset": "standard"}
    named = client.post("/api/v1/jobs", json=body, headers=alice)
    message = named.json()["detail"]["errors"][0]
    assert named.status_code == 422 and message["field"] == "name" and "pattern" not in message["message"]
    assert message["message"].startswith("use letters, digits and _ . - only")
    zero = client.post("/api/v1/jobs", json={**body, "name": "my_lora", "params": {"max_train_epochs": 0}},
                       headers=alice)
    assert zero.status_code == 422
    assert {e["field"]: e["message"] for e in zero.json()["detail"]["errors"]}["max_train_epochs"] == \
        "Input should be greater than or equal to 1"


def test_job_with_bad_parameters_is_refused_with_every_problem_named(client, alice):
    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, ("a.png", png_bytes(), "image/png"))
    body = {"dataset_id": dataset, "base_model": "tiny-sd15", "preset": "standard",
            "params": {"lr_scheduler": "constant", "lr_warmup_steps": 10, "netwrok_dim": 8, "output_dir": "/etc"}}
    response = client.post("/api/v1/jobs", json=body, headers=alice)
    assert response.status_code == 422
    errors = {e["field"]: e["message"] for e in response.json()["detail"]["errors"]}
    assert "output_dir" in errors and "set by the service" in errors["output_dir"]
    assert 'did you mean "network_dim"' in errors["netwrok_dim"]
    assert client.get("/api/v1/jobs", headers=alice).json() == []
    body["params"] = {"lr_scheduler": "constant", "lr_warmup_steps": 10}
    errors = client.post("/api/v1/jobs", json=body, headers=alice).json()["detail"]["errors"]
    assert any(e["field"] == "lr_warmup_steps" for e in errors)
    body.update(params={}, base_model="sd-nonexistent")
    errors = client.post("/api/v1/jobs", json=body, headers=alice).json()["detail"]["errors"]
    assert errors == [{"field": "base_model", "message": "unknown base model 'sd-nonexistent'"}]


def test_scheduled_job_waits_for_tonight_and_cancel_ends_it(client, alice):
    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, ("a.png", png_bytes(), "image/png"))
    job = client.post("/api/v1/jobs", json={"dataset_id": dataset, "base_model": "tiny-sd15", "preset": "standard",
                                            "start_after": "tonight"}, headers=alice).json()
    assert job["status"] == "scheduled" and job["start_after"] and job["queue_position"] is None
    assert job["finished"] is False
    canceled = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice).json()
    assert canceled["status"] == "canceled" and canceled["finished"] is True
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice).status_code == 409
    retrained = client.post(f"/api/v1/jobs/{job['id']}/retrain", json={"params": {"network_dim": 8}}, headers=alice)
    assert retrained.status_code == 201 and retrained.json()["params"]["network_dim"] == 8
    assert retrained.json()["status"] == "queued" and retrained.json()["queue_position"] == 1


def test_lists_show_counts_and_queue_places_and_a_job_page_shows_everything(client, alice):
    first, second = new_dataset(client, alice), new_dataset(client, alice)
    upload(client, alice, second, *[(f"{i}.png", png_bytes(seed=i), "image/png") for i in range(3)])
    listed = client.get("/api/v1/datasets", headers=alice).json()
    assert [(d["id"], d["image_count"]) for d in listed] == [(second, 3), (first, 0)]
    assert client.get(f"/api/v1/datasets/{second}", headers=alice).json()["image_count"] == 3
    body = {"dataset_id": second, "base_model": "tiny-sd15", "preset": "standard", "sample_prompts": ["a cat"]}
    older = client.post("/api/v1/jobs", json=body, headers=alice).json()
    newer = client.post("/api/v1/jobs", json={**body, "start_after": "tonight"}, headers=alice).json()
    jobs = client.get("/api/v1/jobs", headers=alice).json()
    assert [(j["id"], j["status"], j["queue_position"]) for j in jobs] == [
        (newer["id"], "scheduled", None), (older["id"], "queued", 1)]
    assert not {"params", "history", "log_tail"} & set(jobs[0])  # the queue page needs none of these
    page = client.get(f"/api/v1/jobs/{older['id']}", headers=alice).json()
    assert page["queue_position"] == 1 and page["params"] == older["params"] and page["sample_prompts"] == ["a cat"]
    assert page["history"] == [] and page["progress"] == 0.0


def test_other_users_objects_are_not_found(client, alice):
    dataset = new_dataset(client, alice)
    image = upload(client, alice, dataset, ("a.png", png_bytes(), "image/png"))[0]["id"]
    bob = register(client, "bob@example.com")
    assert client.get(f"/api/v1/datasets/{dataset}", headers=bob).status_code == 404
    assert client.get("/api/v1/datasets", headers=bob).json() == []
    assert client.patch(f"/api/v1/datasets/{dataset}/images/{image}", json={"tags": ["x"]},
                        headers=bob).status_code == 404
    assert client.delete(f"/api/v1/datasets/{dataset}", headers=bob).status_code == 404
    assert upload(client, bob, dataset, ("b.png", png_bytes(), "image/png"))["detail"]["message"] == "dataset not found"
    assert client.post("/api/v1/jobs/estimate", json={"dataset_id": dataset, "base_model": "tiny-sd15"},
                       headers=bob).status_code == 404


def test_service_endpoints(client):
    assert client.get("/api/v1/healthz").json() == {"status": "ok"}
    assert "lorabake_jobs" in client.get("/api/v1/metrics").text
    first = client.get("/api/v1/base-models").json()[0]
    assert (first["name"], first["family"], first["resolution"]) == ("tiny-sd15", "sd15", 64)
    assert first["train_overrides"]["resolution"] == "64"  # what pro mode starts from, as basic mode does
    presets = client.get("/api/v1/presets").json()
    assert len(presets) == len(THEMES) * len(FAMILIES) and presets[0]["params"]["network_dim"] > 0
    offered = [f["name"] for f in client.get("/api/v1/families").json()]
    assert offered == [m["family"] for m in client.get("/api/v1/base-models").json()]  # only what can be trained
    crops = {f["name"]: f["crop_sizes"] for f in client.get("/api/v1/families?every=true").json()}
    assert {"768x1024", "1024x1024", "1024x768"} <= set(crops["sdxl"])  # the flow's own SDXL sizes
    assert {"512x768", "512x512", "768x512"} <= set(crops["sd15"])
    types = {t["name"]: t for t in client.get("/api/v1/network-types").json()}
    assert types["loha"]["args"] == ["algo=loha"] and types["dora"]["args"] == ["algo=locon", "dora_wd=True"]
    assert client.get("/api/v1/files/u/x.png?exp=9999999999&name=x.png&sig=bad").status_code == 403


def test_a_signed_download_resumes_with_a_range_request(client):
    storage = client.app.state.storage
    data = bytes(range(256)) * 40
    storage.put_bytes("u/1/m/epoch.safetensors", data)
    link = storage.signed_url("u/1/m/epoch.safetensors", "my lora.safetensors").split("/api/v1", 1)[-1]
    whole = client.get(f"/api/v1{link}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-disposition"] == "attachment; filename*=utf-8''my%20lora.safetensors"
    assert whole.headers["accept-ranges"] == "bytes"
    rest = client.get(f"/api/v1{link}", headers={"Range": "bytes=4000-"})
    assert rest.status_code == 206 and rest.content == data[4000:]
    assert rest.headers["content-range"] == f"bytes 4000-{len(data) - 1}/{len(data)}"
    storage.delete("u/1/m/epoch.safetensors")
    assert client.get(f"/api/v1{link}").status_code == 404
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "lorabake"


def test_pro_mode_catalog_offers_every_user_parameter_with_help_and_bounds(client):
    from api.training import CONTINUE_KEYS, SERVICE_KEYS
    from trainer.job.config import TrainConfig

    groups = client.get("/api/v1/params").json()
    params = {p["key"]: p for group in groups for p in group["params"]}
    assert set(params) == set(TrainConfig.model_fields) - SERVICE_KEYS - CONTINUE_KEYS
    assert all(p["help"] for p in params.values())
    assert params["network_dim"]["minimum"] == 1 and params["network_dim"]["default"] == 4
    assert "Prodigy" in params["optimizer_type"]["choices"]
    assert "TAGS" in params["keep_tokens"]["help"].upper()


def test_center_crop_stores_the_largest_centred_box_of_the_chosen_aspect(client, alice):
    dataset = client.post("/api/v1/datasets", json={"name": "c"}, headers=alice).json()
    files = [("files", ("wide.png", png_bytes(size=(200, 100)), "image/png")),
             ("files", ("tall.png", png_bytes(size=(100, 300)), "image/png"))]
    wide, tall = (r["id"] for r in client.post(f"/api/v1/datasets/{dataset['id']}/images", files=files,
                                               headers=alice).json())
    url = f"/api/v1/datasets/{dataset['id']}/crop"
    assert client.post(url, json={"width": 512, "height": 512}, headers=alice).json() == {"changed": 2}
    crops = {i["id"]: i["crop"] for i in client.get(f"/api/v1/datasets/{dataset['id']}/images", headers=alice).json()}
    assert crops[wide] == {"x": 50, "y": 0, "width": 100, "height": 100}
    assert crops[tall] == {"x": 0, "y": 100, "width": 100, "height": 100}
    portrait = {"width": 512, "height": 768, "image_ids": [wide]}
    assert client.post(url, json=portrait, headers=alice).json() == {"changed": 1}
    crop = client.get(f"/api/v1/datasets/{dataset['id']}/images/{wide}", headers=alice).json()["crop"]
    assert crop == {"x": 66, "y": 0, "width": 67, "height": 100}
    assert client.post(url, json={**portrait, "image_ids": ["nope"]}, headers=alice).status_code == 404


def test_a_serving_app_keeps_its_start_up_objects_out_of_full_collections(tmp_path):
    app = create_app(Settings(var_dir=tmp_path / "var"))
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        assert gc.get_freeze_count() > 10_000  # modules, routes, pools: what a full collection would scan each time
        assert client.get("/api/v1/healthz").status_code == 200
    assert gc.get_freeze_count() == 0


def test_nonsense_parameters_are_warned_about_in_the_words_of_each_mode(client, alice):
    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, *[(f"{i}.png", png_bytes(seed=i), "image/png") for i in range(3)])
    pro = {"dataset_id": dataset, "base_model": "tiny-sd15", "mode": "pro", "preset": "standard",
           "params": {"learning_rate": 5, "unet_lr": 5, "train_batch_size": 64}}
    warnings = {w["field"]: w for w in client.post("/api/v1/jobs/estimate", json=pro, headers=alice).json()["warnings"]}
    assert "5 is far above what AdamW trains a LoRA with" in warnings["learning_rate"]["message"]
    assert "64 is larger than the 30 training samples of an epoch" in warnings["train_batch_size"]["message"]  # 3 × 10
    basic = {"dataset_id": dataset, "base_model": "tiny-sd15", "preset": "standard"}  # no preview prompt
    said = {w["field"]: w for w in client.post("/api/v1/jobs/estimate", json=basic, headers=alice).json()["warnings"]}
    assert said["sample_prompts"]["plain"].startswith("No preview prompt: no previews are rendered")
    assert "_" not in said["sample_prompts"]["plain"]  # no parameter names in the basic form's words


def test_comma_tags_for_a_family_that_reads_sentences_get_caption_advice():
    from api.training import assess
    from core.models import Dataset
    from core.models import Image as ImageRow
    from core.settings import BaseModelEntry

    dataset = Dataset(name="d", default_repeats=1)
    tagged = [ImageRow(width=64, height=64, tags=["sks", "red circle", "white background", "simple"], is_reg=False,
                       repeats=None, crop=None, id=str(i)) for i in range(4)]
    sentences = [ImageRow(width=64, height=64, tags=["sks", "a red circle drawn on a plain white sheet"],
                          is_reg=False, repeats=None, crop=None, id=str(i), caption="") for i in range(4)]
    captioned = [ImageRow(width=64, height=64, tags=["sks", "red circle"], caption="sks, a red circle on white",
                          is_reg=False, repeats=None, crop=None, id=str(i)) for i in range(4)]
    for image in tagged:
        image.caption = ""
    cases = (("flux", tagged, True), ("qwen_image", tagged, True), ("flux", sentences, False),
             ("qwen_image", captioned, False), ("qwen_image", [*captioned[:2], *tagged[2:]], False),
             ("qwen_image", [*captioned[:1], *tagged[1:]], True), ("sd15", tagged, False))
    for family, images, advised in cases:
        model = BaseModelEntry(name="m", family=family, location="/nowhere", resolution=64)
        result = assess(model, "m", "basic", "standard", {}, dataset, images, ["sks"])
        advice = [w for w in result.warnings if w["field"] == "dataset_id"]
        assert bool(advice) == advised, (family, advice)
        if advised and family == "qwen_image" and images == tagged:
            assert advice[0]["message"].startswith("this dataset has tags only; Qwen-Image trains best on sentences: "
                                                   "caption it")
        elif advised and family == "qwen_image":
            assert advice[0]["message"].startswith("this dataset has tags only on 3 of its 4 images")


def test_every_refusal_has_the_one_error_shape_and_openapi_documents_it(client, alice):
    dataset = new_dataset(client, alice)
    client.cookies.clear()  # bearer headers only: a request without one is a visitor's
    answers = {
        "unauthorized": client.get("/api/v1/jobs"),
        "not_found": client.get("/api/v1/jobs/nope", headers=alice),
        "invalid": client.post("/api/v1/jobs", json={"dataset_id": dataset, "base_model": "tiny-sd15",
                                                     "preset": "standard", "params": {"network_dim": 0}},
                               headers=alice),
        "method_not_allowed": client.put("/api/v1/healthz"),
        "conflict": client.post("/api/v1/auth/register", json={"email": "alice@example.com",
                                                                "password": "correct horse battery"}),
    }
    for code, answer in answers.items():
        assert 400 <= answer.status_code < 500 and set(answer.json()) == {"detail"}, (code, answer.text)
        detail = answer.json()["detail"]
        assert set(detail) == {"message", "code", "errors"} and detail["code"] == code, detail
        assert detail["message"] and all(set(e) == {"field", "message"} for e in detail["errors"])
    assert answers["invalid"].json()["detail"]["errors"][0]["field"] == "network_dim"
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["detail"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "4XX" in operation["responses"], f"{method} {path} does not document its errors"


# fixed lists of what this server offers, not user data: they stay whole
CATALOGS = {"/base-models", "/presets", "/families", "/params", "/network-types"}


def test_lists_come_in_pages(client, alice):
    dataset = new_dataset(client, alice)
    names = [f"{i}.png" for i in range(5)]
    upload(client, alice, dataset, *[(name, png_bytes(seed=i), "image/png") for i, name in enumerate(names)])
    whole = client.get(f"/api/v1/datasets/{dataset}/images", headers=alice).json()
    assert [i["filename"] for i in whole] == names  # upload order
    pages = [client.get(f"/api/v1/datasets/{dataset}/images?limit=2&offset={offset}", headers=alice).json()
             for offset in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 1] and [i["id"] for p in pages for i in p] == [i["id"] for i in whole]
    for _ in range(3):
        new_dataset(client, alice)
    assert len(client.get("/api/v1/datasets?limit=3", headers=alice).json()) == 3
    assert len(client.get("/api/v1/datasets?limit=3&offset=3", headers=alice).json()) == 1
    too_big = client.get("/api/v1/datasets?limit=100000", headers=alice)
    assert too_big.status_code == 422 and too_big.json()["detail"]["errors"][0]["field"] == "query.limit"
    spec = client.get("/api/v1/openapi.json").json()
    listed = [path for path, operations in spec["paths"].items() if "get" in operations
              and operations["get"]["responses"].get("200", {}).get("content", {}).get("application/json", {})
              .get("schema", {}).get("type") == "array"]
    assert listed
    for path in listed:
        parameters = {p["name"] for p in spec["paths"][path]["get"].get("parameters", [])}
        assert {"limit", "offset"} <= parameters or path.removeprefix("/api/v1") in CATALOGS, path


def test_a_dataset_is_deleted_with_its_images_and_their_files(client, alice):
    from core import keys

    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, ("a.png", png_bytes(), "image/png"), ("b.png", png_bytes(seed=2), "image/png"))
    me = client.get("/api/v1/me", headers=alice).json()["id"]
    storage = client.app.state.storage
    assert storage.list_keys(keys.dataset_prefix(me, dataset))
    assert client.delete(f"/api/v1/datasets/{dataset}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/datasets/{dataset}", headers=alice).status_code == 404
    assert storage.list_keys(keys.dataset_prefix(me, dataset)) == []
    assert client.get("/api/v1/datasets", headers=alice).json() == []


def test_the_estimate_shows_a_large_models_gpu_memory_and_refuses_above_the_largest_live_training_gpu(tmp_path):
    from datetime import timedelta

    from core.db import session_factory
    from core.models import Worker, utcnow
    from core.settings import BaseModelEntry

    settings = Settings(var_dir=tmp_path / "var", base_models=[
        BaseModelEntry(name="qwen", family="qwen_image", location=str(tmp_path), resolution=1024),
        BaseModelEntry(name="sd", family="sd15", location=str(tmp_path), resolution=512)])
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        alice = register(client, "alice@example.com")
        dataset = new_dataset(client, alice)
        upload(client, alice, dataset, *[(f"{i}.png", png_bytes(seed=i), "image/png") for i in range(2)])
        body = {"dataset_id": dataset, "base_model": "qwen", "mode": "pro", "preset": "standard",
                "params": {"max_train_epochs": 1}}

        def estimate(**params) -> dict:
            return client.post("/api/v1/jobs/estimate", headers=alice,
                               json={**body, "params": {**body["params"], **params}}).json()

        plain, small = estimate(), estimate(base_weights="nf4")
        assert plain["memory"]["measured"] is False and "estimate" in plain["memory"]["summary"]
        assert plain["memory"]["total_gib"] > 48 > 24 > small["memory"]["total_gib"] > 12
        assert small["memory"]["parts"]["weights"] < plain["memory"]["parts"]["weights"] / 3
        assert not plain["errors"]  # no worker has said its GPU yet
        with session_factory(settings.db_url)() as session:
            session.add(Worker(name="gpu@host", queues=["train"], heartbeat_at=utcnow(), gpus=[
                {"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_mb": 24564, "memory_used_mb": 0}]))
            session.add(Worker(name="gone@host", queues=["train"], gpus=[{"index": 0, "memory_total_mb": 143771}],
                               heartbeat_at=utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)))
            session.commit()
        refused = {e["field"]: e for e in estimate()["errors"]}["base_weights"]
        assert "the largest GPU of this server's training workers has 24 GB" in refused["message"]
        assert not estimate(base_weights="nf4")["errors"]
        sd = client.post("/api/v1/jobs/estimate", headers=alice, json={**body, "base_model": "sd"}).json()
        assert sd["memory"]["total_gib"] < 24 and sd["errors"] == []  # SD 1.5 fits the 24 GiB card


def test_the_service_keeps_one_file_per_epoch_so_ema_is_averaged_or_raw_and_warns_of_masked_loss_without_masks(
        client, alice):
    dataset = new_dataset(client, alice)
    upload(client, alice, dataset, ("a.png", png_bytes(seed=1), "image/png"))
    body = {"dataset_id": dataset, "base_model": "tiny-sd15", "mode": "pro", "preset": "standard",
            "params": {"ema_decay": 0.999, "save_ema": "both"}}
    errors = client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()["errors"]
    assert errors == [{"field": "save_ema", "message": "the service keeps one file per epoch: choose ema or raw "
                                                       "(both is for the command line)"}]
    body["params"]["save_ema"] = "raw"
    assert client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()["errors"] == []
    body["params"].update(masked_loss=True)
    masked = client.post("/api/v1/jobs/estimate", json=body, headers=alice).json()
    assert masked["errors"] == []  # the masks come from the dataset; this one has none, and the warning says so
    assert [w for w in masked["warnings"] if w["field"] == "masked_loss"][0]["message"].startswith(
        "no training image of this dataset has a mask, so every image is trained whole")
    groups = {g["group"] for g in client.get("/api/v1/params").json()}
    assert "Weight averaging (EMA)" in groups
