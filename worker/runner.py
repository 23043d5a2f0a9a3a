"""Trainer callbacks that turn a run into service state: heartbeats, progress, uploads, cancel."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from core import credits, keys
from core.db import session_factory
from core.events import JobNotices
from core.jobs import beat, fence
from core.models import Epoch, Job
from core.settings import Settings
from core.storage import Storage
from trainer.training.callbacks import Callbacks, EpochSaved, PreviewsReady, Progress
from worker.screening import Shot, screen

log = logging.getLogger(__name__)
LOG_LINES = 50
HISTORY_POINTS = 600  # chart points kept per job; when full, every other one is dropped


class AttemptSuperseded(RuntimeError):
    """A newer attempt owns the job (this worker froze past the heartbeat timeout): this one must write nothing."""


class Heartbeat(threading.Thread):
    """Beats while the attempt runs, also through long phases without steps (loading, caching, previews). Database
    errors are retried with backoff, never fatal to the thread; a beat that finds the job in a newer attempt (or
    ended) marks this attempt lost, and the trainer stops at its next step."""

    def __init__(self, db_url: str, job_id: str, attempt: int, interval_s: float, notices: JobNotices) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.db_url, self.job_id, self.attempt, self.interval_s = db_url, job_id, attempt, interval_s
        self.notices = notices
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self.failures = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(min(self.interval_s * 2**self.failures, 60.0)):
            try:
                self.beat()
                self.failures = 0
            except SQLAlchemyError as exc:
                self.failures = min(self.failures + 1, 6)
                log.warning("heartbeat of job %s failed (%s); retrying", self.job_id, exc)

    def beat(self, **progress: object) -> None:
        with session_factory(self.db_url)() as session:
            answer = beat(session, self.job_id, self.attempt, **progress)
            session.commit()
        if not answer.mine:
            self.lost.set()
        elif answer.cancel_requested:
            self.cancel_requested.set()
        if progress:
            self.notices.changed(self.job_id)

    def stop(self) -> None:
        self._done.set()


class ServiceCallbacks(Callbacks):
    """Every write is fenced by the attempt number. An epoch's row, its charge and the job's state_key are written
    together in one transaction after both the epoch file and its training state are stored, so a resumed attempt
    always starts after the last stored epoch and never stores (or charges) an epoch twice."""

    def __init__(self, settings: Settings, job: Job, storage: Storage, beat: Heartbeat,
                 progress_every_s: float = 1.0) -> None:
        self.settings, self.db_url = settings, settings.db_url
        self.job_id, self.user_id, self.attempt = job.id, job.owner_id, beat.attempt
        self.storage, self.beat = storage, beat
        self.progress_every_s = progress_every_s
        self._last_progress = 0.0
        self._step_clock = 0.0
        self._state_key: str | None = job.state_key
        self._pending: dict[int, dict] = {}  # epoch → its stored file, waiting for its state
        self.logs: list[str] = list(job.log_tail)
        self.history: list[list[float]] = list(job.history)
        self.saved_epochs: list[int] = []
        self.first_step_at: float | None = None  # time.monotonic() when the first step of this attempt ended
        self.step_intervals: list[float] = []  # seconds between consecutive steps (epoch ends included)

    def on_progress(self, p: Progress) -> None:
        now = time.monotonic()
        if self.first_step_at is None:
            self.first_step_at = now
        else:
            self.step_intervals.append(now - self._step_clock)
        self._step_clock = now
        if now - self._last_progress >= self.progress_every_s or p.step == p.total_steps:
            self._last_progress = now
            self.history = [point for point in self.history if point[0] < p.step] + [[p.step, p.loss, p.lr]]
            if len(self.history) > HISTORY_POINTS:
                self.history = self.history[::2]
            self.beat.beat(step=p.step, total_steps=p.total_steps, loss=p.loss, lr=p.lr, eta_s=p.eta_seconds,
                           history=self.history)

    def on_epoch_saved(self, saved: EpochSaved) -> None:
        """The file goes to storage now (under this attempt's own key); its row waits for the epoch's state."""
        key = keys.epoch_file(self.user_id, self.job_id, saved.epoch, saved.path.suffix.lstrip("."), self.attempt)
        with saved.path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            handle.seek(0)
            self.storage.put_file(key, handle)  # a retried upload starts the file again
        self._pending[saved.epoch] = {"file_key": key, "size": saved.path.stat().st_size, "sha256": digest,
                                      "loss": saved.mean_loss, "validation_loss": saved.validation_loss}

    def on_state_saved(self, folder: Path, epoch: int) -> None:
        prefix = keys.state(self.user_id, self.job_id, f"a{self.attempt}-epoch-{epoch:06d}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with path.open("rb") as handle:
                self.storage.put_file(prefix + path.relative_to(folder).as_posix(), handle)
        stored = self._pending.pop(epoch, None)
        with session_factory(self.db_url)() as session:
            if not fence(session, self.job_id, self.attempt):
                session.rollback()
                self._discard(prefix, stored)
                raise AttemptSuperseded(f"job {self.job_id}: attempt {self.attempt} was superseded")
            if stored is not None:
                existing = session.scalar(select(Epoch).where(Epoch.job_id == self.job_id, Epoch.n == epoch))
                if existing is None:
                    session.add(Epoch(job_id=self.job_id, n=epoch, previews=[], **stored))
                else:  # written by an older version that stored rows before states
                    for name, value in stored.items():
                        setattr(existing, name, value)
                credits.charge_epoch(session, self.job_id, epoch)  # fenced by the job's charged_epochs too
            session.execute(update(Job).where(Job.id == self.job_id).values(state_key=prefix))
            session.commit()
        if self._state_key and self._state_key != prefix:
            self.storage.delete_prefix(self._state_key)
        self._state_key = prefix
        if stored is not None:
            self.saved_epochs.append(epoch)
            self.beat.notices.changed(self.job_id)
            self.on_log(f"epoch {epoch} stored ({stored['size'] / 1e6:.2f} MB)")

    def _discard(self, prefix: str, stored: dict | None) -> None:
        self.storage.delete_prefix(prefix)
        if stored is not None:
            self.storage.delete(stored["file_key"])

    def on_previews(self, previews: PreviewsReady) -> None:
        if previews.epoch == 0:
            return
        uploaded = []
        for path in previews.paths:
            prompt, k = _prompt_and_index(path)
            key = keys.preview(self.user_id, self.job_id, previews.epoch, prompt, k)
            self.storage.put_bytes(key, path.read_bytes(), "image/png")
            uploaded.append(key)
        shots = [Shot(key, f"epoch {previews.epoch} preview {k + 1}", _picture(path), self.job_id)
                 for k, (key, path) in enumerate(zip(uploaded, previews.paths, strict=True))]
        with session_factory(self.db_url)() as session:
            if fence(session, self.job_id, self.attempt):
                session.execute(update(Epoch).where(Epoch.job_id == self.job_id, Epoch.n == previews.epoch)
                                .values(previews=uploaded))
                screen(session, self.settings, self.user_id, "preview", shots)
            session.commit()
        self.beat.notices.changed(self.job_id)

    def on_log(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)  # the worker's own log has every line
        self.logs = (self.logs + [message])[-LOG_LINES:]
        with session_factory(self.db_url)() as session:
            session.execute(update(Job).where(Job.id == self.job_id, Job.attempt == self.attempt)
                            .values(log_tail=self.logs))
            session.commit()
        self.beat.notices.changed(self.job_id)

    def previews_missing(self, epoch: int) -> bool:
        with session_factory(self.db_url)() as session:
            stored = session.scalar(select(Epoch.previews).where(Epoch.job_id == self.job_id, Epoch.n == epoch))
        return stored is not None and not stored

    def should_stop(self) -> bool:
        return self.beat.cancel_requested.is_set() or self.beat.lost.is_set()


def _picture(path: Path) -> PILImage.Image:
    with PILImage.open(path) as picture:
        return picture.convert("RGB")


def _prompt_and_index(path: Path) -> tuple[int, int]:
    """`{name}_e{epoch:06d}_{prompt:02d}_{k}.png` → (prompt, k)."""
    parts = path.stem.split("_")
    return int(parts[-2]), int(parts[-1])
