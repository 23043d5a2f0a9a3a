"""An epoch as a plain LoRA of a chosen rank, on the light GPU queue (trainer.networks.convert does the maths)."""

from __future__ import annotations

from sqlalchemy import select

from core import keys, tasks
from core.db import session_factory
from core.models import Conversion, Epoch, Job
from core.settings import Settings
from core.storage import Storage
from worker.generation import MODELS, settle


def run_conversion(settings: Settings, storage: Storage, conversion_id: str) -> str:
    from trainer.networks.convert import convert_file

    factory = session_factory(settings.db_url)
    with factory() as session:
        conversion = session.get(Conversion, conversion_id)
        job = session.get(Job, conversion.job_id)
        file_key = session.scalar(select(Epoch.file_key).where(Epoch.job_id == job.id,
                                                                Epoch.n == conversion.epoch_n))
        owner, rank, base_model = conversion.owner_id, conversion.rank, job.base_model
        if not tasks.start(session, Conversion, conversion_id):
            return conversion.status  # it ended already: a redelivered message
        session.commit()
    scratch = settings.scratch.resolve() / f"plain-{conversion_id}"

    def work() -> dict[str, object]:
        source, target = scratch / "source.safetensors", scratch / "plain.safetensors"
        storage.download_to(file_key, source)
        done = convert_file(MODELS.get(settings.offered_model(base_model)), source, target, rank)
        key = keys.conversion(owner, conversion_id)
        with target.open("rb") as handle:
            storage.put_file(key, handle)
        return {"file_key": key, "report": done.report()}

    return settle(factory, Conversion, conversion_id, scratch, work)
