"""The Celery worker entry point: `celery -A worker.app worker -Q train,gpu-light,cpu -c 1`.

Nothing here touches CUDA: torch is imported inside the tasks, in the forked child, never in the parent."""

from __future__ import annotations

import os

from core.queue import make_celery
from core.settings import get_settings

settings = get_settings()
if settings.gpu_ids and "CUDA_VISIBLE_DEVICES" not in os.environ:
    os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpu_ids  # before any child process could touch CUDA
celery = make_celery(settings)
celery.conf.update(include=["worker.tasks"])
