"""The Celery worker entry point: `celery -A worker.app worker -Q train,gpu-light,cpu -c 1`.

Nothing here touches CUDA: torch is imported inside the tasks, in the forked child, never in the parent."""

from __future__ import annotations

import os

from celery.signals import worker_ready, worker_shutdown

from core.queue import make_celery
from core.settings import get_settings
from worker.presence import Presence

settings = get_settings()
if settings.gpu_ids and "CUDA_VISIBLE_DEVICES" not in os.environ:
    os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpu_ids  # before any child process could touch CUDA
celery = make_celery(settings)
celery.conf.update(include=["worker.tasks"])
_presence: list[Presence] = []


@worker_ready.connect
def _report_presence(sender, **_: object) -> None:  # noqa: ANN001 - celery's Consumer
    queues = sorted(queue.name for queue in sender.task_consumer.queues)
    _presence.append(Presence(settings, sender.hostname, queues))
    _presence[-1].start()


@worker_shutdown.connect
def _leave(**_: object) -> None:
    for presence in _presence:
        presence.stop()
