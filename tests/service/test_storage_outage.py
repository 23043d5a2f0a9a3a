"""The S3 server goes away mid-job: a short outage is waited out and the job succeeds; a longer one interrupts the
job, which resumes from its last stored epoch once storage is back. No endpoint, bucket or key reaches the user."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from api.main import create_app
from core.db import session_factory
from core.models import Epoch, Job, JobStatus
from core.reconcile import reconcile
from core.storage import S3Storage
from core.storage_retry import PatientStorage, StorageUnavailable
from tests.service.conftest import (
    dataset_with_images,
    free_port,
    register,
    s3_env,
    settings_from_env,
    start_job,
    wait_for,
)
from worker.training import run_training


class FlakyS3:
    """A moto S3 server on its own port that can be taken away and brought back (moto keeps its objects)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def up(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def down(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def away_for(self, seconds: float) -> threading.Thread:
        """Down now, back after `seconds`."""
        self.down()
        thread = threading.Timer(seconds, self.up)
        thread.daemon = True
        thread.start()
        return thread


class OutageAtNextCall:
    """A storage whose first call after `armed` is set takes the S3 server away (for `seconds`) before it runs:
    the worker meets the outage on that call however fast or slow the machine is."""

    def __init__(self, inner: S3Storage, s3: FlakyS3, seconds: float, armed: threading.Event) -> None:
        self.inner, self.s3, self.seconds, self.armed = inner, s3, seconds, armed
        self.outage: threading.Thread | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str):  # noqa: ANN204
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with self._lock:
                if self.armed.is_set() and self.outage is None:
                    self.outage = self.s3.away_for(self.seconds)
            return attribute(*args, **kwargs)

        return call


@pytest.fixture
def s3():
    flaky = FlakyS3()
    flaky.up()
    yield flaky
    flaky.down()


@pytest.fixture
def job_on_s3(s3, tmp_path, tiny_sd15):
    env = {**s3_env(s3.url), "LORABAKE_VAR_DIR": str(tmp_path / "var"), "LORABAKE_RECONCILE_IN_API": "false",
           "LORABAKE_STORAGE_RETRY_S": "20"}
    settings = settings_from_env(env)
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    with TestClient(create_app(settings)) as client:
        me = register(client, "outage@example.com")
        return settings, start_job(client, me, dataset_with_images(client, me, 4, repeats=4), "out", 3)


def _first_epoch_stored(settings, job_id: str) -> threading.Event:
    stored = threading.Event()

    def watch() -> None:
        wait_for(lambda: _epochs(settings, job_id), 120, "epoch 1", interval=0.02)
        stored.set()

    threading.Thread(target=watch, daemon=True).start()
    return stored


def _epochs(settings, job_id: str) -> list[int]:
    with session_factory(settings.db_url)() as session:
        return list(session.scalars(select(Epoch.n).where(Epoch.job_id == job_id).order_by(Epoch.n)))


def test_a_short_s3_outage_mid_job_is_waited_out_and_the_job_succeeds(s3, job_on_s3, caplog):
    settings, job_id = job_on_s3
    caplog.set_level("WARNING", logger="core.storage_retry")
    flaky = OutageAtNextCall(S3Storage(settings), s3, 4, armed=_first_epoch_stored(settings, job_id))
    assert run_training(settings, PatientStorage(flaky, budget_s=settings.storage_retry_s), job_id, "w") \
        == JobStatus.succeeded
    assert flaky.outage is not None
    flaky.outage.join(timeout=30)
    assert _epochs(settings, job_id) == [1, 2, 3]
    assert any("storage unreachable" in r.getMessage() for r in caplog.records)  # the outage was met, and waited


def test_a_long_outage_interrupts_the_job_which_resumes_when_storage_is_back(s3, job_on_s3):
    settings, job_id = job_on_s3
    flaky = OutageAtNextCall(S3Storage(settings), s3, 8, armed=_first_epoch_stored(settings, job_id))
    assert run_training(settings, PatientStorage(flaky, budget_s=2), job_id, "w1") == JobStatus.interrupted
    with session_factory(settings.db_url)() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.interrupted and "resumes" in job.error
        assert s3.url not in job.error and settings.s3_bucket not in job.error and "u/" not in job.error
    flaky.outage.join(timeout=30)
    assert reconcile(settings, lambda _: True).requeued == [job_id]
    assert run_training(settings, PatientStorage(S3Storage(settings), budget_s=2), job_id, "w2") \
        == JobStatus.succeeded
    assert _epochs(settings, job_id) == [1, 2, 3]


def test_patient_storage_gives_up_after_its_budget_with_no_endpoint_in_the_message(s3, tmp_path):
    backend = S3Storage(settings_from_env({**s3_env(s3.url), "LORABAKE_VAR_DIR": str(tmp_path)}))
    backend.ensure_bucket()
    s3.down()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as failure:
        PatientStorage(backend, budget_s=1.5).put_bytes("u/1/x.bin", b"x")
    assert 1.0 < time.monotonic() - started < 15 and s3.url not in str(failure.value)
    comes_back = s3.away_for(0)  # already down: back after a moment
    assert PatientStorage(backend, budget_s=30).put_bytes("u/1/x.bin", b"x") == 1
    comes_back.join(timeout=10)
