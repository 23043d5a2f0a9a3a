"""Sign-in and sign-up throttles, the cap on password hashing, the metrics token, unambiguous model names and
keep-alives on quiet event streams."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import api.live
from api.main import create_app
from api.throttle import Throttle
from core.db import session_factory
from core.models import Dataset, Epoch, Job, JobStatus, PublishedModel, User
from core.settings import Settings
from tests.service.conftest import LiveServer, register

PASSWORD = "correct horse battery"


def _app(tmp_path, **values) -> TestClient:
    return TestClient(create_app(Settings(var_dir=tmp_path / "var", reconcile_in_api=False, **values)))


def _login(client: TestClient, email: str, password: str) -> int:
    return client.post("/api/v1/auth/login", data={"username": email, "password": password}).status_code


def test_wrong_passwords_lock_one_account_for_a_while_not_others(tmp_path):
    with _app(tmp_path, login_failures_per_account=3) as client:
        register(client, "target@example.com")
        register(client, "bystander@example.com")
        assert [_login(client, "target@example.com", "wrong password") for _ in range(3)] == [401] * 3
        locked = client.post("/api/v1/auth/login", data={"username": "target@example.com", "password": PASSWORD})
        assert locked.status_code == 429 and "wrong passwords for this account" in locked.json()["detail"]
        assert int(locked.headers["retry-after"]) > 0
        assert _login(client, "bystander@example.com", PASSWORD) == 200


def test_a_correct_password_clears_the_account_count(tmp_path):
    with _app(tmp_path, login_failures_per_account=3) as client:
        register(client, "me@example.com")
        for _ in range(5):
            assert _login(client, "me@example.com", "wrong password") == 401
            assert _login(client, "me@example.com", PASSWORD) == 200


def test_one_address_gets_a_bounded_number_of_sign_ins_and_sign_ups(tmp_path):
    with _app(tmp_path, logins_per_address=4, signups_per_address=2) as client:
        register(client, "a@example.com")
        register(client, "b@example.com")
        third = client.post("/api/v1/auth/register", json={"email": "c@example.com", "password": PASSWORD})
        assert third.status_code == 429 and "new accounts from your address" in third.json()["detail"]
        # register() signed in once each: two of the four sign-ins are used
        assert [_login(client, f"{c}@example.com", PASSWORD) for c in "abab"] == [200, 200, 429, 429]


def test_password_hashing_is_capped_so_a_flood_waits_or_is_turned_away():
    throttle = Throttle(None, hash_slots=2, hash_wait_s=0.3)
    holding, release = threading.Barrier(3), threading.Event()

    def hold() -> None:
        with throttle.hashing_slot():
            holding.wait()
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    holding.wait()
    started = time.monotonic()
    with pytest.raises(Exception) as refused, throttle.hashing_slot():
        pass
    assert refused.value.status_code == 503 and time.monotonic() - started >= 0.3
    release.set()
    for thread in threads:
        thread.join()
    with throttle.hashing_slot():
        pass  # a slot is free again


def test_metrics_can_be_kept_for_the_holder_of_the_metrics_token(tmp_path):
    with _app(tmp_path, metrics_token="s3cret-metrics") as client:
        assert client.get("/api/v1/metrics").status_code == 401
        assert client.get("/api/v1/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        shown = client.get("/api/v1/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
        assert shown.status_code == 200 and "lorabake_jobs" in shown.text


def _finished_job(settings: Settings, owner_email: str) -> tuple[str, str]:
    with session_factory(settings.db_url)() as session:
        owner = session.query(User).filter_by(email=owner_email).one()
        dataset = Dataset(owner_id=owner.id, name="d")
        session.add(dataset)
        session.flush()
        job = Job(owner_id=owner.id, dataset_id=dataset.id, name="lora", base_model="tiny-sd15",
                  status=JobStatus.succeeded)
        session.add(job)
        session.flush()
        session.add(Epoch(job_id=job.id, n=1, file_key="u/x/e.safetensors", size=1, sha256="0", previews=[]))
        session.commit()
        return job.id, owner.id


def test_model_names_are_unique_per_owner_and_among_public_models(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", reconcile_in_api=False)
    with TestClient(create_app(settings)) as client:
        alice, bob = register(client, "alice@example.com"), register(client, "bob@example.com")
        alice_job, _ = _finished_job(settings, "alice@example.com")
        bob_job, _ = _finished_job(settings, "bob@example.com")
        body = {"job_id": alice_job, "epoch": 1, "name": "shared", "visibility": "public"}
        assert client.post("/api/v1/models", json=body, headers=alice).status_code == 201
        again = client.post("/api/v1/models", json={**body, "visibility": "private"}, headers=alice)
        assert again.status_code == 409 and "epoch 1 of this job is already published as shared" in \
            again.json()["detail"]
        other_job, _ = _finished_job(settings, "alice@example.com")
        same_name = client.post("/api/v1/models", json={**body, "job_id": other_job}, headers=alice)
        assert same_name.status_code == 409 and "already published a model called shared" in same_name.json()["detail"]
        clash = client.post("/api/v1/models", json={**body, "job_id": bob_job}, headers=bob)
        assert clash.status_code == 409 and "ambiguous" in clash.json()["detail"]
        private = client.post("/api/v1/models", json={**body, "job_id": bob_job, "visibility": "private"},
                              headers=bob)
        assert private.status_code == 201  # his own, private: nobody else sees the name
        with session_factory(settings.db_url)() as session:
            assert session.query(PublishedModel).count() == 2


def test_a_quiet_event_stream_gets_keep_alives_without_redis(tmp_path, monkeypatch):
    monkeypatch.setattr(api.live, "KEEPALIVE_S", 0.5)
    settings = Settings(var_dir=tmp_path / "var", reconcile_in_api=False)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        me = register(client, "quiet@example.com")
        job_id, _ = _finished_job(settings, "quiet@example.com")
        with session_factory(settings.db_url)() as session:  # waiting for tonight: nothing changes for hours
            session.get(Job, job_id).status = JobStatus.scheduled
            session.commit()
        lines: list[str] = []
        with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=me) as stream:
            for line in stream.iter_lines():
                lines.append(line)
                if line.startswith(": keep-alive"):
                    break
        assert ": keep-alive" in lines
