"""`make run`: migrate, start one Celery worker (with the periodic reconciler) and the API; Ctrl-C stops both."""

from __future__ import annotations

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


def main() -> int:
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)  # runs the migrations before anything else starts
    host, port = os.environ.get("LORABAKE_HOST", "127.0.0.1"), int(os.environ.get("LORABAKE_PORT", "8000"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-B", "-Q", "train,gpu-light,cpu", "-c", "1",
         "--loglevel", "INFO", "-s", str(settings.var_dir / "celerybeat-schedule")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    print(f"\n  lorabake is running at http://{host}:{port}/  (API docs: http://{host}:{port}/api/v1/docs)\n"
          "  Ctrl-C stops the API and the worker.\n", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
