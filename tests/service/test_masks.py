"""Masks for masked loss in the service: from an upload's transparency, sent per image, made from the subject by a
worker, exported and imported in the conditioning folder, and trained with."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from PIL import ImageDraw

from api.main import create_app
from core.db import session_factory
from core.models import Image, JobStatus
from core.settings import Settings
from core.storage import storage_for
from tests.service.conftest import png_bytes, register, start_job
from worker.dataset_tasks import run_dataset_task
from worker.training import run_training


@pytest.fixture
def server(tmp_path, tiny_sd15):
    settings = Settings(var_dir=tmp_path / "var")
    shutil.copytree(tiny_sd15, tmp_path / "var" / "models" / "tiny-sd15")
    with TestClient(create_app(settings)) as client:
        me = register(client, "masks@example.com")
        dataset = client.post("/api/v1/datasets", json={"name": "d", "default_repeats": 2}, headers=me).json()
        yield settings, client, me, dataset


def _png(picture: PILImage.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def _half_transparent(size=(128, 96)) -> bytes:
    """A red picture whose left half is transparent."""
    picture = PILImage.new("RGBA", size, (200, 30, 30, 255))
    ImageDraw.Draw(picture).rectangle((0, 0, size[0] // 2 - 1, size[1]), fill=(0, 0, 0, 0))
    return _png(picture)


def _upload(client, me, dataset, *files) -> list[str]:  # noqa: ANN001
    answer = client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=me,
                         files=[("files", (name, data, "image/png")) for name, data in files]).json()
    assert all(r["id"] for r in answer), answer
    return [r["id"] for r in answer]


def _mask(settings: Settings, image_id: str) -> np.ndarray | None:
    with session_factory(settings.db_url)() as session:
        key = session.get(Image, image_id).mask_key
    if key is None:
        return None
    with PILImage.open(io.BytesIO(storage_for(settings).get_bytes(key))) as mask:
        return np.asarray(mask.convert("L"))


def test_an_upload_keeps_its_transparency_as_its_mask_and_a_mask_can_be_sent_replaced_and_removed(server):
    settings, client, me, dataset = server
    clear, opaque = _upload(client, me, dataset, ("clear.png", _half_transparent()), ("opaque.png", png_bytes()))
    images = f"/api/v1/datasets/{dataset['id']}/images"
    assert client.get(f"{images}/{clear}", headers=me).json()["mask_url"]
    mask = _mask(settings, clear)
    assert mask.shape == (96, 128) and mask[:, :60].max() == 0 and mask[:, 68:].min() == 255
    assert client.get(f"{images}/{opaque}", headers=me).json()["mask_url"] is None

    wrong = client.put(f"{images}/{opaque}/mask", headers=me, files={"file": ("m.png", png_bytes((64, 200)))})
    assert wrong.status_code == 422
    assert wrong.json()["detail"]["errors"] == [{"field": "file", "message": "the mask is 64×200 and the image "
                                                 "96×96: a mask must have its image's shape (any size)"}]
    assert client.put(f"{images}/{opaque}/mask", headers=me,
                      files={"file": ("m.txt", b"not a picture")}).status_code == 422
    half = PILImage.new("L", (48, 48), 0)
    ImageDraw.Draw(half).rectangle((0, 0, 47, 23), fill=255)  # the top half trained
    sent = client.put(f"{images}/{opaque}/mask", headers=me, files={"file": ("m.png", _png(half))})
    assert sent.status_code == 200 and sent.json()["mask_url"]
    mask = _mask(settings, opaque)
    assert mask.shape == (96, 96) and mask[:40].min() == 255 and mask[56:].max() == 0  # scaled to the image

    with session_factory(settings.db_url)() as session:
        key = session.get(Image, opaque).mask_key
    assert client.delete(f"{images}/{opaque}/mask", headers=me).json()["mask_url"] is None
    assert _mask(settings, opaque) is None and not storage_for(settings).exists(key)


def test_masks_go_out_and_come_back_in_the_conditioning_folder_cut_like_their_images(server):
    settings, client, me, dataset = server
    (clear,) = _upload(client, me, dataset, ("clear.png", _half_transparent()))
    box = {"x": 32, "y": 0, "width": 96, "height": 96}  # the right three quarters: a third of it transparent
    client.patch(f"/api/v1/datasets/{dataset['id']}/images/{clear}", headers=me, json={"crop": box})
    exported = client.get(f"/api/v1/datasets/{dataset['id']}/export", headers=me)
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        names = archive.namelist()
        assert "2_d/clear.png" in names and "conditioning/2_d/clear.png" in names
        with PILImage.open(io.BytesIO(archive.read("conditioning/2_d/clear.png"))) as mask:
            cut = np.asarray(mask.convert("L"))
    assert cut.shape == (96, 96) and cut[:, :28].max() == 0 and cut[:, 36:].min() == 255

    imported = client.post("/api/v1/datasets/import", headers=me,
                           files={"file": ("d.zip", exported.content, "application/zip")}).json()
    (entry,) = [r for r in imported["report"] if r["status"] == "imported"]
    assert entry["reason"] == "with its mask"
    assert np.array_equal(_mask(settings, entry["image_id"]), cut)  # the cut picture came back with its cut mask


def test_a_mask_task_masks_each_images_subject_and_keeps_masks_already_there(server):
    settings, client, me, dataset = server
    picture = PILImage.new("RGB", (256, 192), (120, 120, 120))
    ImageDraw.Draw(picture).ellipse((150, 90, 210, 150), fill=(250, 220, 40))  # a bright subject, right and low
    subject, already = _upload(client, me, dataset, ("subject.png", _png(picture)),
                               ("already.png", _half_transparent()))
    before = _mask(settings, already)
    answer = client.post(f"/api/v1/datasets/{dataset['id']}/masks", headers=me, json={"source": "subject"})
    assert answer.status_code == 202
    assert run_dataset_task(settings, storage_for(settings), answer.json()["id"]) == "succeeded"
    task = client.get(f"/api/v1/tasks/{answer.json()['id']}", headers=me).json()
    assert (task["done"], task["total"], task["result"]) == (2, 2, {"masked": 1, "skipped": 1})
    mask = _mask(settings, subject)
    assert mask[120, 180] == 255 and mask[10, 10] == 0  # the subject trained, the far corner not
    assert np.array_equal(_mask(settings, already), before)
    assert client.post(f"/api/v1/datasets/{dataset['id']}/masks", headers=me,
                       json={"image_ids": ["nope"]}).status_code == 404


def test_a_masked_loss_job_trains_with_the_images_masks(server):
    settings, client, me, dataset = server
    _upload(client, me, dataset, ("clear.png", _half_transparent()), ("opaque.png", png_bytes((96, 96))))
    job_id = start_job(client, me, dataset, "masked", 1, masked_loss=True)
    assert run_training(settings, storage_for(settings), job_id, "w") == JobStatus.succeeded
    log = client.get(f"/api/v1/jobs/{job_id}", headers=me).json()["log_tail"]
    assert "masked loss: 1 of 2 training images have a mask; the others are trained whole" in log
