"""The whole service over HTTP: real PostgreSQL, Redis, an S3 server and a Celery worker process."""

from __future__ import annotations

import hashlib
import io
import json
import threading

import httpx
import pytest
from PIL import Image as PILImage

from tests.service.conftest import (
    LiveServer,
    WorkerProcess,
    png_bytes,
    production_like_env,
    register,
    s3_env,
    settings_from_env,
    wait_for,
)


@pytest.fixture
def stack(tmp_path, service_urls, s3_endpoint, tiny_sd15):
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 5, LORABAKE_HEARTBEAT_S="1", **s3_env(s3_endpoint))
    settings = settings_from_env(env)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, worker
    worker.stop()


def follow_events(client: httpx.Client, path: str, headers: dict[str, str], into: list[tuple[str, dict]]) -> None:
    with httpx.Client(base_url=client.base_url, timeout=300) as own, own.stream("GET", path, headers=headers) as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.append((name, json.loads(line.removeprefix("data: "))))


def test_register_upload_train_publish_and_isolation(stack):
    client, worker = stack
    alice = register(client, "alice@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "shapes", "default_repeats": 2}, headers=alice).json()
    images = [("files", (f"img{i}.png" if i % 2 else f"img{i}.jpg", png_bytes(seed=i, fmt="PNG" if i % 2 else "JPEG"),
                         "image/png")) for i in range(12)]
    bad = [("files", ("notes.png", b"this is text, not an image", "image/png")),
           ("files", ("tiny.png", png_bytes(size=(16, 16)), "image/png")),
           ("files", ("cut.jpg", png_bytes(fmt="JPEG")[:300], "image/jpeg"))]
    results = client.post(f"/api/v1/datasets/{dataset['id']}/images", files=images[:6] + bad + images[6:],
                          headers=alice).json()
    accepted = [r for r in results if r["id"]]
    rejected = {r["filename"]: r["error"] for r in results if r["error"]}
    assert len(accepted) == 12
    assert "not a PNG or JPEG" in rejected["notes.png"]
    assert "at least 64 pixels" in rejected["tiny.png"]
    assert "damaged" in rejected["cut.jpg"]

    batch = {"action": "add", "tags": ["sks"], "position": "start"}
    tagged = client.post(f"/api/v1/datasets/{dataset['id']}/tags/batch", json=batch, headers=alice).json()
    assert tagged["changed"] == 12
    client.patch(f"/api/v1/datasets/{dataset['id']}/images/{accepted[0]['id']}", json={"tags": ["sks", "red circle"]},
                 headers=alice)
    assert client.get(f"/api/v1/datasets/{dataset['id']}/tags", headers=alice).json()[0] == {"tag": "sks", "count": 12}

    request = {"dataset_id": dataset["id"], "base_model": "tiny-sd15", "name": "shapes", "mode": "basic",
               "preset": "standard", "params": {"max_train_epochs": 2, "sample_every_n_epochs": 1,
                                                 "validation_split": 0.25},
               "sample_prompts": ["sks, red circle --s 4 --d 1"]}
    estimate = client.post("/api/v1/jobs/estimate", json=request, headers=alice).json()
    assert estimate["errors"] == [] and estimate["total_steps"] == estimate["steps_per_epoch"] * 2
    assert estimate["train_images"] == 12 - 3  # a quarter held out for the validation loss
    job = client.post("/api/v1/jobs", json=request, headers=alice)
    assert job.status_code == 201, job.text
    job = job.json()
    assert job["status"] == "queued" and job["total_steps"] == estimate["total_steps"]
    # nothing finished on this server yet: no time is invented
    assert estimate["estimated_seconds"] is None and job["estimated_s"] is None and job["eta_s"] is None
    assert job["queue_position"] == 1 and job["network_type"] == "lora"
    live: list[tuple[str, dict]] = []
    listener = threading.Thread(target=follow_events, args=(client, f"/api/v1/jobs/{job['id']}/events", alice, live))
    listener.start()

    def finished():
        state = client.get(f"/api/v1/jobs/{job['id']}", headers=alice).json()
        return state if state["status"] in ("succeeded", "failed", "canceled") else None

    final = wait_for(finished, 240, "the job to finish", describe=worker.log)
    assert final["status"] == "succeeded", (final["error"], worker.log())
    # alice, the install's first account, runs it: the console shows the worker that trained her job
    console = client.get("/api/v1/admin/workers", headers=alice).json()
    assert [sorted(w["queues"]) for w in console["workers"]] == [["cpu", "gpu-light", "train"]]
    assert console["workers"][0]["gpus"] == [] and console["workers"][0]["heartbeat_age_s"] < 30
    assert set(console["queues"]) == {"train", "gpu-light", "cpu"} and console["jobs_running"] == 0
    assert final["progress"] == 1.0 and final["step"] == estimate["total_steps"]
    assert final["history"][-1][0] == estimate["total_steps"] and len(final["history"]) >= 2

    epochs = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=alice).json()
    assert [e["n"] for e in epochs] == [1, 2]
    scores = [e["validation_loss"] for e in epochs]
    assert all(v > 0 for v in scores) and scores[0] != scores[1]
    assert any("validation loss" in line and "3 held-out image(s)" in line for line in final["log_tail"])
    assert all(len(e["previews"]) == 4 for e in epochs)
    preview = httpx.get(epochs[0]["previews"][0])
    assert preview.status_code == 200 and preview.content[:8] == b"\x89PNG\r\n\x1a\n"
    download = client.get(f"/api/v1/jobs/{job['id']}/epochs/2/download", headers=alice, follow_redirects=True)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == epochs[1]["sha256"]
    assert len(download.content) == epochs[1]["size"]

    listener.join(timeout=30)
    assert not listener.is_alive(), "the event stream did not end with the job"
    # Redis notices push every change: many progress events, where a stream left to its 15 s keep-alive gets one or two
    steps = [data["step"] for name, data in live if name == "progress"]
    assert len(set(steps)) >= 3 and steps == sorted(steps) and steps[-1] == estimate["total_steps"], live
    assert {(data["n"], data["previews"]) for name, data in live if name == "epoch"} >= {(1, 4), (2, 4)}
    statuses = [data["status"] for name, data in live if name == "status"]
    assert statuses[-1] == "succeeded" and "running" in statuses, statuses
    assert any("epoch 2 stored" in line for name, data in live if name == "log" for line in data["lines"])

    generation = client.post(f"/api/v1/jobs/{job['id']}/epochs/2/generate",
                             json={"prompt": "sks, red circle <lora:shapes:0.8>", "steps": 3, "seed": 7},
                             headers=alice)
    assert generation.status_code == 202, generation.text
    done = wait_for(lambda: (g := client.get(f"/api/v1/generations/{generation.json()['id']}", headers=alice)
                             .json())["status"] in ("succeeded", "failed") and g, 120, "the generation",
                    describe=worker.log)
    assert done["status"] == "succeeded", done["error"]
    assert httpx.get(done["images"][0]).content[:4] == b"\x89PNG"
    assert any(n.startswith("LoRA weight from the prompt's tag: shapes 0.8") for n in done["notes"]), done["notes"]

    # The epoch as a plain LoRA of rank 2, made by the light worker, with what the rank leaves out
    asked = client.post(f"/api/v1/jobs/{job['id']}/epochs/2/plain-lora", json={"rank": 2}, headers=alice)
    assert asked.status_code == 202, asked.text
    plain = wait_for(lambda: (c := client.get(f"/api/v1/plain-loras/{asked.json()['id']}", headers=alice)
                              .json())["status"] in ("succeeded", "failed") and c, 120, "the plain LoRA",
                     describe=worker.log)
    assert plain["status"] == "succeeded", plain["error"]
    assert plain["report"]["rank"] == 2 and 0 <= plain["report"]["relative_error"] < 1
    blob = httpx.get(plain["download_url"]).content
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert header["__metadata__"]["ss_network_dim"] == "2" and any(k.endswith("lora_up.weight") for k in header)
    assert client.post(f"/api/v1/jobs/{job['id']}/epochs/9/plain-lora", json={"rank": 2},
                       headers=alice).status_code == 404
    assert client.post(f"/api/v1/jobs/{job['id']}/epochs/2/plain-lora", json={"rank": 0},
                       headers=alice).status_code == 422

    # An epoch × weight sweep: one task renders every cell, with progress, then one labelled PNG of them all
    started = client.post(f"/api/v1/jobs/{job['id']}/sweeps", headers=alice,
                          json={"weights": [0.5, 1.0], "steps": 3, "seed": 7,
                                "prompt": "sks <lora:shapes:0.3> --n blurry --s 40"})
    assert started.status_code == 202, started.text
    sweep = started.json()
    assert (sweep["epochs"], sweep["weights"], sweep["total"], sweep["prompt"]) == ([1, 2], [0.5, 1.0], 5, "sks")
    assert sweep["negative"] == "blurry" and sweep["steps"] == 3  # the line's --n is read, not its --s
    seen: list[int] = []

    def sweep_done():
        state = client.get(f"/api/v1/sweeps/{sweep['id']}", headers=alice).json()
        seen.append(state["done"])
        return state if state["status"] in ("succeeded", "failed") else None

    sweep = wait_for(sweep_done, 180, "the sweep", describe=worker.log)
    assert sweep["status"] == "succeeded", sweep["error"]
    assert sweep["done"] == 5 and seen == sorted(seen)
    cells = [[httpx.get(url).content for url in row] for row in sweep["cells"]]
    assert [len(row) for row in cells] == [3, 3] and cells[0][0] == cells[1][0]  # one "no LoRA" image per row
    assert cells[1][2] != cells[1][0]  # the LoRA at weight 1 changes the image
    grid = PILImage.open(io.BytesIO(httpx.get(sweep["grid_url"]).content))
    assert grid.size == (96 + 3 * (64 + 4), 28 + 2 * (64 + 4))  # labels, then 3 columns × 2 rows of 64 px cells
    assert [s["id"] for s in client.get(f"/api/v1/jobs/{job['id']}/sweeps", headers=alice).json()] == [sweep["id"]]
    missing = client.post(f"/api/v1/jobs/{job['id']}/sweeps", headers=alice, json={"epochs": [2, 9]})
    assert missing.status_code == 422 and "epoch(s) 9 are not stored" in missing.json()["detail"]["message"]

    # Continue for one more epoch from the stored state, as the job's next attempt; its epochs keep numbering
    more = client.post(f"/api/v1/jobs/{job['id']}/continue", json={"epochs": 1, "schedule": "restart"}, headers=alice)
    assert more.status_code == 200, more.text
    assert more.json()["status"] == "queued" and more.json()["total_steps"] == estimate["total_steps"] * 3 // 2
    again = wait_for(finished, 240, "the continued job to finish", describe=worker.log)
    assert again["status"] == "succeeded", (again["error"], worker.log())
    assert again["params"]["max_train_epochs"] == 3 and again["params"]["lr_restart_step"] == estimate["total_steps"]
    assert any(line.startswith("resumed at epoch 3, batch 0, step") for line in again["log_tail"]), again["log_tail"]
    assert [e["n"] for e in client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=alice).json()] == [1, 2, 3]
    assert again["history"][-1][0] == again["total_steps"]
    twice = client.post(f"/api/v1/jobs/{job['id']}/continue", json={"epochs": 0}, headers=alice)
    assert twice.status_code == 422
    retrained = client.post(f"/api/v1/jobs/{job['id']}/retrain", json={"start_after": "tonight"}, headers=alice)
    assert retrained.status_code == 201 and "lr_restart_step" not in retrained.json()["params"]  # continue's only
    client.post(f"/api/v1/jobs/{retrained.json()['id']}/cancel", headers=alice)

    published = client.post("/api/v1/models", json={"job_id": job["id"], "epoch": 2, "name": "shapes",
                                                    "trigger_words": ["sks"], "visibility": "private"}, headers=alice)
    assert published.status_code == 201, published.text
    model = published.json()
    assert model["snippet"] == "<lora:shapes:0.8>" and len(model["previews"]) == 4
    epoch_2 = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=alice).json()[1]
    assert (model["owner"], model["base_model"], model["family"], model["network_type"], model["size"]) == \
        ("alice", "tiny-sd15", "SD 1.5", "LoRA", epoch_2["size"])
    twice = client.post("/api/v1/models", json={"job_id": job["id"], "epoch": 2, "name": "shapes_again"},
                        headers=alice)
    assert twice.status_code == 409 and "already published as shapes" in twice.json()["detail"]["message"]
    # every caption starts with the trigger word the batch edit put there
    suggested = client.get(f"/api/v1/datasets/{dataset['id']}/trigger-words", headers=alice).json()
    assert suggested == {"trigger_words": ["sks"]}

    bob = register(client, "bob@example.com")
    for path in (f"/api/v1/datasets/{dataset['id']}", f"/api/v1/datasets/{dataset['id']}/images",
                 f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/epochs",
                 f"/api/v1/jobs/{job['id']}/epochs/1/download", f"/api/v1/models/{model['id']}",
                 f"/api/v1/sweeps/{sweep['id']}", f"/api/v1/jobs/{job['id']}/sweeps",
                 f"/api/v1/plain-loras/{plain['id']}"):
        assert client.get(path, headers=bob).status_code == 404, path
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bob).status_code == 404
    assert client.post(f"/api/v1/jobs/{job['id']}/continue", json={}, headers=bob).status_code == 404
    assert [m["id"] for m in client.get("/api/v1/models", headers=bob).json()] == []

    # Rename and make public, unpublish, then delete the job with everything it stored
    assert client.patch(f"/api/v1/models/{model['id']}", json={"name": "x"}, headers=bob).status_code == 404
    renamed = client.patch(f"/api/v1/models/{model['id']}", json={"name": "shapes_v2", "visibility": "public"},
                           headers=alice)
    assert renamed.status_code == 200 and renamed.json()["snippet"] == "<lora:shapes_v2:0.8>"
    assert client.get("/api/v1/models", headers=bob).json() == []  # bob's own models
    gallery = client.base_url.join("/api/v1/gallery")
    assert httpx.get(gallery).json() == []  # public, but nothing to show yet
    picks = client.get(f"/api/v1/models/{model['id']}/showcase/candidates", headers=alice).json()
    assert {p["source"] for p in picks} == {"preview", "generation"}  # its previews and alice's test image
    page = client.post(f"/api/v1/models/{model['id']}/showcase", json={"keys": [picks[0]["key"]]},
                       headers=alice).json()
    assert page["in_gallery"] and page["cover_url"] and len(page["showcase"]) == 1
    cards = httpx.get(gallery, params={"family": "sd15", "q": "SHAPES"}).json()  # a visitor browses and finds it
    assert [(c["name"], c["owner"], c["family"]) for c in cards] == [("shapes_v2", "alice", "SD 1.5")]
    assert httpx.get(cards[0]["cover_url"]).content[:4] == b"\x89PNG"
    visitor = httpx.get(client.base_url.join(f"/api/v1/models/{model['id']}"))  # no session: a shared link
    assert visitor.status_code == 200 and visitor.json()["owner"] == "alice"
    # bob tries alice's model (made for him by the worker) and downloads it, which counts
    trial = client.post(f"/api/v1/models/{model['id']}/test", json={"prompt": "sks, red circle", "steps": 3},
                        headers=bob)
    assert trial.status_code == 202, trial.text
    tried = wait_for(lambda: (g := client.get(f"/api/v1/generations/{trial.json()['id']}", headers=bob)
                              .json())["status"] in ("succeeded", "failed") and g, 120, "bob's test",
                     describe=worker.log)
    assert tried["status"] == "succeeded" and httpx.get(tried["images"][0]).content[:4] == b"\x89PNG"
    got = client.get(f"/api/v1/models/{model['id']}/download", headers=bob, follow_redirects=True)
    assert hashlib.sha256(got.content).hexdigest() == epoch_2["sha256"]
    assert httpx.get(client.base_url.join(f"/api/v1/models/{model['id']}")).json()["downloads"] == 1
    blocked = client.delete(f"/api/v1/jobs/{job['id']}", headers=alice)
    assert blocked.status_code == 409 and "unpublish" in blocked.json()["detail"]["message"]
    assert client.delete(f"/api/v1/models/{model['id']}", headers=alice).status_code == 204
    assert httpx.get(gallery).json() == []
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=bob).status_code == 404
    epoch_file = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=alice).json()[0]["download_url"]
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=alice).status_code == 404
    assert httpx.get(epoch_file).status_code in (403, 404)  # its files are gone from storage
    assert httpx.get(plain["download_url"]).status_code in (403, 404)
    assert client.get(f"/api/v1/sweeps/{sweep['id']}", headers=alice).status_code == 404
