"""Jobs go to workers whose GPUs fit them: by the estimated memory, and by the number of GPUs a job asks for. The
workers here are CPU workers declaring GPUs (gpu_memory_mib); they report themselves through the real presence code
and claim through the real training attempt; the last test runs real Celery workers."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import session_factory
from core.models import Job, JobStatus
from core.placement import Capacity, Need, never_runs, waiting_for
from core.settings import TINY_OVERRIDES, BaseModelEntry, Settings
from core.storage import storage_for
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
from worker.presence import Presence
from worker.runner import ServiceCallbacks
from worker.training import run_training

GIB = 1024


def test_the_reasons_name_the_memory_and_the_gpus():
    small, big = Capacity((24 * GIB,), (24 * GIB,)), Capacity((80 * GIB, 80 * GIB), (80 * GIB, 30 * GIB))
    assert waiting_for(Need(1, 40 * GIB), [small]) == "waiting for a GPU with 40 GB: largest free 24 GB"
    assert waiting_for(Need(1, 40 * GIB), [small, big]) is None
    assert waiting_for(Need(1, 40 * GIB), []) is None  # every worker is busy: it waits its turn like any job
    assert waiting_for(Need(2, 40 * GIB), [big]) == "waiting for 2 GPUs with 40 GB each: largest free 80 GB"
    assert never_runs(Need(2, 40 * GIB), [big]) is None  # busy now, but it could
    assert never_runs(Need(1, 90 * GIB), [small, big]) == ("it needs a GPU with 90 GB and the largest GPU of this "
                                                           "server's training workers has 80 GB")
    assert never_runs(Need(3), [small, big]) == "it asks for 3 GPUs and no training worker has more than 2"
    assert never_runs(Need(1, 90 * GIB), []) is None  # no worker has reported: one may start later
    cpu = Capacity()
    assert cpu.fits_now(Need(1, 90 * GIB)) and not cpu.fits_now(Need(2))  # a CPU worker runs one process


@pytest.fixture
def server(tmp_path, tiny_sd15, tiny_qwen_image):
    settings = Settings(var_dir=tmp_path / "var", base_models=standing_in(tiny_sd15, tiny_qwen_image))
    with TestClient(create_app(settings)) as client:
        yield settings, client


def standing_in(*folders: Path) -> list[BaseModelEntry]:
    """The tiny models offered as full-size ones: placed by their family's full-size memory estimate."""
    return [BaseModelEntry(name=folder.name, family=folder.name.removeprefix("tiny-"), location=str(folder),
                           resolution=64, train_overrides=TINY_OVERRIDES) for folder in folders]


def _worker(settings: Settings, name: str, *gib: int) -> tuple[Settings, Presence]:
    """A training worker declaring GPUs of these sizes, reported as the real worker does at start."""
    own = settings.model_copy(update={"gpu_memory_mib": [g * GIB for g in gib]})
    presence = Presence(own, name, ["train"])
    presence.report()
    return own, presence


def _job(settings: Settings, job_id: str) -> Job:
    with session_factory(settings.db_url)() as session:
        return session.get(Job, job_id)


def _qwen(client, me, dataset, **params):  # noqa: ANN001, ANN202
    return client.post("/api/v1/jobs", headers=me, json={
        "dataset_id": dataset["id"], "base_model": "tiny-qwen_image", "mode": "pro", "preset": "standard",
        "name": "qwen", "params": {"max_train_epochs": 1, "sample_every_n_epochs": None, "mixed_precision": "bf16",
                                   **params}})


