"""Screening and moderation: every upload scored by the site's tagger on a real worker, the policy deciding, held
images kept from training until an admin decides, strikes that suspend, and reports of public models."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import session_factory
from core.models import JobStatus, Screening
from core.settings import Settings
from core.storage import storage_for
from tests.service.conftest import (
    LiveServer,
    WorkerProcess,
    dataset_with_images,
    production_like_env,
    public_model,
    register,
    settings_from_env,
    wait_for,
)
from tests.service.test_dataset_tasks import solid
from tests.tiny_tagger import make_tiny_tagger

# the tiny tagger scores a colour's theme tag high on a picture of that colour
RULES = [{"label": "red_theme", "above": 0.5, "action": "hold"},
         {"label": "blue_theme", "above": 0.5, "action": "refuse"},
         {"label": "green_theme", "above": 0.5, "action": "private"}]
COLOURS = {"red.png": (220, 30, 30), "blue.png": (30, 30, 220), "green.png": (40, 200, 40),
           "grey.png": (128, 128, 128)}


@pytest.fixture
def screened(tmp_path, service_urls, tiny_sd15):
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 7, LORABAKE_SCREEN_TAGGER="tiny-wd14",
                              LORABAKE_SCREEN_RULES=json.dumps(RULES), LORABAKE_STRIKES_TO_SUSPEND="2")
    make_tiny_tagger(tmp_path / "var" / "taggers" / "tiny-wd14")
    settings = settings_from_env(env)
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="cpu").start()
    try:
        with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            yield client, worker
    finally:
        worker.stop()


def test_uploads_are_screened_held_ones_wait_for_an_admin_and_strikes_suspend(screened):
    client, worker = screened
    admin = register(client, "root@example.com")
    mallory = register(client, "mallory@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "colours"}, headers=mallory).json()["id"]
    path = f"/api/v1/datasets/{dataset}/images"

    def upload(*names: str) -> None:
        colour = {name: COLOURS[name.split("-")[0].removesuffix(".png") + ".png"] for name in names}
        files = [("files", (name, solid(colour[name]), "image/png")) for name in names]
        assert all(r["id"] for r in client.post(path, headers=mallory, files=files).json())

    def screened_images() -> dict[str, dict]:
        images = {i["filename"]: i for i in client.get(path, headers=mallory).json()}
        return images if all(i["screening"] != "pending" for i in images.values()) else {}

    upload(*COLOURS)
    assert {i["screening"] for i in client.get(path, headers=mallory).json()} <= {"pending", "allowed", "held",
                                                                                  "refused", "private"}
    images = wait_for(screened_images, 60, "the uploads to be screened", describe=worker.log)
    assert {name: i["screening"] for name, i in images.items()} == {
        "red.png": "held", "blue.png": "refused", "green.png": "private", "grey.png": "allowed"}
    assert images["red.png"]["screening_reason"].startswith("held for review: it scored 1.00")
    assert "“red_theme”" in images["red.png"]["screening_reason"]
    assert images["blue.png"]["screening_reason"].startswith("refused:")

    job = {"dataset_id": dataset, "base_model": "tiny-sd15", "preset": "standard", "name": "colours"}
    estimate = client.post("/api/v1/jobs/estimate", json=job, headers=mallory).json()
    assert estimate["train_images"] == 2  # green (private: its owner may train on it) and grey
    assert any("2 image(s) are left out" in w["message"] for w in estimate["warnings"])

    queue = "/api/v1/admin/moderation/screenings"
    assert client.get(queue, headers=mallory).status_code == 404
    held = client.get(queue, headers=admin).json()
    assert [(h["name"], h["owner_email"], h["subject"]) for h in held] == [("red.png", "mallory@example.com",
                                                                            "image")]
    assert client.get(held[0]["url"]).status_code == 200  # the moderator sees the picture
    decide = f"{queue}/{held[0]['id']}"
    assert client.post(decide, headers=admin, json={"decision": "violation", "reason": "gore"}).status_code == 204
    assert client.post(decide, headers=admin, json={"decision": "allow", "reason": "oops"}).status_code == 409
    red = next(i for i in client.get(path, headers=mallory).json() if i["filename"] == "red.png")
    assert (red["screening"], red["screening_reason"]) == ("removed", "removed by a moderator: gore")

    upload("red-again.png", "red-fine.png")
    wait_for(screened_images, 60, "the second uploads to be screened", describe=worker.log)
    by_name = {h["name"]: h["id"] for h in client.get(queue, headers=admin).json()}
    assert set(by_name) == {"red-again.png", "red-fine.png"}
    assert client.post(f"{queue}/{by_name['red-fine.png']}", headers=admin,
                       json={"decision": "allow", "reason": "a red sunset"}).status_code == 204
    estimate = client.post("/api/v1/jobs/estimate", json=job, headers=mallory).json()
    assert estimate["train_images"] == 3  # the allowed one is trained on now
    client.post(f"{queue}/{by_name['red-again.png']}", headers=admin, json={"decision": "violation",
                                                                            "reason": "gore again"})
    refused = client.get("/api/v1/me", headers=mallory)  # the second strike suspended the account
    assert refused.status_code == 403
    assert "2 confirmed violations of this site's content rules" in refused.json()["detail"]["message"]
    log = client.get("/api/v1/admin/audit", headers=admin).json()
    assert [(e["action"], e["actor_email"]) for e in log[:2]] == [("user.suspend", "policy"),
                                                                 ("screening.violation", "root@example.com")]


def test_a_report_reaches_the_moderators_and_an_upheld_one_hides_the_model(tmp_path, tiny_sd15):
    settings = Settings(var_dir=tmp_path / "var")
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    with TestClient(create_app(settings)) as client:
        admin = register(client, "root@example.com")
        owner, reader = register(client, "owner@example.com"), register(client, "reader@example.com")
        path = f"/api/v1/models/{public_model(client, settings, owner)}"
        said = client.post(f"{path}/reports", headers=reader, json={"reason": "copies an artist's style"})
        assert said.status_code == 201
        assert client.post(f"{path}/reports", headers=reader, json={"reason": "again"}).status_code == 409
        assert client.post(f"{path}/reports", headers=owner, json={"reason": "mine"}).status_code == 409
        assert client.get(f"{path}/reports", headers=reader).status_code == 404
        seen = client.get(f"{path}/reports", headers=owner).json()
        assert [(r["reason"], r["state"]) for r in seen] == [("copies an artist's style", "open")]
        assert "reporter_email" not in seen[0]
        queue = client.get("/api/v1/admin/moderation/reports", headers=admin).json()
        assert [(r["model_name"], r["reporter_email"]) for r in queue] == [("shown", "reader@example.com")]
        assert client.post(f"/api/v1/admin/moderation/reports/{queue[0]['id']}", headers=admin,
                           json={"decision": "uphold", "reason": "confirmed"}).status_code == 204
        client.cookies.clear()
        assert client.get(path).status_code == 404  # hidden from visitors
        mine = client.get(path, headers=owner).json()
        assert mine["hidden_reason"] == "hidden by a moderator: confirmed"
        assert client.get(f"{path}/reports", headers=owner).json()[0]["decision"] == "confirmed"
        assert client.get("/api/v1/admin/users", headers=admin, params={"q": "owner"}).json()[0]["strikes"] == 1


def test_previews_and_test_images_are_screened_before_anyone_else_sees_them(tmp_path, tiny_sd15):
    from worker.dataset_tasks import run_dataset_task
    from worker.generation import run_generation
    from worker.screening import run_screening
    from worker.training import run_training

    make_tiny_tagger(tmp_path / "var" / "taggers" / "tiny-wd14")
    settings = Settings(var_dir=tmp_path / "var", screen_tagger="tiny-wd14",
                        screen_rules=[{"label": "^_^", "above": 0.5, "action": "hold"}])  # every picture: held
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    storage = storage_for(settings)
    with TestClient(create_app(settings)) as client:
        me = register(client, "me@example.com")
        dataset = dataset_with_images(client, me, 2)
        task = client.get(f"/api/v1/datasets/{dataset['id']}/tasks", headers=me).json()[0]
        run_dataset_task(settings, storage, task["id"])  # what the cpu worker does with the upload's task
        with session_factory(settings.db_url)() as session:
            session.query(Screening).update({"state": "allowed"})  # an admin allowed the training images
            session.commit()
        job_id = client.post("/api/v1/jobs", headers=me, json={
            "dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "standard", "name": "screened",
            "params": {"max_train_epochs": 1, "sample_every_n_epochs": 1},
            "sample_prompts": ["a picture --s 2"]}).json()["id"]
        assert run_training(settings, storage, job_id, "w") == JobStatus.succeeded
        previews = client.get(f"/api/v1/jobs/{job_id}/epochs", headers=me).json()[0]["previews"]
        assert previews
        with session_factory(settings.db_url)() as session:
            rows = session.query(Screening).filter(Screening.subject == "preview").all()
            assert len(rows) == len(previews) and {r.state for r in rows} == {"held"}
            assert all(r.name.startswith("epoch 1 preview") for r in rows)
        asked = client.post(f"/api/v1/jobs/{job_id}/epochs/1/generate", headers=me,
                            json={"prompt": "a picture", "steps": 2}).json()
        assert run_generation(settings, storage, asked["id"]) == "succeeded"  # what the light worker does
        with session_factory(settings.db_url)() as session:
            tested = session.query(Screening).filter(Screening.subject == "generation").one()
        assert (tested.subject_id, tested.state) == (asked["id"], "held")
        # a picture uploaded for the model's page is screened too, and waits for an admin like the rest
        model = client.post("/api/v1/models", headers=me, json={"job_id": job_id, "epoch": 1, "name": "screened",
                                                                "visibility": "public"}).json()
        path = f"/api/v1/models/{model['id']}"
        sent = client.post(f"{path}/showcase/upload", headers=me,
                           files=[("files", ("cover.png", solid((200, 200, 200)), "image/png"))]).json()
        assert sent[0]["id"] and client.get(path, headers=me).json()["showcase"][0]["screening"] == "pending"
        with session_factory(settings.db_url)() as session:
            pending = session.query(Screening).filter(Screening.subject == "showcase").one()
        assert run_screening(settings, storage, pending.id) == "held"  # what the cpu worker does with it
        mine = client.get(path, headers=me).json()
        assert mine["showcase"][0]["screening"] == "held" and not mine["in_gallery"]
        client.cookies.clear()
        seen = client.get(path).json()  # a visitor sees neither the picture nor the previews
        assert seen["showcase"] == [] and seen["previews"] == [] and seen["cover_url"] is None
        assert client.get("/api/v1/gallery").json() == []


def test_an_upload_left_pending_is_sent_to_be_screened_again(tmp_path, tiny_sd15):
    from core.reconcile import reconcile
    from worker.screening import run_screening

    make_tiny_tagger(tmp_path / "var" / "taggers" / "tiny-wd14")
    settings = Settings(var_dir=tmp_path / "var", screen_tagger="tiny-wd14", screen_rules=RULES, resend_after_s=0,
                        reconcile_in_api=False, tag_on_upload=False)
    with TestClient(create_app(settings)) as client:  # no worker: the screening task is never taken
        me = register(client, "me@example.com")
        dataset = client.post("/api/v1/datasets", json={"name": "d"}, headers=me).json()["id"]
        client.post(f"/api/v1/datasets/{dataset}/images", headers=me,
                    files=[("files", ("red.png", solid(COLOURS["red.png"]), "image/png"))])
        sent: list[str] = []
        repairs = reconcile(settings, lambda job_id: True, send_screening=lambda s: sent.append(s) or True)
        assert repairs.rescreened == sent and len(sent) == 1
        assert run_screening(settings, storage_for(settings), sent[0]) == "held"
        image = client.get(f"/api/v1/datasets/{dataset}/images", headers=me).json()[0]
        assert image["screening"] == "held"
        assert reconcile(settings, lambda job_id: True, send_screening=sent.append).rescreened == []  # done
