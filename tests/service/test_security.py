"""Sign-in and sign-up throttles (never locking an owner out), client addresses behind proxies, the cap on password
hashing, who may read metrics, unambiguous model names and keep-alives on quiet event streams."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import fastapi.routing
import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.throttle import Throttle
from core.db import session_factory
from core.models import Dataset, Epoch, Job, JobStatus, PublishedModel, User
from core.settings import Settings
from tests.service.conftest import ApiProcess, LiveServer, free_port, production_like_env, register, wait_for

PASSWORD = "correct horse battery"


def _app(tmp_path, **values) -> TestClient:
    return TestClient(create_app(Settings(var_dir=tmp_path / "var", reconcile_in_api=False, **values)))


def _login(client: TestClient, email: str, password: str) -> int:
    return client.post("/api/v1/auth/login", data={"username": email, "password": password}).status_code


def _login_from(client: TestClient, email: str, password: str, address: str) -> httpx.Response:
    """A sign-in as the proxy in front of the service passes it on: the client's address in X-Forwarded-For."""
    return client.post("/api/v1/auth/login", data={"username": email, "password": password},
                       headers={"X-Forwarded-For": address})


def _behind_proxy(tmp_path, **values) -> TestClient:
    """The service behind a reverse proxy on this machine (the peer), which it trusts for X-Forwarded-For."""
    settings = Settings(var_dir=tmp_path / "var", reconcile_in_api=False, trusted_proxies=["127.0.0.1"], **values)
    return TestClient(create_app(settings), client=("127.0.0.1", 50000))


def test_guessing_from_many_addresses_is_refused_and_never_locks_the_owner_out(tmp_path):
    with _behind_proxy(tmp_path, login_delay_max_s=0.01) as client:
        owner = register(client, "target@example.com")  # signed in before the attack
        attackers = [f"203.0.113.{n}" for n in range(1, 21)]
        answers = [_login_from(client, "target@example.com", f"guess {n}", address).status_code
                   for address in attackers for n in range(10)]
        assert answers == [401] * 200  # ten wrong passwords from each of twenty addresses
        for address in attackers:  # each address is now refused for this account, with a reason and a time
            refused = _login_from(client, "target@example.com", PASSWORD, address)
            assert refused.status_code == 429 and "from your address" in refused.json()["detail"]["message"]
            assert int(refused.headers["retry-after"]) > 0
        started = time.monotonic()
        assert _login_from(client, "target@example.com", PASSWORD, "198.51.100.7").status_code == 200  # first try
        assert time.monotonic() - started < 5  # slowed by at most login_delay_max_s (and a hash)
        assert client.get("/api/v1/me", headers=owner).status_code == 200  # signed in elsewhere: still signed in
        assert _login_from(client, "bystander@example.com", PASSWORD, attackers[0]).status_code == 401  # no lockout


