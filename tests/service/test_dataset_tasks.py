"""Auto-tagging and focus crops through the API, run by a real Celery worker on the cpu queue."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import (
    LiveServer,
    WorkerProcess,
    production_like_env,
    register,
    settings_from_env,
    wait_for,
)
from tests.test_dataset_tools import contains, scene
from tests.tiny_tagger import make_tiny_tagger


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (96, 96)) -> bytes:
    from PIL import Image

    return png(Image.new("RGB", size, color))


def test_without_a_tagger_the_api_says_so_plainly(tmp_path):
    with TestClient(create_app(Settings(var_dir=tmp_path / "var"))) as client:
        alice = register(client, "alice@example.com")
        listed = client.get("/api/v1/taggers", headers=alice).json()
        assert listed["taggers"] == [] and listed["on_upload"] is False
        assert listed["message"].startswith("Automatic tagging is not available on this server yet")
        assert "model.onnx" not in listed["message"]  # words for users; the operator's are in `setup`
        assert "no auto-tagger is installed" in listed["setup"]
        dataset = client.post("/api/v1/datasets", json={"name": "d"}, headers=alice).json()["id"]
        uploaded = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                               files=[("files", ("a.png", solid((1, 2, 3)), "image/png"))])
        assert uploaded.status_code == 200
        assert client.get(f"/api/v1/datasets/{dataset}/tasks", headers=alice).json() == []  # nothing to tag with
        refused = client.post(f"/api/v1/datasets/{dataset}/autotag", json={}, headers=alice)
        assert refused.status_code == 409 and "model.onnx and selected_tags.csv" in refused.json()["detail"]["message"]
        named = client.post(f"/api/v1/datasets/{dataset}/autotag", json={"tagger": "wd-vit"}, headers=alice)
        assert named.status_code == 409 and "'wd-vit' is not on this server" in named.json()["detail"]["message"]
        bad = client.post(f"/api/v1/datasets/{dataset}/autotag", json={"general_threshold": 2}, headers=alice)
        assert bad.status_code == 422 and bad.json()["detail"]["errors"][0]["field"] == "general_threshold"


@pytest.fixture(params=["false"])
def stack(request, tmp_path, service_urls, tiny_sd15):
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 6, LORABAKE_TAG_ON_UPLOAD=request.param)
    make_tiny_tagger(tmp_path / "var" / "taggers" / "tiny-wd14")
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="cpu").start()
    with LiveServer(settings_from_env(env)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, worker
    worker.stop()


def finished(client, headers, task: dict, worker) -> dict:
    return wait_for(lambda: (t := client.get(f"/api/v1/tasks/{task['id']}", headers=headers).json())["status"]
                    in ("succeeded", "failed") and t, 90, f"task {task['kind']}", describe=worker.log)


def test_autotag_and_focus_crop_run_on_the_cpu_queue_with_progress(stack):
    client, worker = stack
    alice = register(client, "alice@example.com")
    assert client.get("/api/v1/taggers", headers=alice).json() == {
        "taggers": [{"name": "tiny-wd14", "source": "folder", "installed": True}], "message": None, "setup": None,
        "on_upload": False}
    dataset = client.post("/api/v1/datasets", json={"name": "colours"}, headers=alice).json()["id"]
    files = {"red.png": solid((220, 30, 30)), "green.png": solid((40, 200, 40)), "blue.png": solid((30, 30, 220)),
             "subject.png": png(scene((600, 400), (80, 200)))}
    uploaded = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                           files=[("files", (n, d, "image/png")) for n, d in files.items()]).json()
    ids = {u["filename"]: u["id"] for u in uploaded}
    client.patch(f"/api/v1/datasets/{dataset}/images/{ids['red.png']}", json={"tags": ["mytrigger"]}, headers=alice)

    task = client.post(f"/api/v1/datasets/{dataset}/autotag", headers=alice,
                       json={"blacklist": ["simple background"], "image_ids": [ids["red.png"], ids["green.png"]]})
    assert task.status_code == 202 and task.json()["status"] == "queued"
    done = finished(client, alice, task.json(), worker)
    assert done["status"] == "succeeded" and done["done"] == done["total"] == 2, done
    assert done["result"] == {"tagged": 2, "tags_added": 5}

    def tags_of(name: str) -> list[str]:
        return client.get(f"/api/v1/datasets/{dataset}/images/{ids[name]}", headers=alice).json()["tags"]

    assert tags_of("red.png") == ["mytrigger", "red theme", "^_^"]
    assert tags_of("green.png") == ["hatsune miku", "green theme", "^_^"]
    assert tags_of("blue.png") == []

    skip = client.post(f"/api/v1/datasets/{dataset}/autotag", json={"mode": "skip_tagged"}, headers=alice).json()
    assert finished(client, alice, skip, worker)["result"] == {"skipped": 2, "tagged": 2, "tags_added": 6}
    assert tags_of("red.png") == ["mytrigger", "red theme", "^_^"]
    assert tags_of("blue.png") == ["blue theme", "^_^", "simple background"]
    overwrite = client.post(f"/api/v1/datasets/{dataset}/autotag", headers=alice,
                            json={"mode": "overwrite", "include_ratings": True, "image_ids": [ids["red.png"]]}).json()
    finished(client, alice, overwrite, worker)
    assert tags_of("red.png") == ["red theme", "^_^", "simple background", "general"]

    crop = client.post(f"/api/v1/datasets/{dataset}/crop", headers=alice,
                       json={"mode": "focus", "width": 512, "height": 512, "image_ids": [ids["subject.png"]]})
    assert crop.status_code == 202
    assert finished(client, alice, crop.json(), worker)["result"] == {"saliency": 1}
    box = client.get(f"/api/v1/datasets/{dataset}/images/{ids['subject.png']}", headers=alice).json()["crop"]
    assert box["width"] == box["height"] == 400 and contains(box, (80, 200))
    listed = client.get(f"/api/v1/datasets/{dataset}/tasks", headers=alice).json()
    assert [t["kind"] for t in listed] == ["focus_crop", "autotag", "autotag", "autotag"]
    bob = register(client, "bob@example.com")
    assert client.get(f"/api/v1/tasks/{task.json()['id']}", headers=bob).status_code == 404


@pytest.mark.parametrize("stack", ["true"], indirect=True)
def test_uploaded_images_are_tagged_as_they_arrive_and_tags_that_came_with_them_are_kept(stack):
    client, worker = stack
    alice = register(client, "uploader@example.com")
    assert client.get("/api/v1/taggers", headers=alice).json()["on_upload"] is True
    dataset = client.post("/api/v1/datasets", json={"name": "arrivals"}, headers=alice).json()["id"]
    first = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                        files=[("files", ("red.png", solid((220, 30, 30)), "image/png"))]).json()
    (task,) = client.get(f"/api/v1/datasets/{dataset}/tasks", headers=alice).json()
    assert task["kind"] == "autotag" and task["on_upload"] is True
    assert finished(client, alice, task, worker)["result"] == {"tagged": 1, "tags_added": 3}
    red = client.get(f"/api/v1/datasets/{dataset}/images/{first[0]['id']}", headers=alice).json()
    assert red["tags"] == ["red theme", "^_^", "simple background"]

    # a second upload tags only what it brought; the image tagged by hand meanwhile keeps its tags
    client.patch(f"/api/v1/datasets/{dataset}/images/{first[0]['id']}", json={"tags": ["mine"]}, headers=alice)
    client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                files=[("files", ("blue.png", solid((30, 30, 220)), "image/png")),
                       ("files", ("broken.png", b"not an image", "image/png"))])
    newest = client.get(f"/api/v1/datasets/{dataset}/tasks", headers=alice).json()[0]
    assert finished(client, alice, newest, worker)["result"] == {"tagged": 1, "tags_added": 3}
    assert client.get(f"/api/v1/datasets/{dataset}/images/{first[0]['id']}", headers=alice).json()["tags"] == ["mine"]


@pytest.fixture
def caption_stack(tmp_path, service_urls, tiny_sd15):
    from tests.tiny_captioners import make_tiny_florence2, make_tiny_qwen_vl

    env = production_like_env(tmp_path, service_urls, tiny_sd15, 6, LORABAKE_TAG_ON_UPLOAD="false",
                              LORABAKE_CAPTIONERS_FROM_HUB="[]")
    make_tiny_qwen_vl(tmp_path / "var" / "captioners" / "tiny-qwen-vl")
    make_tiny_florence2(tmp_path / "var" / "captioners" / "tiny-florence")
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="cpu").start()
    with LiveServer(settings_from_env(env)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, worker
    worker.stop()


def test_captioning_writes_a_sentence_per_image_keeps_hand_edits_and_batch_edits_captions(caption_stack):
    client, worker = caption_stack
    alice = register(client, "writer@example.com")
    listed = client.get("/api/v1/captioners", headers=alice).json()
    assert [(c["name"], c["architecture"]) for c in listed["captioners"]] == [
        ("tiny-florence", "florence2"), ("tiny-qwen-vl", "qwen2_5_vl")] and listed["setup"] is None
    dataset = client.post("/api/v1/datasets", json={"name": "prose"}, headers=alice).json()["id"]
    colours = {"red.png": (220, 30, 30), "green.png": (40, 200, 40), "blue.png": (30, 30, 220)}
    uploaded = client.post(f"/api/v1/datasets/{dataset}/images", headers=alice,
                           files=[("files", (n, solid(c), "image/png")) for n, c in colours.items()]).json()
    ids = {u["filename"]: u["id"] for u in uploaded}
    mine = "a red square, drawn by me"
    client.patch(f"/api/v1/datasets/{dataset}/images/{ids['red.png']}", json={"caption": mine, "tags": ["red"]},
                 headers=alice)

    def image(name: str) -> dict:
        return client.get(f"/api/v1/datasets/{dataset}/images/{ids[name]}", headers=alice).json()

    assert [image(n)["text_kind"] for n in colours] == ["both", "none", "none"]
    task = client.post(f"/api/v1/datasets/{dataset}/caption", headers=alice,
                       json={"captioner": "tiny-qwen-vl", "length": "short", "trigger": "sks", "tag_hints": True})
    assert task.status_code == 202 and task.json()["kind"] == "caption"
    done = finished(client, alice, task.json(), worker)
    assert done["status"] == "succeeded" and done["done"] == done["total"] == 3, done
    assert done["result"] == {"captioned": 2, "skipped": 1}
    assert image("red.png")["caption"] == mine  # the hand edit is kept
    for name in ("green.png", "blue.png"):
        written = image(name)
        assert written["caption"].startswith("sks, ") and written["text_kind"] == "sentence"

    replaced = client.post(f"/api/v1/datasets/{dataset}/captions/batch", headers=alice,
                           json={"action": "replace", "find": "drawn by me", "replace_with": "on white"}).json()
    assert replaced == {"matched": 3, "changed": 1} and image("red.png")["caption"] == "a red square, on white"
    prefixed = client.post(f"/api/v1/datasets/{dataset}/captions/batch", headers=alice,
                           json={"action": "prefix", "prefix": "sks"}).json()
    assert prefixed == {"matched": 3, "changed": 1} and image("red.png")["caption"] == "sks, a red square, on white"
    refused = client.post(f"/api/v1/datasets/{dataset}/captions/batch", headers=alice, json={"action": "replace"})
    assert refused.status_code == 422 and "replace needs the text to find" in refused.text

    overwrite = client.post(f"/api/v1/datasets/{dataset}/caption", headers=alice,
                            json={"mode": "overwrite", "trigger_position": "end", "trigger": "sks",
                                  "image_ids": [ids["red.png"]]}).json()  # the first installed: Florence-2
    assert finished(client, alice, overwrite, worker)["result"] == {"captioned": 1}
    assert image("red.png")["caption"].endswith(", sks") and image("red.png")["caption"] != mine
    missing = client.post(f"/api/v1/datasets/{dataset}/caption", headers=alice, json={"captioner": "blip"})
    assert missing.status_code == 409 and "'blip' is not on this server" in missing.json()["detail"]["message"]
