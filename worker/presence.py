"""A worker tells the database it is there: its name, queues and GPUs, every heartbeat, from a thread of its main
process, so the console shows each worker and how long since it was last heard from. Nothing here imports torch:
the GPUs are read with nvidia-smi, when there is one."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError

from core.db import session_factory
from core.models import Worker, utcnow
from core.settings import Settings

log = logging.getLogger(__name__)
GPU_QUERY = "index,name,memory.total,memory.used"


def gpus() -> list[dict[str, object]]:
    """Each visible GPU: index, name, total and used memory in MB; [] without an NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"], check=True,
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return []
    found = []
    for line in out.strip().splitlines():
        index, name, total, used = (part.strip() for part in line.split(","))
        found.append({"index": int(index), "name": name, "memory_total_mb": int(total), "memory_used_mb": int(used)})
    return found


def owned_gpus(settings: Settings) -> list[dict[str, object]]:
    """The GPUs this worker trains on, as it reports them: the declared ones (gpu_memory_mib), else the GPUs
    nvidia-smi sees, only those in gpu_ids when it is set, in its order (the order the processes use them)."""
    if settings.gpu_memory_mib:
        return [{"index": i, "name": "declared", "memory_total_mb": mib, "memory_used_mb": 0}
                for i, mib in enumerate(settings.gpu_memory_mib)]
    found = gpus()
    if not settings.gpu_ids.strip():
        return found
    by_index = {gpu["index"]: gpu for gpu in found}
    return [by_index[int(i)] for i in settings.gpu_ids.split(",") if i.strip().isdigit() and int(i) in by_index]


class Presence(threading.Thread):
    def __init__(self, settings: Settings, name: str, queues: list[str]) -> None:
        super().__init__(daemon=True, name="presence")
        self.settings, self.worker_name, self.queues = settings, name, queues
        self.started_at = utcnow()
        self._done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.report()
            except SQLAlchemyError as exc:
                log.warning("could not report this worker's presence: %s", exc)
            if self._done.wait(self.settings.heartbeat_s):
                return

    def report(self) -> None:
        with session_factory(self.settings.db_url)() as session:
            session.merge(Worker(name=self.worker_name, queues=self.queues, gpus=owned_gpus(self.settings),
                                 started_at=self.started_at,
                                 heartbeat_at=utcnow()))
            session.commit()

    def stop(self) -> None:
        """Leaves the list: a worker shut down on purpose is not a lost one."""
        self._done.set()
        try:
            with session_factory(self.settings.db_url)() as session:
                session.execute(delete(Worker).where(Worker.name == self.worker_name))
                session.commit()
        except SQLAlchemyError as exc:
            log.warning("could not take this worker off the list: %s", exc)
