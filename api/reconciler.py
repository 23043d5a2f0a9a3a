"""The reconciler, run by the API process on a timer: it must not wait behind a training turn on a worker (a worker's
one slot may be busy for hours), so lost jobs are noticed within HEARTBEAT_TIMEOUT_S + RECONCILE_EVERY_S whatever the
workers are doing. Every repair is a conditional statement, so several API processes running it at once is safe."""

from __future__ import annotations

import logging
import threading

from celery import Celery

from core.queue import TRAIN_TASK, send
from core.reconcile import reconcile
from core.settings import Settings

log = logging.getLogger(__name__)


class Reconciler(threading.Thread):
    def __init__(self, settings: Settings, celery: Celery) -> None:
        super().__init__(daemon=True, name="reconciler")
        self.settings, self.celery = settings, celery
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.reconcile_every_s):
            try:
                repairs = reconcile(self.settings, lambda job_id: send(self.celery, TRAIN_TASK, job_id))
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the timer
                log.warning("reconcile pass failed (%s); trying again next period", exc)
                continue
            if repairs.requeued or repairs.failed or repairs.started or repairs.resent:
                log.info("reconciled: %s", repairs)

    def stop(self) -> None:
        self._stop_event.set()
