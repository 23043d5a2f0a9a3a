"""A worker killed mid-training: the reconciler marks the job interrupted, re-queues it, and a new worker resumes
from the last stored epoch state."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from core.db import session_factory
from core.models import Job, JobStatus, utcnow
from core.queue import TRAIN_TASK, make_celery
from core.reconcile import reconcile
from tests.service.conftest import (
    LiveServer,
    WorkerProcess,
    dataset_with_images,
    png_bytes,
    production_like_env,
    register,
    settings_from_env,
    start_job,
    wait_for,
)


@pytest.fixture
def setup(tmp_path, service_urls, tiny_sd15):
    # these tests drive the reconciler themselves, so the API's own timer stays off
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 6, LORABAKE_HEARTBEAT_S="0.5",
                              LORABAKE_RECONCILE_IN_API="false", LORABAKE_CREDIT_PRICE_DEFAULT="2560000",
                              LORABAKE_MONTHLY_CREDITS="100000")
    settings = settings_from_env(env)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, settings, env, tmp_path


def test_killed_worker_job_is_requeued_and_resumes_from_its_last_epoch(setup):
    client, settings, env, tmp_path = setup
    me = register(client, "crash@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "d", "default_repeats": 16}, headers=me).json()
    client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=me,
                files=[("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(8)])
    job = client.post("/api/v1/jobs", headers=me, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "standard", "name": "crash",
        "params": {"max_train_epochs": 3, "sample_every_n_epochs": None}}).json()
    first = WorkerProcess(env, tmp_path / "worker1.log").start()
    try:
        def state_stored() -> bool:
            with session_factory(settings.db_url)() as session:
                return session.get(Job, job["id"]).state_key is not None

        wait_for(state_stored, 120, "epoch 1's resumable state", interval=0.05, describe=first.log)
    finally:
        first.kill()
    state = client.get(f"/api/v1/jobs/{job['id']}", headers=me).json()
    assert state["status"] == "running", state  # nobody told the database: the worker just vanished

    send = make_celery(settings)
    assert reconcile(settings, lambda job_id: send.send_task(TRAIN_TASK, args=[job_id])).requeued == []
    with session_factory(settings.db_url)() as session:  # make the heartbeat old instead of waiting minutes
        session.execute(update(Job).where(Job.id == job["id"])
                        .values(heartbeat_at=utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 1)))
        session.commit()
    repairs = reconcile(settings, lambda job_id: send.send_task(TRAIN_TASK, args=[job_id]))
    assert repairs.requeued == [job["id"]]
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=me).json()["status"] == JobStatus.queued

    second = WorkerProcess(env, tmp_path / "worker2.log").start()
    try:
        final = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}", headers=me).json())["status"]
                         in ("succeeded", "failed") and j, 180, "the resumed job", describe=second.log)
    finally:
        second.stop()
    assert final["status"] == "succeeded", final["error"]
    assert final["attempt"] == 2
    assert any(line.startswith("resumed at epoch") for line in final["log_tail"]), final["log_tail"]
    epochs = client.get(f"/api/v1/jobs/{job['id']}/epochs", headers=me).json()
    assert [e["n"] for e in epochs] == [1, 2, 3]
    charges = [m["note"] for m in client.get("/api/v1/me/credits/moves", headers=me).json() if m["kind"] == "charge"]
    assert sorted(charges) == ["epoch 1", "epoch 2", "epoch 3"]  # the crash charged no epoch twice
    assert final["credits_held"] == 0 and final["charged_epochs"] == 3


def test_lost_workers_stop_after_the_attempt_cap_and_due_schedules_start(setup):
    client, settings, _, _ = setup
    me = register(client, "cap@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "d"}, headers=me).json()
    client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=me,
                files=[("files", ("a.png", png_bytes(), "image/png"))])
    body = {"dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "standard"}
    lost = client.post("/api/v1/jobs", json=body, headers=me).json()
    later = client.post("/api/v1/jobs", json={**body, "start_after": "tonight"}, headers=me).json()
    old = utcnow() - timedelta(hours=1)
    with session_factory(settings.db_url)() as session:
        session.execute(update(Job).where(Job.id == lost["id"]).values(
            status=JobStatus.running, attempt=settings.max_attempts, heartbeat_at=old))
        session.execute(update(Job).where(Job.id == later["id"]).values(start_after=old))
        session.commit()
    sent: list[str] = []
    repairs = reconcile(settings, sent.append)
    assert repairs.failed == [lost["id"]] and repairs.started == [later["id"]] and sent == [later["id"]]
    failed = client.get(f"/api/v1/jobs/{lost['id']}", headers=me).json()
    assert failed["status"] == "failed" and "lost 3 times" in failed["error"]
    assert client.get(f"/api/v1/jobs/{later['id']}", headers=me).json()["status"] == "queued"


def test_the_api_requeues_a_lost_workers_job_within_the_timeout_without_any_worker(tmp_path, service_urls,
                                                                                   tiny_sd15):
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 7, LORABAKE_HEARTBEAT_TIMEOUT_S="2",
                              LORABAKE_RECONCILE_EVERY_S="0.5")
    settings = settings_from_env(env)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        me = register(client, "lost@example.com")
        dataset = client.post("/api/v1/datasets", json={"name": "d"}, headers=me).json()
        client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=me,
                    files=[("files", ("a.png", png_bytes(), "image/png"))])
        job = client.post("/api/v1/jobs", headers=me, json={"dataset_id": dataset["id"], "base_model": "tiny-sd15",
                                                            "preset": "standard"}).json()
        lost_at = utcnow()
        with session_factory(settings.db_url)() as session:  # a worker took it, then vanished
            session.execute(update(Job).where(Job.id == job["id"]).values(
                status=JobStatus.running, attempt=1, heartbeat_at=lost_at, worker="gone"))
            session.commit()
        back = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}", headers=me).json())["status"]
                        == "queued" and j, 10, "the API's reconciler")
        assert back["attempt"] == 1 and (utcnow() - lost_at).total_seconds() < 2 + 0.5 + 3
        with session_factory(settings.db_url)() as session:
            assert session.get(Job, job["id"]).sent_at > lost_at  # its train message went out again


def test_each_attempt_trains_in_a_fresh_process_so_precisions_do_not_leak_between_jobs(setup):
    client, settings, env, tmp_path = setup
    me = register(client, "fresh@example.com")
    dataset = dataset_with_images(client, me, 2)
    jobs = [{"id": start_job(client, me, dataset, f"p{i}", 1, mixed_precision=precision)}
            for i, precision in enumerate(("bf16", "no"))]
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        done = [wait_for(lambda j=j: (s := client.get(f"/api/v1/jobs/{j['id']}", headers=me).json())["status"]
                         in ("succeeded", "failed") and s, 180, "the job", describe=worker.log) for j in jobs]
    finally:
        worker.stop()
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], [d["error"] for d in done]
    pids = {next(line for line in d["log_tail"] if line.startswith("attempt 1")).rsplit(" ", 1)[1] for d in done}
    assert len(pids) == 2 and str(worker.process.pid) not in pids


def test_killing_only_the_workers_main_process_leaves_no_training_behind(setup):
    client, settings, env, tmp_path = setup
    me = register(client, "orphan@example.com")
    job = {"id": start_job(client, me, dataset_with_images(client, me, 4, repeats=50), "long", 50)}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        line = wait_for(lambda: next((entry for entry in client.get(f"/api/v1/jobs/{job['id']}", headers=me)
                                      .json()["log_tail"] if entry.startswith("attempt 1")), None),
                        120, "the training process", describe=worker.log)
        trainer_pid = int(line.rsplit(" ", 1)[1])
        os.kill(worker.process.pid, signal.SIGKILL)  # the main process only, not its group
        worker.process.wait(timeout=20)
        wait_for(lambda: not _alive(trainer_pid), 60, "the training process to end with its worker")
    finally:
        worker.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone in all but name
        return stat.read().split()[2] != "Z"
