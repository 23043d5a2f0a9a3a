"""The operator's console: who may open it, what suspending an account does, credits and limits per user, every
user's jobs with why they wait, re-queueing, and the audit log of it all."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from api.main import create_app
from core.db import session_factory
from core.models import Job, JobStatus, Worker, utcnow
from core.settings import Settings, get_settings
from tests.service.conftest import dataset_with_images, public_model, register, start_job
from trainer.cli import main as cli

PASSWORD = "correct horse battery"


@pytest.fixture
def site(tmp_path, tiny_sd15):
    import shutil

    settings = Settings(var_dir=tmp_path / "var")
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    with TestClient(create_app(settings)) as client:
        admin = register(client, "root@example.com")  # the embedded install's first account: offered the console
        yield client, settings, admin


def test_every_admin_route_is_not_found_for_users_and_visitors(site):
    client, _, admin = site
    user = register(client, "user@example.com")
    assert client.get("/api/v1/me", headers=admin).json()["role"] == "admin"
    assert client.get("/api/v1/me", headers=user).json()["role"] == "user"
    routes = [r for r in client.app.routes if isinstance(r, Route) and r.path.startswith("/api/v1/admin/")]
    assert len(routes) >= 9
    client.cookies.clear()  # the visitor has no session
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "x" * 32, route.path)
        for method in route.methods - {"HEAD"}:
            for who in (user, {}):
                answer = client.request(method, path, headers=who, json={"reason": "because", "amount": 1})
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["detail"]["code"] == "not_found"
    assert client.get("/api/v1/admin/users", headers=admin).status_code == 200


def test_the_server_command_grants_and_revokes_the_admin_role(site, monkeypatch, capsys):
    client, settings, admin = site
    other = register(client, "ops@example.com")
    monkeypatch.setenv("LORABAKE_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        assert cli(["admin", "grant", "OPS@example.com"]) == 0
        assert "ops@example.com is now an admin" in capsys.readouterr().out
        assert client.get("/api/v1/admin/users", headers=other).status_code == 200
        assert cli(["admin", "revoke", "ops@example.com"]) == 0
        assert client.get("/api/v1/admin/users", headers=other).status_code == 404
        assert cli(["admin", "grant", "nobody@example.com"]) == 2
        assert "no account has the email" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
    actions = [(e["action"], e["actor_email"]) for e in client.get("/api/v1/admin/audit", headers=admin).json()]
    assert actions[:2] == [("role.user", "server command line"), ("role.admin", "server command line")]


def test_a_suspended_account_stops_training_hides_its_models_and_is_told_why(site):
    client, settings, admin = site
    mallory = register(client, "mallory@example.com")
    model = public_model(client, settings, mallory)
    finished = client.get(f"/api/v1/models/{model}", headers=mallory).json()["job_id"]
    waiting = start_job(client, mallory, dataset_with_images(client, mallory, 2), "waiting", 1)
    user_id = client.get("/api/v1/me", headers=mallory).json()["id"]
    laptop = {"Authorization": "Bearer " + client.post("/api/v1/auth/login", data={
        "username": "mallory@example.com", "password": PASSWORD}).json()["access_token"]}
    client.cookies.clear()
    assert client.get(f"/api/v1/models/{model}").status_code == 200  # a visitor sees it

    answer = client.post(f"/api/v1/admin/users/{user_id}/suspend", headers=admin,
                         json={"reason": "gore in a public model's previews"})
    assert answer.status_code == 200 and answer.json()["suspended_reason"] == "gore in a public model's previews"
    told = client.get("/api/v1/me", headers=mallory)
    assert told.status_code == 403
    assert told.json()["detail"]["message"] == "this account is suspended: gore in a public model's previews"
    sign_in = client.post("/api/v1/auth/login", data={"username": "mallory@example.com", "password": PASSWORD})
    assert sign_in.status_code == 403 and "gore" in sign_in.json()["detail"]["message"]
    wrong = client.post("/api/v1/auth/login", data={"username": "mallory@example.com", "password": "not it at all"})
    assert wrong.status_code == 401  # the reason is only for whoever knows the password
    assert client.post("/api/v1/auth/logout", headers=laptop).status_code == 204  # signing out still works
    assert client.get("/api/v1/me", headers=laptop).status_code == 401
    client.cookies.clear()  # a visitor
    assert client.get(f"/api/v1/models/{model}").status_code == 404
    jobs = {j["id"]: j for j in client.get("/api/v1/admin/jobs", headers=admin, params={"q": "mallory"}).json()}
    assert jobs[waiting]["status"] == "canceled" and jobs[finished]["status"] == "succeeded"
    assert client.post(f"/api/v1/admin/users/{user_id}/suspend", headers=admin,
                       json={"reason": "again"}).status_code == 409

    assert client.post(f"/api/v1/admin/users/{user_id}/restore", headers=admin,
                       json={"reason": "appeal granted"}).json()["suspended_reason"] is None
    client.cookies.clear()
    assert client.get(f"/api/v1/models/{model}").status_code == 200
    assert client.get("/api/v1/me", headers=mallory).status_code == 200
    log = client.get("/api/v1/admin/audit", headers=admin, params={"target": user_id}).json()
    assert [(e["action"], e["actor_email"], e["reason"]) for e in log] == [
        ("user.restore", "root@example.com", "appeal granted"),
        ("user.suspend", "root@example.com", "gore in a public model's previews")]
    assert log[1]["details"]["canceled"] == [waiting] and log[1]["details"]["hidden"] == [model]
    self_suspend = client.post(f"/api/v1/admin/users/{client.get('/api/v1/me', headers=admin).json()['id']}/suspend",
                               headers=admin, json={"reason": "oops"})
    assert self_suspend.status_code == 409


def test_an_admin_sets_credits_and_limits_per_user_and_finds_users_by_email(site):
    client, _, admin = site
    register(client, "carol@example.com")
    carol = client.get("/api/v1/admin/users", headers=admin, params={"q": "CAROL"}).json()
    assert [u["email"] for u in carol] == ["carol@example.com"]
    path = f"/api/v1/admin/users/{carol[0]['id']}"
    assert client.post(f"{path}/credits", headers=admin, json={"amount": 50, "reason": "beta"}).json()["credits"] == 50
    refused = client.post(f"{path}/credits", headers=admin, json={"amount": -51, "reason": "too much"})
    assert refused.status_code == 422 and refused.json()["detail"]["errors"][0]["field"] == "amount"
    limited = client.put(f"{path}/limits", headers=admin,
                         json={"max_running_jobs": 1, "max_waiting_jobs": 3, "reason": "small plan"}).json()
    assert (limited["max_running_jobs"], limited["max_waiting_jobs"], limited["credits"]) == (1, 3, 50)
    carol_headers = {"Authorization": "Bearer " + client.post("/api/v1/auth/login", data={
        "username": "carol@example.com", "password": PASSWORD}).json()["access_token"]}
    assert client.get("/api/v1/me/limits", headers=carol_headers).json() == {
        "running": 0, "max_running": 1, "waiting": 0, "max_waiting": 3}
    moves = client.get("/api/v1/me/credits/moves", headers=carol_headers).json()
    assert [(m["kind"], m["amount"], m["note"]) for m in moves] == [("top_up", 50, "root@example.com: beta")]
    assert [e["action"] for e in client.get("/api/v1/admin/audit", headers=admin).json()][:2] == [
        "user.limits", "credits.top_up"]


def test_the_console_lists_every_users_jobs_says_why_they_wait_and_requeues_failed_ones(site):
    client, settings, admin = site
    dave, erin = register(client, "dave@example.com"), register(client, "erin@example.com")
    first = start_job(client, dave, dataset_with_images(client, dave, 2), "first", 1)
    second = start_job(client, erin, dataset_with_images(client, erin, 2), "second", 1)

    def why() -> dict[str, str]:
        return {j["id"]: j["waiting_because"] for j in client.get("/api/v1/admin/jobs", headers=admin).json()}

    assert why()[first].startswith("no worker that trains is running")
    with session_factory(settings.db_url)() as session:
        session.add(Worker(name="gpu-1@host", queues=["train"], gpus=[], heartbeat_at=utcnow()))
        session.add(Worker(name="gone@host", queues=["train"], gpus=[],
                           heartbeat_at=utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)))
        session.commit()
    reasons = why()
    assert reasons[first].startswith("next in line") and reasons[second].startswith("1 jobs are ahead")
    listed = client.get("/api/v1/admin/workers", headers=admin).json()
    assert [w["name"] for w in listed["workers"]] == ["gpu-1@host"] and listed["jobs_queued"] == 2

    assert client.post(f"/api/v1/admin/jobs/{first}/cancel", headers=admin,
                       json={"reason": "stuck"}).status_code == 204
    assert client.get(f"/api/v1/jobs/{first}", headers=dave).json()["status"] == "canceled"
    assert client.post(f"/api/v1/admin/jobs/{first}/requeue", headers=admin,
                       json={"reason": "try"}).status_code == 409  # only failed or interrupted jobs
    with session_factory(settings.db_url)() as session:
        session.get(Job, second).status, session.get(Job, second).error = JobStatus.failed, "out of memory"
        session.commit()
    assert client.post(f"/api/v1/admin/jobs/{second}/requeue", headers=admin,
                       json={"reason": "the GPU was replaced"}).status_code == 204
    again = client.get(f"/api/v1/jobs/{second}", headers=erin).json()
    assert (again["status"], again["error"]) == ("queued", None)
    failed_only = client.get("/api/v1/admin/jobs", headers=admin, params={"status": "canceled"}).json()
    assert [j["id"] for j in failed_only] == [first] and failed_only[0]["owner_email"] == "dave@example.com"
    assert [e["action"] for e in client.get("/api/v1/admin/audit", headers=admin).json()][:2] == [
        "job.requeue", "job.cancel"]


def test_in_production_nobody_is_an_admin_until_the_server_says_so(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", mode="production", secret_key="s" * 40, metrics_token="m")
    with TestClient(create_app(settings)) as client:
        first = register(client, "first@example.com")
        assert client.get("/api/v1/me", headers=first).json()["role"] == "user"
        assert client.get("/api/v1/admin/users", headers=first).status_code == 404
