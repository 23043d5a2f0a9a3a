"""Chaos, bounded: three jobs on PostgreSQL + Redis + S3 while workers are killed mid-run, one freezes past the
heartbeat timeout and comes back, and the S3 server goes away for longer than the workers' retry budget.

Every job must end succeeded, with each epoch stored exactly once, every stored file matching its row, and no
attempt's file counted for another attempt (fenced writes)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time

import httpx
from sqlalchemy import select

from core.db import session_factory
from core.models import Epoch, Job
from core.storage import S3Storage
from tests.service.conftest import (
    LiveServer,
    WorkerProcess,
    dataset_with_images,
    production_like_env,
    register,
    s3_env,
    settings_from_env,
    start_job,
    wait_for,
)
from tests.service.test_storage_outage import FlakyS3

JOBS, EPOCHS = 3, 3


def test_jobs_survive_killed_frozen_workers_and_a_storage_outage(tmp_path, service_urls, tiny_sd15):
    s3 = FlakyS3()
    s3.up()
    env = production_like_env(tmp_path, service_urls, tiny_sd15, 8, **s3_env(s3.url), LORABAKE_HEARTBEAT_S="0.3",
                              LORABAKE_HEARTBEAT_TIMEOUT_S="3", LORABAKE_RECONCILE_EVERY_S="0.5",
                              LORABAKE_STORAGE_RETRY_S="2", LORABAKE_MAX_ATTEMPTS="20",
                              LORABAKE_RESEND_AFTER_S="5")
    settings = settings_from_env(env)
    rng = random.Random(7)
    workers: list[WorkerProcess] = []
    try:
        with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            me = register(client, "chaos@example.com")
            dataset = dataset_with_images(client, me, 4, repeats=6)
            ids = [start_job(client, me, dataset, f"c{i}", EPOCHS) for i in range(JOBS)]

            def states() -> list[str]:
                return [client.get(f"/api/v1/jobs/{i}", headers=me).json()["status"] for i in ids]

            struck: set[tuple[str, int]] = set()  # (job, attempt): the runs an event already hit

            def fresh_run() -> tuple[str, int] | str | None:
                """A job running in an attempt no event hit yet; "done" once every job succeeded."""
                jobs = [client.get(f"/api/v1/jobs/{i}", headers=me).json() for i in ids]
                if all(j["status"] == "succeeded" for j in jobs):
                    return "done"
                return next(((j["id"], j["attempt"]) for j in jobs
                             if j["status"] == "running" and (j["id"], j["attempt"]) not in struck), None)

            def attempt_of(job_id: str) -> int:
                return client.get(f"/api/v1/jobs/{job_id}", headers=me).json()["attempt"]

            def start_worker() -> WorkerProcess:
                worker = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log").start()
                workers.append(worker)
                return worker

            worker = start_worker()
            happened: list[str] = []
            # each kind once, in this order; each strikes a run seen going (an event, not a lucky clock), somewhere in
            # it: mid-epoch, mid-upload or between epochs
            for event in ("kill", "freeze", "outage"):
                run = wait_for(fresh_run, 180, f"a fresh run to {event}")
                if run == "done":
                    break
                struck.add(run)
                time.sleep(rng.uniform(0.3, 1.5))
                if event == "freeze":  # frozen past the timeout: a new worker takes over, then it wakes superseded
                    os.killpg(worker.process.pid, signal.SIGSTOP)
                    frozen, worker = worker, start_worker()
                    wait_for(lambda hit=run: attempt_of(hit[0]) > hit[1], 120, "another attempt to take the frozen job")
                    os.killpg(frozen.process.pid, signal.SIGCONT)
                elif event == "outage":  # longer than the workers' retry budget: jobs are interrupted, then resume
                    s3.away_for(4).join()
                else:  # killed outright, wherever it was
                    worker.kill()
                    worker = start_worker()
                happened.append(event)

            def describe() -> str:
                jobs = [client.get(f"/api/v1/jobs/{i}", headers=me).json() for i in ids]
                summary = [(j["status"], j["attempt"], j["error"], j["log_tail"][-3:]) for j in jobs]
                return f"{summary}\n" + "\n".join(w.log()[-1500:] for w in workers[-2:])

            final = wait_for(lambda: (s := states()).count("succeeded") == JOBS and s, 240, "every job",
                             describe=describe)
            assert final == ["succeeded"] * JOBS
            assert set(happened) >= {"kill", "freeze", "outage"}, happened
        storage = S3Storage(settings)
        with session_factory(settings.db_url)() as session:
            for job_id in ids:
                epochs = list(session.scalars(select(Epoch).where(Epoch.job_id == job_id).order_by(Epoch.n)))
                assert [e.n for e in epochs] == list(range(1, EPOCHS + 1))  # each stored exactly once
                for epoch in epochs:
                    assert hashlib.sha256(storage.get_bytes(epoch.file_key)).hexdigest() == epoch.sha256
                    assert epoch.file_key.endswith(f"-a{_attempt_of(epoch.file_key)}.safetensors")
                job = session.get(Job, job_id)
                assert all(_attempt_of(e.file_key) <= job.attempt for e in epochs)
    finally:
        for worker in workers:
            if worker.process and worker.process.poll() is None:
                os.killpg(worker.process.pid, signal.SIGCONT)
            worker.kill()
        s3.down()


def _attempt_of(key: str) -> int:
    return int(key.rsplit("-a", 1)[1].split(".", 1)[0])
