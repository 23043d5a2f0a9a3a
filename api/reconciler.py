"""The reconciler, run by the API process on a timer: it must not wait behind a training turn on a worker (a worker's
one slot may be busy for hours), so lost jobs are noticed within HEARTBEAT_TIMEOUT_S + RECONCILE_EVERY_S whatever the
workers are doing. Every repair is a conditional statement, so several API processes running it at once is safe."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from celery import Celery

from core.db import session_factory
from core.orphans import sweep_orphans
from core.queue import SCREEN_TASK, TRAIN_TASK, WEBHOOK_TASK, send
from core.reconcile import reconcile
from core.settings import Settings
from core.storage import LocalStorage, Storage

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600.0  # also the age past which a partial upload is taken as abandoned


class Reconciler(threading.Thread):
    def __init__(self, settings: Settings, celery: Celery, storage: Storage) -> None:
        super().__init__(daemon=True, name="reconciler")
        self.settings, self.celery, self.storage = settings, celery, storage
        self._stop_event = threading.Event()

    def run(self) -> None:
        self.sweep()
        last_sweep = time.monotonic()
        while not self._stop_event.wait(self.settings.reconcile_every_s):
            if time.monotonic() - last_sweep > SWEEP_EVERY_S:
                self.sweep()
                last_sweep = time.monotonic()
            try:
                repairs = reconcile(self.settings, lambda job_id: send(self.celery, TRAIN_TASK, job_id),
                                    lambda job_id: send(self.celery, WEBHOOK_TASK, job_id),
                                    lambda screening_id: send(self.celery, SCREEN_TASK, screening_id))
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the timer
                log.warning("reconcile pass failed (%s); trying again next period", exc)
                continue
            if repairs.requeued or repairs.failed or repairs.started or repairs.resent or repairs.rescreened:
                log.info("reconciled: %s", repairs)

    def sweep(self) -> None:
        """Partial files that killed writers left in local storage (S3 uploads are atomic), and stored job files
        that no row refers to (a worker died between an upload and its commit)."""
        if isinstance(self.storage, LocalStorage):
            with contextlib.suppress(OSError):
                if removed := self.storage.sweep_partial_uploads(SWEEP_EVERY_S):
                    log.info("removed %d unfinished upload file(s)", removed)
        try:
            with session_factory(self.settings.db_url)() as session:
                if removed := sweep_orphans(session, self.storage, SWEEP_EVERY_S):
                    log.info("removed %d stored file(s) that no job refers to", removed)
        except Exception as exc:  # noqa: BLE001 - storage or database down: the next sweep tries again
            log.warning("orphan sweep failed (%s); trying again next hour", exc)

    def stop(self) -> None:
        self._stop_event.set()
