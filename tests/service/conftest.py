"""Real services for the service tests: PostgreSQL, Redis, moto's S3 server, uvicorn, a Celery worker process."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.db import fresh_database

ROOT = Path(__file__).resolve().parents[2]
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def service_urls() -> dict[str, str]:
    """Starts (installing if needed) PostgreSQL and Redis via scripts/services.sh; reuses them when running."""
    if "LORABAKE_TEST_POSTGRES_URL" not in os.environ:
        out = subprocess.run([str(ROOT / "scripts" / "services.sh")], check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            key, _, value = line.partition("=")
            os.environ[key] = value
    return {"postgres": os.environ["LORABAKE_TEST_POSTGRES_URL"], "redis": os.environ["LORABAKE_TEST_REDIS_URL"]}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    return fresh_database(request.getfixturevalue("service_urls")["postgres"])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    return {"LORABAKE_STORAGE_BACKEND": "s3", "LORABAKE_S3_ENDPOINT_URL": endpoint,
            "LORABAKE_S3_BUCKET": f"b{uuid.uuid4().hex[:10]}", "LORABAKE_S3_ACCESS_KEY": "testing",
            "LORABAKE_S3_SECRET_KEY": "testing"}


def settings_from_env(env: dict[str, str]):  # noqa: ANN201 - core.settings.Settings
    from core.settings import Settings

    def value(text: str) -> object:  # complex settings come as JSON, as the environment gives them
        return json.loads(text) if text[:1] in "[{" else text

    return Settings(**{k.removeprefix("LORABAKE_").lower(): value(v) for k, v in env.items()})


def production_like_env(tmp_path: Path, service_urls: dict[str, str], tiny_model: Path, redis_db: int,
                        **extra: str) -> dict[str, str]:
    """LORABAKE_* for a worker and an API sharing a fresh PostgreSQL database, an emptied Redis db and the tiny
    model; `extra` adds or overrides variables."""
    import shutil

    import redis

    var = tmp_path / "var"
    shutil.copytree(tiny_model, var / "models" / "tiny-sd15")
    env = {"LORABAKE_VAR_DIR": str(var), "LORABAKE_DATABASE_URL": fresh_database(service_urls["postgres"]),
           "LORABAKE_REDIS_URL": service_urls["redis"].rsplit("/", 1)[0] + f"/{redis_db}", **extra}
    redis.Redis.from_url(env["LORABAKE_REDIS_URL"]).flushdb()
    return env


def png_bytes(size: tuple[int, int] = (96, 96), color: tuple[int, int, int] = (200, 30, 30), seed: int = 0,
              fmt: str = "PNG") -> bytes:
    """A small picture with a shape on it, different for each seed."""
    from PIL import ImageDraw

    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    x = 8 + (seed * 13) % max(1, size[0] - 40)
    draw.ellipse((x, 10, x + 30, 40), fill=((seed * 50) % 255, 255 - (seed * 30) % 255, 90))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


class LiveServer:
    """The API under uvicorn on a real port, in a thread of the test process."""

    def __init__(self, settings) -> None:  # noqa: ANN001
        import uvicorn

        from api.main import create_app

        self.app = create_app(settings)
        self.app.state.sse_interval_s = 0.2
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ApiProcess:
    """The API as production runs it: a uvicorn process of its own (its app made from LORABAKE_* env)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ApiProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "warning"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"{self.url}/api/v1/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, "the API process to answer")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class WorkerProcess:
    """A real `celery worker` process (prefork, concurrency 1) with the given LORABAKE_* environment."""

    def __init__(self, env: dict[str, str], log_path: Path, queues: str = "train,gpu-light,cpu") -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.queues = queues
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", self.queues, "-c", "1",
             "--loglevel", "INFO", "-n", f"test-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL to the worker and its pool children at once, as when a machine dies."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def register(client: httpx.Client, email: str, password: str = "correct horse battery") -> dict[str, str]:
    assert client.post("/api/v1/auth/register", json={"email": email, "password": password}).status_code == 201
    token = client.post("/api/v1/auth/login", data={"username": email, "password": password}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def dataset_with_images(client, headers: dict[str, str], images: int, repeats: int = 1) -> dict:  # noqa: ANN001
    """A dataset (over HTTP) holding `images` small pictures, each used `repeats` times per epoch."""
    dataset = client.post("/api/v1/datasets", json={"name": "d", "default_repeats": repeats}, headers=headers).json()
    client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=headers,
                files=[("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(images)])
    return dataset


def start_job(client, headers: dict[str, str], dataset: dict, name: str, epochs: int, **params: object) -> str:  # noqa: ANN001
    """A standard-preset job on tiny-sd15 without previews; returns its id."""
    answer = client.post("/api/v1/jobs", headers=headers, json={
        "dataset_id": dataset["id"], "base_model": "tiny-sd15", "preset": "standard", "name": name,
        "params": {"max_train_epochs": epochs, "sample_every_n_epochs": None, **params}})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25, describe=lambda: ""):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}\n{describe()}")


def _tiny(tmp_path_factory, family: str) -> Path:
    from trainer.families.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("base") / f"tiny-{family}", family)


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, "sd15")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, "flux")