def test_a_tiny_test_model_shows_its_familys_full_size_estimate_but_trains_on_any_worker(tmp_path, tiny_qwen_image):
    settings = Settings(var_dir=tmp_path / "var")  # the embedded default: the tiny models under var/models
    shutil.copytree(tiny_qwen_image, tmp_path / "var" / "models" / tiny_qwen_image.name)
    with TestClient(create_app(settings)) as client:
        me = register(client, "tiny@example.com")
        dataset = dataset_with_images(client, me, 2)
        _, small = _worker(settings, "small", 24)
        estimate = client.post("/api/v1/jobs/estimate", headers=me, json={
            "dataset_id": dataset["id"], "base_model": "tiny-qwen_image", "preset": "standard", "name": "q"}).json()
        assert estimate["memory"]["total_gib"] > 24 and estimate["errors"] == []
        assert "that is the full-size model's: this tiny test model needs far less" in estimate["memory"]["summary"]
        created = _qwen(client, me, dataset)
        assert created.status_code == 201 and created.json()["memory_mib"] is None
        small.stop()


def test_a_job_waits_for_a_worker_whose_gpu_fits_it_and_is_refused_when_none_could(server):
    settings, client = server
    me = register(client, "placement@example.com")
    dataset = dataset_with_images(client, me, 2)
    small, small_presence = _worker(settings, "small", 24)
    big, big_presence = _worker(settings, "big", 80)

    estimate = client.post("/api/v1/jobs/estimate", headers=me, json={
        "dataset_id": dataset["id"], "base_model": "tiny-qwen_image", "mode": "pro", "preset": "standard",
        "name": "q", "params": {"max_train_epochs": 1, "mixed_precision": "bf16"}}).json()
    needs_gib = estimate["memory"]["total_gib"]
    assert 24 < needs_gib < 80 and not estimate["errors"], estimate["memory"]
    created = _qwen(client, me, dataset)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["memory_mib"] == pytest.approx(needs_gib * GIB, rel=0.01)

    big_presence.stop()  # the big worker is away: the job waits, and says for what
    listed = client.get("/api/v1/jobs", headers=me).json()[0]
    assert listed["waiting_for"] == f"waiting for a GPU with {needs_gib:.0f} GB: largest free 24 GB"
    console = {j["id"]: j for j in client.get("/api/v1/admin/jobs", headers=me).json()}  # the first account: admin
    assert console[job_id]["waiting_because"] == listed["waiting_for"]
    assert run_training(small, storage_for(small), job_id, "small") == "idle"
    job = _job(settings, job_id)
    assert (job.status, job.sent_at) == (JobStatus.queued, None)  # back in the outbox for another worker

    refused = _qwen(client, me, dataset)  # only the small worker is live: nobody could run a second one
    assert refused.status_code == 422
    reason = refused.json()["detail"]["errors"][0]
    assert reason["field"] == "base_weights"
    assert "largest GPU of this server's training workers has 24 GB" in reason["message"]
    assert "nf4" in reason["message"]
    assert _qwen(client, me, dataset, base_weights="nf4").status_code == 201  # stored in 4 bits it fits in 24 GB
    def sd15(**params):  # noqa: ANN202
        return client.post("/api/v1/jobs/estimate", headers=me, json={
            "dataset_id": dataset["id"], "base_model": "tiny-sd15", "mode": "pro", "preset": "standard", "name": "s",
            "params": {"train_batch_size": 1, **params}}).json()

    one, two = sd15(), sd15(gpus=2)
    assert (two["gpus"], two["steps_per_epoch"] * 2) == (2, one["steps_per_epoch"])  # a batch on each GPU a step
    assert two["errors"] == [{"field": "gpus", "message": "no worker of this server could run this job: it asks "
                              "for 2 GPUs and no training worker has more than 1",
                              "plain": "This server cannot run this job: it asks for 2 GPUs and no training worker "
                                       "has more than 1."}]

    big, big_presence = _worker(settings, "big", 80)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=me).json()["waiting_for"] is None
    assert run_training(big, storage_for(big), job_id, "big") == JobStatus.succeeded
    small_presence.stop()
    big_presence.stop()


def _kill_rank_one_after_epoch_one(monkeypatch) -> list[int]:
    """Rank 0 itself kills the run's other process as soon as epoch 1 and its state are stored."""
    killed: list[int] = []
    stored = ServiceCallbacks.on_state_saved

    def then_kill(self, folder, epoch):  # noqa: ANN001, ANN202
        stored(self, folder, epoch)
        if epoch == 1 and not killed:
            child = next(p for p in multiprocessing.active_children() if p.name == "rank-1")
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
            killed.append(child.pid)

    monkeypatch.setattr(ServiceCallbacks, "on_state_saved", then_kill)
    return killed


