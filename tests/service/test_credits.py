"""Credits: the price shown before a job starts, held when it is queued, charged per finished epoch, the rest
released when it ends; a balance that never goes below zero, even with requests racing for it."""

from __future__ import annotations

import shutil
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

import worker.training
from api.main import create_app
from core import credits, jobs
from core.db import fresh_database, migrate, session_factory
from core.estimates import RunShape
from core.models import CreditMove, Job, JobStatus, User
from core.settings import Settings
from core.storage import storage_for
from tests.service.conftest import LiveServer, dataset_with_images, public_model, register, start_job
from tests.service.test_database import make_job
from worker.runner import ServiceCallbacks
from worker.training import run_training

RATE = 2_560_000  # per 1000 samples at 1024²: one 64×64 sample costs 10 credits


def test_an_epoch_costs_the_family_rate_times_its_samples_and_pixels():
    settings = Settings(credit_prices={"flux": 40.0}, credit_price_default=10.0)
    assert credits.epoch_price(settings, RunShape("flux", 1024, 1024, 2), 500) == 40  # 1000 samples at 1024²
    assert credits.epoch_price(settings, RunShape("sd15", 512, 512, 1), 1000) == 3  # 2.5, rounded up
    assert credits.epoch_price(settings, RunShape("sd15", 64, 64, 1), 1) == 1  # never less than 1 when priced
    assert credits.epoch_price(Settings(), RunShape("sd15", 512, 512, 1), 1000) == 0  # unpriced: free


def _moves(session, user_id: str) -> list[tuple[str, int, int]]:
    rows = session.scalars(select(CreditMove).where(CreditMove.user_id == user_id).order_by(CreditMove.created_at))
    return [(m.kind, m.amount, m.balance) for m in rows]


def test_a_job_canceled_after_two_of_five_epochs_pays_for_two_and_gets_the_rest_back(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session, epoch_price=7, epochs_total=5)
        credits.top_up(session, job.owner_id, 50, "start")
        credits.hold(session, job.owner_id, job.id, 35, "5 epochs")
        assert jobs.claim(session, job.id, "w")
        assert credits.charge_epoch(session, job.id, 1) and credits.charge_epoch(session, job.id, 2)
        assert not credits.charge_epoch(session, job.id, 2)  # stored again after a crash: not charged again
        assert jobs.cancel(session, job.id) == "requested"
        assert jobs.finish(session, job.id, 1, JobStatus.canceled)
        session.commit()
        assert _moves(session, job.owner_id) == [("top_up", 50, 50), ("hold", 35, 15), ("charge", 7, 15),
                                                 ("charge", 7, 15), ("release", 21, 36)]
        assert session.get(Job, job.id).credits_held == 0


