"""Trainer callbacks that turn a run into service state: heartbeats, progress, uploads, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import select, update

from core import keys
from core.db import session_factory
from core.events import JobNotices
from core.jobs import heartbeat
from core.models import Epoch, Job
from core.storage import ReadMeter, Storage
from trainer.callbacks import Callbacks, EpochSaved, PreviewsReady, Progress

LOG_LINES = 50
HISTORY_POINTS = 600  # chart points kept per job; when full, every other one is dropped


class Heartbeat(threading.Thread):
    """Beats while the job runs, also through long phases without steps (loading, caching, previews)."""

    def __init__(self, db_url: str, job_id: str, interval_s: float, notices: JobNotices) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.db_url, self.job_id, self.interval_s, self.notices = db_url, job_id, interval_s, notices
        self.cancel_requested = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval_s):
            self.beat()

    def beat(self, **progress: object) -> None:
        with session_factory(self.db_url)() as session:
            if heartbeat(session, self.job_id, **progress):
                self.cancel_requested.set()
        if progress:
            self.notices.changed(self.job_id)

    def stop(self) -> None:
        self._done.set()


class ServiceCallbacks(Callbacks):
    def __init__(self, db_url: str, job: Job, storage: Storage, beat: Heartbeat,
                 progress_every_s: float = 1.0) -> None:
        self.db_url, self.job_id, self.user_id = db_url, job.id, job.owner_id
        self.storage, self.beat = storage, beat
        self.progress_every_s = progress_every_s
        self._last_progress = 0.0
        self._state_key: str | None = job.state_key
        self.logs: list[str] = list(job.log_tail)
        self.history: list[list[float]] = list(job.history)
        self.saved_epochs: list[int] = []

    def on_progress(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last_progress >= self.progress_every_s or p.step == p.total_steps:
            self._last_progress = now
            self.history = [point for point in self.history if point[0] < p.step] + [[p.step, p.loss, p.lr]]
            if len(self.history) > HISTORY_POINTS:
                self.history = self.history[::2]
            self.beat.beat(step=p.step, total_steps=p.total_steps, loss=p.loss, lr=p.lr, eta_s=p.eta_seconds,
                           history=self.history)

    def on_epoch_saved(self, saved: EpochSaved) -> None:
        """Upload first, then the row: an epoch row always points at a stored file."""
        key = keys.epoch_file(self.user_id, self.job_id, saved.epoch, saved.path.suffix.lstrip("."))
        with saved.path.open("rb") as handle:
            meter = ReadMeter(handle, sha256=True)
            self.storage.put_file(key, meter)
        size, digest = meter.size, meter.hexdigest()
        with session_factory(self.db_url)() as session:
            existing = session.scalar(select(Epoch).where(Epoch.job_id == self.job_id, Epoch.n == saved.epoch))
            if existing is None:
                session.add(Epoch(job_id=self.job_id, n=saved.epoch, file_key=key, size=size, sha256=digest,
                                  loss=saved.mean_loss, previews=[]))
            else:  # a resumed attempt re-saved this epoch
                existing.file_key, existing.size, existing.sha256, existing.loss = key, size, digest, saved.mean_loss
            session.commit()
        self.saved_epochs.append(saved.epoch)
        self.beat.notices.changed(self.job_id)
        self.on_log(f"epoch {saved.epoch} stored ({size / 1e6:.2f} MB)")

    def on_previews(self, previews: PreviewsReady) -> None:
        if previews.epoch == 0:
            return
        uploaded = []
        for path in previews.paths:
            prompt, k = _prompt_and_index(path)
            key = keys.preview(self.user_id, self.job_id, previews.epoch, prompt, k)
            self.storage.put_bytes(key, path.read_bytes(), "image/png")
            uploaded.append(key)
        with session_factory(self.db_url)() as session:
            session.execute(update(Epoch).where(Epoch.job_id == self.job_id, Epoch.n == previews.epoch)
                            .values(previews=uploaded))
            session.commit()
        self.beat.notices.changed(self.job_id)

    def on_state_saved(self, folder: Path, epoch: int) -> None:
        prefix = keys.state(self.user_id, self.job_id, f"epoch-{epoch:06d}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with path.open("rb") as handle:
                self.storage.put_file(prefix + path.relative_to(folder).as_posix(), handle)
        with session_factory(self.db_url)() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(state_key=prefix))
            session.commit()
        if self._state_key and self._state_key != prefix:
            self.storage.delete_prefix(self._state_key)
        self._state_key = prefix

    def on_log(self, message: str) -> None:
        self.logs = (self.logs + [message])[-LOG_LINES:]
        with session_factory(self.db_url)() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(log_tail=self.logs))
            session.commit()
        self.beat.notices.changed(self.job_id)

    def should_stop(self) -> bool:
        return self.beat.cancel_requested.is_set()


def _prompt_and_index(path: Path) -> tuple[int, int]:
    """`{name}_e{epoch:06d}_{prompt:02d}_{k}.png` → (prompt, k)."""
    parts = path.stem.split("_")
    return int(parts[-2]), int(parts[-1])
