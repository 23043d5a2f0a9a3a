"""Epoch × weight sweeps on the light GPU queue: one prompt and seed, a row per chosen epoch, a column per LoRA
weight and one without the LoRA (rendered once: it is the same image in every row), then one labelled PNG."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select, update

from core import keys, tasks
from core.db import session_factory
from core.models import Epoch, Job, Sweep
from core.settings import Settings
from core.storage import Storage
from worker.generation import MODELS, png_bytes, settle
from worker.screening import Shot, screen_now

GAP, LABEL_W, LABEL_H = 4, 96, 28


def run_sweep(settings: Settings, storage: Storage, sweep_id: str) -> str:
    from trainer.job.prompts import PromptSpec
    from trainer.output.generate import generate

    factory = session_factory(settings.db_url)
    with factory() as session:
        sweep = session.get(Sweep, sweep_id)
        job = session.get(Job, sweep.job_id)
        request, owner, name, base_model = dict(sweep.request), sweep.owner_id, job.name, job.base_model
        rows = session.execute(select(Epoch.n, Epoch.file_key).where(Epoch.job_id == job.id,
                                                                      Epoch.n.in_(request["epochs"])))
        files = {n: key for n, key in rows}
        if not tasks.start(session, Sweep, sweep_id, done=0):
            return sweep.status  # it ended already: a redelivered message
        session.commit()
    scratch = settings.scratch.resolve() / f"sweep-{sweep_id}"

    def work() -> dict[str, object]:
        entry = settings.offered_model(base_model)
        model, size = MODELS.get(entry), (entry.resolution, entry.resolution)

        def render(prompt: str, loras: dict[str, Path]) -> Image.Image:
            spec = PromptSpec(prompt, request["negative"], size[0], size[1], None, None, request.get("steps"))
            return generate(model, spec, loras, seed=request["seed"], default_size=size,
                            sampler=request["sampler"].lower())[0]

        def store(image: Image.Image, column: str) -> str:
            key = keys.sweep_cell(owner, sweep_id, column)
            storage.put_bytes(key, png_bytes(image), "image/png")
            with factory() as session:  # progress, cell by cell
                session.execute(update(Sweep).where(Sweep.id == sweep_id).values(done=Sweep.done + 1))
                session.commit()
            return key

        without = render(request["prompt"], {})
        without_key = store(without, "base")
        rows, images = [], []
        for n in request["epochs"]:
            path = scratch / f"{name}-{n}.safetensors"
            storage.download_to(files[n], path)
            row, row_images = [without_key], [without]
            for weight in request["weights"]:
                image = render(f"{request['prompt']} <lora:{name}:{weight}>", {name: path})
                row.append(store(image, f"e{n}-w{weight:g}"))
                row_images.append(image)
            rows.append(row)
            images.append(row_images)
        columns = ["no LoRA", *(f"{w:g}" for w in request["weights"])]
        grid = labelled_grid(images, [f"epoch {n}" for n in request["epochs"]], columns)
        grid_key = keys.sweep_grid(owner, sweep_id)
        storage.put_bytes(grid_key, png_bytes(grid), "image/png")
        cells = {key: image for row, row_images in zip(rows, images, strict=True)
                 for key, image in zip(row, row_images, strict=True)}
        screen_now(factory, settings, owner, "sweep",
                   [Shot(key, f"{name} sweep cell", image, sweep_id) for key, image in cells.items()]
                   + [Shot(grid_key, f"{name} sweep grid", grid, sweep_id)])
        return {"cell_keys": rows, "grid_key": grid_key}

    return settle(factory, Sweep, sweep_id, scratch, work)


def labelled_grid(images: list[list[Image.Image]], row_labels: list[str], column_labels: list[str]) -> Image.Image:
    """The cells in one PNG, the column labels above them and the row labels to their left."""
    width, height = images[0][0].size
    font = ImageFont.load_default(size=14)
    grid = Image.new("RGB", (LABEL_W + len(column_labels) * (width + GAP), LABEL_H + len(row_labels) * (height + GAP)),
                     "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 6), "LoRA weight", fill="black", font=font)
    for c, label in enumerate(column_labels):
        draw.text((LABEL_W + c * (width + GAP) + 2, 6), label, fill="black", font=font)
    for r, (label, row) in enumerate(zip(row_labels, images, strict=True)):
        top = LABEL_H + r * (height + GAP)
        draw.text((4, top + height // 2 - 7), label, fill="black", font=font)
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB"), (LABEL_W + c * (width + GAP), top))
    return grid
