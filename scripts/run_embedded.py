"""`make run`: migrate, start the Celery workers and the API (which runs the periodic reconciler); Ctrl-C stops all.

Training has a worker of its own, so auto-tagging, crops and "test an epoch" never wait behind a training run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.main import create_app  # noqa: E402
from core.queue import declare_queues, make_celery  # noqa: E402
from core.settings import get_settings  # noqa: E402
from core.taggers import DEFAULT_HUB_TAGGER, fetch_hub_tagger  # noqa: E402

WORKERS = {"training": "train", "tasks": "gpu-light,cpu"}  # name → the queues it serves, one at a time


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which would end this script before it stops
    the workers; here the handlers installed in main() only ask the server to exit. The address is printed last,
    once the server listens, below the start-up lines."""

    banner = ""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        print(self.banner, flush=True)


def start_worker(name: str, queues: str) -> subprocess.Popen:
    return subprocess.Popen(
        # no -B: the API runs the reconciler on its own timer, so no beat process can be orphaned; --quiet and
        # warnings only: no banner in the way of the address
        [sys.executable, "-m", "celery", "-A", "worker.app", "--quiet", "worker", "-Q", queues, "-c", "1",
         "-n", f"{name}@%h", "--loglevel", "WARNING"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        # Its own session: Ctrl-C reaches only this script, which then stops the workers in order. A signal to the
        # pool children directly would leave a worker's main process waiting for them forever.
        start_new_session=True,
    )


def offer_default_tagger() -> None:
    """Fetches sd-scripts' default WD14 tagger when the network allows (LORABAKE_FETCH_TAGGER=0: never) and offers
    it to the API and the workers, which read it from the environment; without it, users are told on the page."""
    if os.environ.get("LORABAKE_FETCH_TAGGER", "1") == "0" or "LORABAKE_TAGGERS_FROM_HUB" in os.environ:
        return
    ready, line = fetch_hub_tagger()
    print(f"  {line}", flush=True)
    if ready:
        os.environ["LORABAKE_TAGGERS_FROM_HUB"] = json.dumps([DEFAULT_HUB_TAGGER])


def main() -> int:
    offer_default_tagger()
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)  # runs the migrations before anything else starts
    declare_queues(make_celery(settings))  # the broker's queues exist before the workers race to make them
    host, port = os.environ.get("LORABAKE_HOST", "127.0.0.1"), int(os.environ.get("LORABAKE_PORT", "8000"))
    workers = [start_worker(name, queues) for name, queues in WORKERS.items()]
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    server.banner = (f"\n  lorabake is running at http://{host}:{port}/  (API docs: http://{host}:{port}/api/v1/docs)\n"
                     "  Ctrl-C stops the API and the workers.\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: a running task finishes or goes back to the queue
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