def test_failed_and_lost_jobs_pay_for_what_they_finished(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        failed = make_job(session, epoch_price=5, epochs_total=3)
        owner = session.get(User, failed.owner_id)
        lost = make_job(session, epoch_price=5, epochs_total=3, owner=owner)
        credits.top_up(session, owner.id, 30, "start")
        for job in (failed, lost):
            credits.hold(session, owner.id, job.id, 15, "3 epochs")
            jobs.claim(session, job.id, "w")
            credits.charge_epoch(session, job.id, 1)
        jobs.finish(session, failed.id, 1, JobStatus.failed, error="boom")
        session.execute(update(Job).where(Job.id == lost.id).values(attempt=3))
        assert jobs.requeue_lost(session, timeout_s=-1, max_attempts=3).failed == [lost.id]
        session.commit()
        assert credits.balance(session, owner.id) == 30 - 5 - 5


def test_the_balance_can_never_go_below_zero(db_url):
    migrate(db_url)
    with session_factory(db_url)() as session:
        job = make_job(session)
        credits.top_up(session, job.owner_id, 10, "start")
        with pytest.raises(credits.NotEnoughCredits, match="costs 11 credits and you have 10"):
            credits.hold(session, job.owner_id, job.id, 11, "too much")
        with pytest.raises(credits.NotEnoughCredits):
            credits.top_up(session, job.owner_id, -11, "too much taken away")
        session.commit()
        with pytest.raises(IntegrityError):  # and the database itself refuses it
            session.execute(text("UPDATE users SET credits = -1 WHERE id = :id"), {"id": job.owner_id})
            session.commit()


def _priced(tmp_path, tiny_sd15, monthly: int = 100, **extra) -> Settings:
    settings = Settings(var_dir=tmp_path / "var", credit_price_default=RATE, monthly_credits=monthly, **extra)
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    return settings


def _job_body(dataset: dict, epochs: int) -> dict:
    return {"dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "standard", "name": "priced",
            "params": {"max_train_epochs": epochs, "sample_every_n_epochs": None}}


def test_two_jobs_sent_at_once_with_credits_for_one_queue_exactly_one(tmp_path, tiny_sd15, service_urls):
    settings = _priced(tmp_path, tiny_sd15, database_url=fresh_database(service_urls["postgres"]))
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        register(client, "admin@example.com")  # the embedded install's first account
        me = register(client, "racer@example.com")
        dataset = dataset_with_images(client, me, 2)
        estimate = client.post("/api/v1/jobs/estimate", json=_job_body(dataset, 3), headers=me).json()
        # an epoch is 1 step of a batch of 2 at 64×64, 10 credits a sample; the monthly grant is all there is
        assert (estimate["epoch_price"], estimate["price"], estimate["balance"]) == (20, 60, 100)
        answers: list[httpx.Response] = []
        barrier = threading.Barrier(2)

        def send() -> None:
            barrier.wait()
            answers.append(client.post("/api/v1/jobs", json=_job_body(dataset, 3), headers=me))

        racers = [threading.Thread(target=send) for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert sorted(a.status_code for a in answers) == [201, 402]
        refused = next(a for a in answers if a.status_code == 402).json()["detail"]
        assert refused["code"] == "not_enough_credits"
        assert {e["field"]: e["message"] for e in refused["errors"]} == {"price": "60 credits",
                                                                         "balance": "40 credits"}
        mine = client.get("/api/v1/me/credits", headers=me).json()
        assert (mine["balance"], mine["held"], mine["monthly_grant"]) == (40, 60, 100)
        kinds = [m["kind"] for m in client.get("/api/v1/me/credits/moves", headers=me).json()]
        assert kinds == ["hold", "grant"]  # newest first: one grant this month, one hold


class _CancelsAfterEpoch2(ServiceCallbacks):
    """The user presses cancel while epoch 2 is being stored; the worker hears it at its next heartbeat."""

    client: TestClient
    headers: dict[str, str]

    def on_state_saved(self, folder, epoch: int) -> None:  # noqa: ANN001
        super().on_state_saved(folder, epoch)
        if epoch == 2:
            assert self.client.post(f"/api/v1/jobs/{self.job_id}/cancel", headers=self.headers).status_code == 200
            self.beat.beat()


class _FailsAfterEpoch1(ServiceCallbacks):
    def on_state_saved(self, folder, epoch: int) -> None:  # noqa: ANN001
        super().on_state_saved(folder, epoch)
        raise RuntimeError("the GPU fell off the bus")


def test_a_worker_charges_finished_epochs_once_and_releases_the_rest(tmp_path, tiny_sd15, monkeypatch):
    settings = _priced(tmp_path, tiny_sd15, monthly=200)
    storage = storage_for(settings)
    with TestClient(create_app(settings)) as client:
        me = register(client, "worker@example.com")
        dataset = dataset_with_images(client, me, 2)  # 20 credits an epoch

        def balance() -> int:
            return client.get("/api/v1/me/credits", headers=me).json()["balance"]

        canceled = start_job(client, me, dataset, "canceled", 5)  # 100 held
        assert balance() == 100
        monkeypatch.setattr(_CancelsAfterEpoch2, "client", client, raising=False)
        monkeypatch.setattr(_CancelsAfterEpoch2, "headers", me, raising=False)
        monkeypatch.setattr(worker.training, "ServiceCallbacks", _CancelsAfterEpoch2)
        assert run_training(settings, storage, canceled, "w1") == JobStatus.canceled
        assert balance() == 200 - 40  # paid for 2 of 5

        failed = start_job(client, me, dataset, "failed", 3)
        monkeypatch.setattr(worker.training, "ServiceCallbacks", _FailsAfterEpoch1)
        assert run_training(settings, storage, failed, "w1") == JobStatus.failed
        assert balance() == 160 - 20  # paid for the one it finished

        monkeypatch.setattr(worker.training, "ServiceCallbacks", ServiceCallbacks)
        done = start_job(client, me, dataset, "done", 2)
        assert run_training(settings, storage, done, "w1") == JobStatus.succeeded
        with session_factory(settings.db_url)() as session:  # the worker died before saying so: it runs again
            session.execute(update(Job).where(Job.id == done).values(status=JobStatus.queued, finished_at=None))
            session.commit()
        assert run_training(settings, storage, done, "w2") == JobStatus.succeeded
        assert balance() == 140 - 40  # each of its 2 epochs charged once
        charges = [m for m in client.get("/api/v1/me/credits/moves", headers=me).json() if m["kind"] == "charge"]
        assert sorted(m["note"] for m in charges if m["job_id"] == done) == ["epoch 1", "epoch 2"]

        # continuing the canceled job holds the 3 epochs it adds (2 → 5)
        assert client.post(f"/api/v1/jobs/{canceled}/continue", json={"epochs": 3}, headers=me).status_code == 200
        job = client.get(f"/api/v1/jobs/{canceled}", headers=me).json()
        assert (job["status"], job["credits_held"], job["charged_epochs"]) == ("queued", 60, 2)
        assert balance() == 40
        more = client.post("/api/v1/jobs", json=_job_body(dataset, 3), headers=me)
        assert more.status_code == 402 and "costs 60 credits and you have 40" in more.json()["detail"]["message"]


def test_testing_someone_elses_model_costs_the_test_price(tmp_path, tiny_sd15):
    settings = Settings(var_dir=tmp_path / "var", test_price=5)  # training is free here; tests of others' are not
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    with TestClient(create_app(settings)) as client:
        admin = register(client, "root@example.com")
        owner, tester = register(client, "owner@example.com"), register(client, "tester@example.com")
        model_id = public_model(client, settings, owner)
        asked = {"prompt": "sks, a portrait", "steps": 2}
        refused = client.post(f"/api/v1/models/{model_id}/test", json=asked, headers=tester)
        assert refused.status_code == 402 and "costs 5 credits and you have 0" in refused.json()["detail"]["message"]
        tester_id = client.get("/api/v1/me", headers=tester).json()["id"]
        client.post(f"/api/v1/admin/users/{tester_id}/credits", json={"amount": 7, "reason": "a trial"}, headers=admin)
        tried = client.post(f"/api/v1/models/{model_id}/test", json=asked, headers=tester)
        assert tried.status_code == 202
        assert client.get(f"/api/v1/generations/{tried.json()['id']}", headers=tester).status_code == 200  # theirs
        assert client.get("/api/v1/me/credits", headers=tester).json()["balance"] == 2
        own = client.post(f"/api/v1/models/{model_id}/test", json=asked, headers=owner)
        assert own.status_code == 202  # testing your own model is free

