"""`make run`: migrate, start one Celery worker and the API (which runs the periodic reconciler); Ctrl-C stops both."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.main import create_app  # noqa: E402
from core.settings import get_settings  # noqa: E402


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which would end this script before it stops
    the worker; here the handlers installed in main() only ask the server to exit."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def main() -> int:
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)  # runs the migrations before anything else starts
    host, port = os.environ.get("LORABAKE_HOST", "127.0.0.1"), int(os.environ.get("LORABAKE_PORT", "8000"))
    worker = subprocess.Popen(
        # no -B: the API runs the reconciler on its own timer, so no beat process can be orphaned
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "train,gpu-light,cpu", "-c", "1",
         "--loglevel", "INFO"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        # Its own session: Ctrl-C reaches only this script, which then stops the worker in order. A signal to the
        # pool children directly would leave the worker's main process waiting for them forever.
        start_new_session=True,
    )
    print(f"\n  lorabake is running at http://{host}:{port}/  (API docs: http://{host}:{port}/api/v1/docs)\n"
          "  Ctrl-C stops the API and the worker.\n", flush=True)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: a running task finishes or goes back to the queue
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
