"""`make run`'s stack with no servers: SQLite, the SQLAlchemy Celery transport, local storage, one worker."""

from __future__ import annotations

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