def test_a_two_gpu_job_trains_on_two_processes_and_a_killed_one_sends_it_back_to_resume(server, monkeypatch):
    settings, client = server
    me = register(client, "twogpus@example.com")
    other = register(client, "other@example.com")
    one_gpu, one_presence = _worker(settings, "one", 24)
    two_gpus, two_presence = _worker(settings, "two", 24, 24)
    job_id = start_job(client, me, dataset_with_images(client, me, 4, repeats=2), "two", 2, gpus=2,
                       train_batch_size=1, save_every_n_epochs=1)
    assert _job(settings, job_id).total_steps == 8  # 8 batches an epoch, 2 a step, 2 epochs
    theirs = start_job(client, other, dataset_with_images(client, other, 1), "theirs", 1)
    assert run_training(one_gpu, storage_for(one_gpu), theirs, "one") == JobStatus.succeeded  # passes over 2 GPUs

    killed = _kill_rank_one_after_epoch_one(monkeypatch)
    assert run_training(two_gpus, storage_for(two_gpus), job_id, "two") == JobStatus.queued
    monkeypatch.undo()
    job = _job(settings, job_id)
    assert killed and "process 1 of 2 ended with exit code -9" in job.error and job.sent_at is None
    assert run_training(two_gpus, storage_for(two_gpus), job_id, "two") == JobStatus.succeeded
    job = _job(settings, job_id)
    assert (job.attempt, job.step, job.charged_epochs) == (2, 8, 2)
    assert "resumed at epoch 2, batch 0, step 4" in job.log_tail
    one_presence.stop()
    two_presence.stop()


def test_two_real_workers_each_take_the_jobs_their_gpus_fit(tmp_path, service_urls, tiny_sd15, tiny_qwen_image):
    """Celery workers declaring a 24 GB and an 80 GB GPU, PostgreSQL and Redis: the Qwen-Image job (about 55 GB)
    trains on the big one whichever worker its message reached first; an SD 1.5 job fits both."""
    models = json.dumps([m.model_dump() for m in standing_in(tiny_sd15, tiny_qwen_image)])
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 10, LORABAKE_HEARTBEAT_S="0.5",
                              LORABAKE_RECONCILE_EVERY_S="0.5", LORABAKE_RESEND_AFTER_S="2",
                              LORABAKE_BASE_MODELS=models)
    workers = [WorkerProcess({**env, "LORABAKE_GPU_MEMORY_MIB": f"[{gib * GIB}]"}, tmp_path / f"w{gib}.log",
                             queues="train").start() for gib in (24, 80)]
    try:
        with LiveServer(settings_from_env(env)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            me = register(client, "fleet@example.com")  # the first account: the console is theirs
            dataset = dataset_with_images(client, me, 2)

            def named_by_memory() -> dict[int, str] | None:
                found = {w["gpus"][0]["memory_total_mb"] // GIB: w["name"]
                         for w in client.get("/api/v1/admin/workers", headers=me).json()["workers"] if w["gpus"]}
                return found if len(found) == 2 else None

            names = wait_for(named_by_memory, 120, "both workers to report their GPUs")
            qwen = _qwen(client, me, dataset).json()["id"]
            sd = start_job(client, me, dataset, "sd", 1)

            def ended() -> dict[str, dict] | None:
                jobs = {j["id"]: j for j in client.get("/api/v1/admin/jobs", headers=me).json()}
                done = all(jobs[i]["status"] in ("succeeded", "failed") for i in (qwen, sd))
                return jobs if done else None

            jobs = wait_for(ended, 300, "both jobs to end", describe=lambda: workers[0].log() + workers[1].log())
            assert [jobs[i]["status"] for i in (qwen, sd)] == ["succeeded", "succeeded"], jobs
            assert jobs[qwen]["worker"] == names[80]
    finally:
        for worker in workers:
            worker.stop()
