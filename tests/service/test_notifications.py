"""Telling users a job ended: their webhook (signed, retried, announced once) with a real Celery worker, and the
per-user limits on jobs training and waiting."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import session_factory
from core.jobs import claim_next
from core.models import JobStatus
from core.settings import Settings
from core.webhooks import RefusedTarget, check_target, sign
from tests.service.conftest import (
    LiveServer,
    WorkerProcess,
    dataset_with_images,
    production_like_env,
    register,
    settings_from_env,
    start_job,
    wait_for,
)


class Receiver:
    """A webhook receiver on a real port: records every request; answers 503 to the first `fail_first` job events."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.failures_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                failing = receiver.failures_left > 0 and self.headers["X-Lorabake-Event"].startswith("job.")
                receiver.failures_left -= failing
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def job_events(self) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for headers, body in self.requests if headers["X-Lorabake-Event"].startswith("job.")]

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def test_an_ended_job_is_posted_signed_to_the_webhook_retried_until_taken_and_announced_once(
        tmp_path, service_urls, tiny_sd15):
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 7, LORABAKE_HEARTBEAT_S="1",
                              LORABAKE_WEBHOOK_FIRST_WAIT_S="0.5", LORABAKE_RECONCILE_EVERY_S="0.5")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        with Receiver(fail_first=1) as receiver, LiveServer(settings_from_env(env)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            me = register(client, "hook@example.com")
            hook = client.put("/api/v1/me/webhook", json={"url": receiver.url}, headers=me).json()
            assert hook["url"] == receiver.url and len(hook["secret"]) == 48
            ping = client.post("/api/v1/me/webhook/test", headers=me).json()
            assert ping == {"delivered": True, "message": "the receiver answered HTTP 204"}

            job_id = start_job(client, me, dataset_with_images(client, me, 2), "hooked", 1)
            wait_for(lambda: len(receiver.job_events()) >= 2, 240, "the webhook's second try", describe=worker.log)
            job = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job_id}", headers=me).json())["webhook_status"]
                           .startswith("delivered") and j, 30, "the delivery to be recorded")
            assert job["status"] == JobStatus.succeeded
            assert job["webhook_status"] == "delivered: HTTP 204 (try 2)"
            (first, body), (second, again) = receiver.job_events()
            assert body == again and first["X-Lorabake-Delivery"] == second["X-Lorabake-Delivery"]
            for headers, sent in receiver.job_events():
                assert headers["X-Lorabake-Signature"] == sign(hook["secret"], headers["X-Lorabake-Timestamp"], sent)
                assert headers["X-Lorabake-Signature"] != sign("another secret", headers["X-Lorabake-Timestamp"], sent)
            payload = json.loads(body)
            assert payload["event"] == "job.succeeded" and payload["job"]["id"] == job_id
            assert payload["job"]["name"] == "hooked" and payload["job"]["page"] == f"/#/jobs/{job_id}"

            time.sleep(2.5)  # the reconciler passes every 0.5 s meanwhile, and the job is not announced again
            assert len(receiver.job_events()) == 2
    finally:
        worker.stop()


@pytest.fixture
def production_client(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", webhook_private_targets=False, max_waiting_jobs_per_user=2,
                        max_running_jobs_per_user=1)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_webhooks_to_private_addresses_or_other_schemes_are_refused_by_field_when_not_allowed(production_client):
    client, _ = production_client
    me = register(client, "private@example.com")
    assert client.post("/api/v1/me/webhook/test", headers=me).status_code == 409  # nothing set yet
    for url, reason in [("http://127.0.0.1:9000/hook", "private address"), ("http://10.1.2.3/x", "private address"),
                        ("ftp://example.com/hook", "http:// or https://")]:
        answer = client.put("/api/v1/me/webhook", json={"url": url}, headers=me)
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["detail"]["errors"]
        assert error["field"] == "url" and reason in error["message"]
    assert client.get("/api/v1/me/webhook", headers=me).json()["url"] is None  # nothing half-saved
    with pytest.raises(RefusedTarget):
        check_target("http://[::1]:8080/", allow_private=False)
    check_target("http://127.0.0.1:8080/", allow_private=True)
    cleared = client.put("/api/v1/me/webhook", json={"url": None}, headers=me).json()
    assert cleared["url"] is None