def test_a_forwarded_address_is_believed_only_from_a_trusted_proxy(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", reconcile_in_api=False, login_failures_per_pair=3)
    with TestClient(create_app(settings), client=("192.0.2.10", 40000)) as client:  # no trusted proxies
        register(client, "me@example.com")
        # a client naming a new address each time is still the one address it connects from
        answers = [_login_from(client, "me@example.com", "wrong", f"203.0.113.{n}").status_code for n in range(4)]
        assert answers == [401, 401, 401, 429]
    with _behind_proxy(tmp_path / "b", login_failures_per_pair=3) as client:
        register(client, "me@example.com")
        # what the client wrote itself (left of the proxy's own entry) is not believed either
        spoofed = [_login_from(client, "me@example.com", "wrong", f"203.0.113.{n}, 198.51.100.9").status_code
                   for n in range(4)]
        assert spoofed == [401, 401, 401, 429]
        assert _login_from(client, "me@example.com", PASSWORD, "198.51.100.10").status_code == 200


def test_a_correct_password_clears_the_pair_count(tmp_path):
    with _app(tmp_path, login_failures_per_pair=3) as client:
        register(client, "me@example.com")
        for _ in range(5):
            assert _login(client, "me@example.com", "wrong password") == 401
            assert _login(client, "me@example.com", PASSWORD) == 200


def test_production_refuses_to_start_with_metrics_open_unless_told(tmp_path):
    secret = "k" * 40
    with pytest.raises(ValueError, match="LORABAKE_METRICS_TOKEN"):
        Settings(var_dir=tmp_path, mode="production", secret_key=secret)
    assert Settings(var_dir=tmp_path, mode="production", secret_key=secret, metrics_public=True).metrics_public
    assert Settings(var_dir=tmp_path, mode="production", secret_key=secret, metrics_token="t" * 20).metrics_token
    with pytest.raises(ValueError, match="not an address or network"):
        Settings(var_dir=tmp_path, trusted_proxies=["proxy.example"])


def test_embedded_metrics_are_served_to_this_machine_only(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", reconcile_in_api=False)
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 40000)) as here:
        assert here.get("/api/v1/metrics").status_code == 200
    with TestClient(app, client=("192.0.2.10", 40000)) as elsewhere:
        refused = elsewhere.get("/api/v1/metrics")
        assert refused.status_code == 403 and "LORABAKE_METRICS_TOKEN" in refused.json()["detail"]["message"]
        # a forwarded header does not make a remote caller local
        assert elsewhere.get("/api/v1/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 403


def test_one_address_gets_a_bounded_number_of_sign_ins_and_sign_ups(tmp_path):
    with _app(tmp_path, logins_per_address=4, signups_per_address=2) as client:
        register(client, "a@example.com")
        register(client, "b@example.com")
        third = client.post("/api/v1/auth/register", json={"email": "c@example.com", "password": PASSWORD})
        assert third.status_code == 429 and "new accounts from your address" in third.json()["detail"]["message"]
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
    assert refused.value.status == 503 and time.monotonic() - started >= 0.3
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
            again.json()["detail"]["message"]
        other_job, _ = _finished_job(settings, "alice@example.com")
        same_name = client.post("/api/v1/models", json={**body, "job_id": other_job}, headers=alice)
        assert same_name.status_code == 409
        assert "already published a model called shared" in same_name.json()["detail"]["message"]
        clash = client.post("/api/v1/models", json={**body, "job_id": bob_job}, headers=bob)
        assert clash.status_code == 409 and "ambiguous" in clash.json()["detail"]["message"]
        private = client.post("/api/v1/models", json={**body, "job_id": bob_job, "visibility": "private"},
                              headers=bob)
        assert private.status_code == 201  # his own, private: nobody else sees the name
        with session_factory(settings.db_url)() as session:
            assert session.query(PublishedModel).count() == 2


def test_a_quiet_event_stream_gets_keep_alives_without_redis(tmp_path, monkeypatch):
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.5)  # FastAPI's keep-alive interval, 15 s by default
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
                if line.startswith(": ping"):
                    break
        assert ": ping" in lines


def test_an_account_under_attack_only_slows_down_and_never_past_the_bound():
    from api.throttle import account_delay_s

    settings = Settings(login_failures_before_delay=10, login_delay_max_s=3.0)
    delays = [account_delay_s(failures, settings) for failures in range(0, 2000, 5)]
    assert delays[:2] == [0.0, 0.0] and delays[2] > 0  # nothing until the threshold, then a wait
    assert delays == sorted(delays) and max(delays) == 3.0  # growing, and bounded


def test_two_api_processes_share_the_sign_in_limits_and_refuse_sign_ins_while_redis_is_away(
        tmp_path, service_urls, tiny_sd15):
    """Counted in Redis, the pair limit holds across API processes (counted per process it would be 2× here); with
    Redis gone, sign-in and sign-up answer 503 with the reason instead of counting per process."""
    port = free_port()
    store = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers_ping(port), 30, "the test's own Redis")
        env = {**production_like_env(tmp_path, service_urls, tiny_sd15, 9), "LORABAKE_RECONCILE_IN_API": "false",
               "LORABAKE_REDIS_URL": f"redis://127.0.0.1:{port}/0", "LORABAKE_LOGIN_FAILURES_PER_PAIR": "4"}
        with ApiProcess(env, tmp_path / "api1.log") as first, ApiProcess(env, tmp_path / "api2.log") as second, \
                httpx.Client(base_url=first.url) as one, httpx.Client(base_url=second.url) as two:
            register(one, "shared@example.com")
            wrong = {"username": "shared@example.com", "password": "not it"}
            answers = [client.post("/api/v1/auth/login", data=wrong).status_code for client in (one, two, one, two)]
            assert answers == [401] * 4
            for client in (one, two):
                refused = client.post("/api/v1/auth/login", data={**wrong, "password": PASSWORD})
                assert refused.status_code == 429 and "from your address" in refused.json()["detail"]["message"]
            store.terminate()
            store.wait(timeout=20)
            for client in (one, two):
                away = client.post("/api/v1/auth/login", data={"username": "other@example.com", "password": "x"})
                assert away.status_code == 503 and "rate-limit store" in away.json()["detail"]["message"]
                assert int(away.headers["retry-after"]) > 0
                signup = client.post("/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD})
                assert signup.status_code == 503 and "rate-limit store" in signup.json()["detail"]["message"]
    finally:
        store.kill()


def _answers_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False