@pytest.fixture(scope="session")
def tiny_zimage(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, "zimage")


@pytest.fixture(scope="session")
def tiny_flux2(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, "flux2")


@pytest.fixture(scope="session")
def tiny_qwen_image(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory, "qwen_image")


class EmbeddedStack:
    """`make run`'s stack (scripts/run_embedded.py: SQLite, no servers, one worker) on a free port; tiny models
    beyond tiny-sd15 (e.g. tiny-flux) are offered when given."""

    def __init__(self, tmp_path: Path, tiny_model: Path, *more_models: Path, **env: str) -> None:
        import shutil

        self.env = env  # LORABAKE_* settings for this stack

        self.var = tmp_path / "var"
        shutil.copytree(tiny_model, self.var / "models" / "tiny-sd15")
        for model in more_models:
            shutil.copytree(model, self.var / "models" / model.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "run.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> EmbeddedStack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORABAKE_")}
        env.update(LORABAKE_VAR_DIR=str(self.var), LORABAKE_PORT=str(self.port), LORABAKE_HEARTBEAT_S="1",
                   LORABAKE_FETCH_TAGGER="0", **self.env)  # no hub here; tests install their own tiny tagger
        self.process = subprocess.Popen([sys.executable, "scripts/run_embedded.py"], cwd=ROOT, env=env,
                                        stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/api/v1/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "the embedded service", describe=self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # as Ctrl-C reaches `make run`'s whole foreground group
        self.process.wait(timeout=45)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def leftovers(self) -> list[str]:
        return subprocess.run(["pgrep", "-f", str(self.var)], capture_output=True, text=True).stdout.split()


def public_model(client, settings, owner: dict[str, str], name: str = "shown") -> str:  # noqa: ANN001
    """A public model of `owner` (over HTTP: a dataset and a job; in the database: the job succeeded with one
    stored epoch, published); its id."""
    from core.db import session_factory
    from core.models import Epoch, Job, JobStatus, PublishedModel

    job_id = start_job(client, owner, dataset_with_images(client, owner, 2), name, 1)
    with session_factory(settings.db_url)() as session:
        job = session.get(Job, job_id)
        job.status = JobStatus.succeeded
        epoch = Epoch(job_id=job_id, n=1, file_key="k", size=1, sha256="0" * 64, previews=[])
        session.add(epoch)
        session.flush()
        model = PublishedModel(owner_id=job.owner_id, job_id=job_id, epoch_id=epoch.id, name=name,
                               visibility="public", family="sd15", keywords=name)
        session.add(model)
        session.commit()
        return model.id