def test_users_are_told_their_limits_and_a_job_past_the_waiting_limit_is_refused_with_the_reason(production_client):
    client, settings = production_client
    me = register(client, "busy@example.com")
    dataset = dataset_with_images(client, me, 2)
    assert client.get("/api/v1/me/limits", headers=me).json() == {"running": 0, "max_running": 1, "waiting": 0,
                                                                   "max_waiting": 2}
    first, second = (start_job(client, me, dataset, f"j{i}", 1) for i in range(2))
    refused = client.post("/api/v1/jobs", headers=me, json={"dataset_id": dataset["id"], "base_model": "tiny-sd15",
                                                              "preset": "standard", "name": "j3"})
    assert refused.status_code == 429
    assert "2 jobs waiting to start" in refused.json()["detail"]["message"]
    assert client.get("/api/v1/me/limits", headers=me).json()["waiting"] == 2

    # one of a user's jobs trains at a time: a worker passes over the second and takes another user's job
    other = register(client, "other@example.com")
    theirs = start_job(client, other, dataset_with_images(client, other, 2), "theirs", 1)
    with session_factory(settings.db_url)() as session:
        assert claim_next(session, "w1", max_running_per_owner=1) == first
        assert claim_next(session, "w2", max_running_per_owner=1) == theirs
        assert claim_next(session, "w3", max_running_per_owner=1) is None
        assert claim_next(session, "w3") == second  # without the limit it would have been taken
        session.rollback()
    assert client.get("/api/v1/me/limits", headers=me).json()["running"] == 0


def test_failed_jobs_are_announced_once_and_jobs_that_ended_long_before_the_webhook_are_not(production_client):
    from datetime import timedelta

    from sqlalchemy import update

    from core.models import Job, User, utcnow
    from core.webhooks import take_due

    client, settings = production_client
    me = register(client, "ends@example.com")
    dataset = dataset_with_images(client, me, 1)
    failed, old = (start_job(client, me, dataset, f"j{i}", 1) for i in range(2))
    with session_factory(settings.db_url)() as session:
        session.execute(update(Job).where(Job.id == failed).values(status=JobStatus.failed, finished_at=utcnow()))
        session.execute(update(Job).where(Job.id == old).values(status=JobStatus.succeeded,
                                                               finished_at=utcnow() - timedelta(days=2)))
        session.commit()
    canceled = start_job(client, me, dataset, "j3", 1)
    client.post(f"/api/v1/jobs/{canceled}/cancel", headers=me)  # canceled by its owner: not announced
    with session_factory(settings.db_url)() as session:
        assert take_due(session) == []  # no webhook set yet
        session.execute(update(User).values(webhook_url="https://hooks.example.com/lorabake", webhook_secret="s"))
        session.commit()
        assert take_due(session) == [failed]
        session.commit()
        assert take_due(session) == []  # taken once


def test_a_new_webhook_announces_only_what_ends_after_it_and_an_unknown_host_is_said_in_words(tmp_path):
    from sqlalchemy import update

    from core.models import Job, utcnow
    from core.webhooks import take_due

    settings = Settings(var_dir=tmp_path / "var", reconcile_in_api=False)
    with TestClient(create_app(settings)) as client:
        me = register(client, "late@example.com")
        dataset = dataset_with_images(client, me, 1)
        before, after = (start_job(client, me, dataset, f"j{i}", 1) for i in range(2))
        with session_factory(settings.db_url)() as session:  # ended a minute ago, well within the hour
            session.execute(update(Job).where(Job.id == before).values(status=JobStatus.succeeded,
                                                                       finished_at=utcnow()))
            session.commit()
        with Receiver() as receiver:
            assert client.put("/api/v1/me/webhook", json={"url": receiver.url}, headers=me).status_code == 200
        with session_factory(settings.db_url)() as session:
            assert take_due(session) == []  # it ended before the webhook existed
            assert session.get(Job, before).webhook_status == "not announced: it ended before the webhook was set"
            session.execute(update(Job).where(Job.id == after).values(status=JobStatus.failed, finished_at=utcnow()))
            session.commit()
            assert take_due(session) == [after]
        client.put("/api/v1/me/webhook", json={"url": "http://no-such-host.invalid/hook"}, headers=me)
        tried = client.post("/api/v1/me/webhook/test", headers=me).json()
        assert tried["delivered"] is False
        assert "no host is called no-such-host.invalid" in tried["message"] and "Errno" not in tried["message"]
