"""One training attempt in a process of its own: `python -m worker.attempt TRIGGER_ID WORKER_NAME`.

The Celery task starts it and waits, so every attempt gets a fresh interpreter (accelerate's process-wide state,
CUDA memory, library caches all start clean) and a crash in the trainer cannot take the worker down. The child dies
with its parent (PR_SET_PDEATHSIG), so killing the worker leaves no orphan training on the GPU.
"""

from __future__ import annotations

import subprocess
import sys

from core.settings import Settings
from trainer.lifetime import die_with_parent

STATUS_PREFIX = "attempt-status: "


def run_attempt(settings: Settings, trigger_id: str, worker: str) -> str:
    """Runs `worker.attempt` for one train message and returns the final status it reports (its log goes to the
    worker's own stderr)."""
    done = subprocess.run([sys.executable, "-m", "worker.attempt", trigger_id, worker], stdout=subprocess.PIPE,
                          text=True, timeout=settings.job_time_limit_s + 600, preexec_fn=die_with_parent)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(STATUS_PREFIX):
            return line.removeprefix(STATUS_PREFIX)
    raise RuntimeError(f"the training process ended with code {done.returncode} and no status")


def main(argv: list[str]) -> int:
    import logging

    from core.settings import get_settings
    from core.storage import storage_for
    from core.storage_retry import PatientStorage
    from worker.training import run_training

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    status = run_training(settings, PatientStorage(storage_for(settings), settings.storage_retry_s), argv[0],
                          argv[1])
    print(STATUS_PREFIX + status, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
