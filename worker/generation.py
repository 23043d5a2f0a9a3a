"""Test an epoch: render a prompt with `<lora:name:weight>` on the light GPU queue."""

from __future__ import annotations

import io
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from core import keys, tasks
from core.db import session_factory
from core.models import Epoch, Generation, Job, TaskStatus
from core.settings import BaseModelEntry, Settings
from core.storage import Storage
from worker.screening import Shot, screen_now


class ModelCache:
    """Base models for test generations, on the worker's device (the GPU when there is one, in bf16 where it is
    supported), the most recently used kept; emptied before every training turn so training gets the whole GPU."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str, bool], object] = OrderedDict()

    @staticmethod
    def device_and_dtype():  # noqa: ANN205 - (torch.device, torch.dtype), torch imported lazily
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cpu"), torch.float32

    def get(self, entry: BaseModelEntry):  # noqa: ANN201 - a family's loaded model
        key = (entry.location, entry.family, entry.v_parameterization)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        from trainer.families import runtime

        model = runtime(entry.family).load_location(entry.location, v_parameterization=entry.v_parameterization)
        device, dtype = self.device_and_dtype()
        for module in (model.denoiser, model.vae, *model.text_encoders):
            module.to(device, dtype)
        self._models[key] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        self._models.clear()
        import gc

        gc.collect()
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            sys.modules["torch"].cuda.empty_cache()


MODELS = ModelCache()


def run_generation(settings: Settings, storage: Storage, generation_id: str) -> str:
    from trainer.job.prompts import PromptSpec, extract_lora_tags
    from trainer.output.generate import generate

    factory = session_factory(settings.db_url)
    with factory() as session:
        generation = session.get(Generation, generation_id)
        job = session.get(Job, generation.job_id)
        epoch = session.scalar(select(Epoch).where(Epoch.job_id == job.id, Epoch.n == generation.epoch_n))
        request, owner, name = dict(generation.request), generation.owner_id, job.name
        if not tasks.start(session, Generation, generation_id):
            return generation.status  # it ended already: a redelivered message
        session.commit()
    scratch = settings.scratch.resolve() / f"gen-{generation_id}"

    def work() -> dict[str, object]:
        entry = settings.offered_model(job.base_model)
        lora_path = scratch / f"{name}.safetensors"
        storage.download_to(epoch.file_key, lora_path)
        prompt = request["prompt"]
        notes: list[str] = []
        tags = extract_lora_tags(prompt)[1]
        if not tags:
            prompt = f"{prompt} <lora:{name}:{request['weight']}>"
            notes.append(f"LoRA weight {request['weight']:g}")
        else:  # the prompt's own tags win over the slider: say which weight made the image
            used = ", ".join(f"{tag_name} {weight:g}" for tag_name, weight in tags)
            differs = any(weight != request["weight"] for _, weight in tags)
            notes.append(f"LoRA weight from the prompt's tag: {used}" +
                         (f" (the slider's {request['weight']:g} was not used)" if differs else ""))
        loras = {name: lora_path, job.epoch_lora_name(generation.epoch_n): lora_path}
        size = (request.get("width") or entry.resolution, request.get("height") or entry.resolution)
        spec = PromptSpec(prompt, request.get("negative", ""), size[0], size[1], None, None, request.get("steps"))
        images = generate(MODELS.get(entry), spec, loras, seed=request["seed"], count=1, default_size=size,
                          sampler=request["sampler"].lower(), notes=notes)
        stored = []
        for k, image in enumerate(images):
            key = keys.generation(owner, generation_id, k)
            storage.put_bytes(key, png_bytes(image), "image/png")
            stored.append(key)
        screen_now(factory, settings, owner, "generation",
                   [Shot(key, f"{name} epoch {generation.epoch_n} test", image, generation_id)
                    for key, image in zip(stored, images, strict=True)])
        return {"image_keys": stored, "notes": notes}

    return settle(factory, Generation, generation_id, scratch, work)


def settle(factory, table: type, row_id: str, scratch: Path, work: Callable[[], dict[str, object]]) -> str:  # noqa: ANN001
    """Runs a light task's work and stores how it ended: succeeded with what the work returns, or failed with the
    error in words (shown on the page); its scratch folder goes either way."""
    try:
        values = work()
    except Exception as exc:  # noqa: BLE001 - any failure is the task's outcome, not the worker's
        finish(factory, table, row_id, TaskStatus.failed, error=f"{type(exc).__name__}: {exc}")
        return TaskStatus.failed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    finish(factory, table, row_id, TaskStatus.succeeded, **values)
    return TaskStatus.succeeded


def finish(factory, table: type, row_id: str, status: TaskStatus, **values: object) -> None:  # noqa: ANN001
    """A task row's end: its status and what it made (or the error)."""
    with factory() as session:
        tasks.finish(session, table, row_id, status, **values)
        session.commit()


def png_bytes(image) -> bytes:  # noqa: ANN001 - a PIL image
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
