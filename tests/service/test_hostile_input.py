"""Hostile input on SQLite and PostgreSQL: 40+ files and 40+ JSON bodies an attacker (or a broken client) would
send. Every answer is a 4xx with a reason or a success, never a 5xx, and what was accepted stays stored."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from core.settings import Settings
from tests.service.conftest import png_bytes, register


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """A valid PNG with one more chunk right after IHDR (8 signature bytes + 25 IHDR bytes)."""
    return png[:33] + _chunk(kind, data) + png[33:]


def _declared_huge_png() -> bytes:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        _chunk(b"IEND", b"")


def hostile_files() -> list[tuple[str, bytes]]:
    good = png_bytes(seed=1)
    bomb = zlib.compress(b"\0" * (40 * 1024 * 1024), 9)
    jpeg = io.BytesIO()
    Image.new("RGB", (80, 80), (10, 200, 30)).save(jpeg, "JPEG", exif=b"Exif\0\0" + b"\0" * 64,
                                                     icc_profile=b"\0" * 512, comment=b"hello")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.png", good)
    files = [
        ("empty.png", b""), ("one.png", b"\x89"), ("text.png", b"plain text"), ("cut.png", good[: len(good) // 2]),
        ("cut.jpg", jpeg.getvalue()[:200]), ("huge.png", _declared_huge_png()),
        ("ztxt-bomb.png", _with_chunk(good, b"zTXt", b"Comment\0\0" + bomb)),
        ("itxt-bomb.png", _with_chunk(good, b"iTXt", b"Comment\0\1\0\0\0" + bomb)),
        ("icc-bomb.png", _with_chunk(good, b"iCCP", b"icc\0\0" + bomb)),
        ("gif.png", b"GIF89a" + b"\0" * 40), ("webp.png", b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 40),
        ("bmp.png", b"BM" + b"\0" * 60), ("svg.png", b"<svg onload='alert(1)'/>"), ("page.png", b"<html></html>"),
        ("archive.png", zipped.getvalue()), ("nul.png", b"\0" * 4096), ("tiny.png", png_bytes(size=(1, 1))),
        ("small.png", png_bytes(size=(63, 63))), ("ok.png", good), ("exif.jpg", jpeg.getvalue()),
        ("x" * 300 + ".png", png_bytes(seed=3)), ("../../etc/passwd", good),
        ("tab\tname.png", png_bytes(seed=4)), ("\u202eevil.gnp.png", png_bytes(seed=5)),
        ("C:\\windows\\x.png", png_bytes(seed=7)),
    ]
    files += [(f"random{i}.png", bytes((i * 37 + k * 11) % 256 for k in range(300))) for i in range(10)]
    files += [(f"magic{i}.png", b"\x89PNG\r\n\x1a\n" + bytes(range(i * 5, i * 5 + 40))) for i in range(5)]
    return files


@pytest.fixture
def client(db_url, tmp_path):
    settings = Settings(var_dir=tmp_path / "var", database_url=db_url, reconcile_in_api=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_hostile_files_get_a_reason_each_and_never_a_5xx(client):
    me = register(client, "files@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "d"}, headers=me).json()
    files = hostile_files()
    assert len(files) >= 40
    answer = client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=me,
                         files=[("files", (name, data, "image/png")) for name, data in files])
    assert answer.status_code == 200, answer.text
    results = answer.json()
    assert len(results) == len(files)
    by_name = {name: result for (name, _), result in zip(files, results, strict=True)}
    assert "zip bomb" in by_name["ztxt-bomb.png"]["error"] and by_name["ok.png"]["id"]
    assert by_name["exif.jpg"]["id"] and by_name["x" * 300 + ".png"]["id"]
    # names a multipart encoder may refuse to carry: each alone, answered without a 5xx
    for name in ("a\0b.png", "line\nbreak.png", "quote\".png", "\x7f.png", "", "x" * 5000 + ".png"):
        single = client.post(f"/api/v1/datasets/{dataset['id']}/images", headers=me,
                             files=[("files", (name, png_bytes(seed=9), "image/png"))])
        assert single.status_code < 500, (name, single.text)
    stored = client.get(f"/api/v1/datasets/{dataset['id']}/images", headers=me).json()
    assert len(stored) >= sum(1 for r in results if r["id"]) >= 7  # earlier files stay stored
    assert all("\0" not in i["filename"] and len(i["filename"]) <= 255 for i in stored)
    exif = next(i for i in stored if i["id"] == by_name["exif.jpg"]["id"])
    kept = Image.open(io.BytesIO(client.get(exif["url"]).content))
    assert not {"icc_profile", "exif", "comment"} & set(kept.info)
    assert client.get("/api/v1/healthz").headers["x-content-type-options"] == "nosniff"


HUGE = 10**30


def hostile_bodies(dataset_id: str) -> list[tuple[str, str, object]]:
    job = {"dataset_id": dataset_id, "base_model": "tiny-sd15", "preset": "standard"}
    bodies: list[tuple[str, str, object]] = [
        ("POST", "/api/v1/datasets", {"name": "a\0b"}), ("POST", "/api/v1/datasets", {"name": "x" * 10_000}),
        ("POST", "/api/v1/datasets", {"name": None}), ("POST", "/api/v1/datasets", {"name": ["x"]}),
        ("POST", "/api/v1/datasets", {"name": "n", "default_repeats": HUGE}),
        ("POST", "/api/v1/datasets", {"name": "n", "default_repeats": -1}),
        ("POST", "/api/v1/datasets", {"name": "n", "default_repeats": "many"}),
        ("POST", "/api/v1/datasets", []), ("POST", "/api/v1/datasets", "just a string"),
        ("PATCH", f"/api/v1/datasets/{dataset_id}", {"default_repeats": HUGE}),
        ("PATCH", f"/api/v1/datasets/{dataset_id}", {"name": "\0"}),
        ("GET", "/api/v1/datasets/%00abc", None), ("GET", "/api/v1/jobs/%00", None),
        ("GET", "/api/v1/files/out?sig=%F1%A5%81%AD&exp=1819243105&name=n", None),
        ("GET", f"/api/v1/datasets/{dataset_id}/images/%00", None),
        ("GET", "/api/v1/jobs/abc/epochs/99999999999999999999/download", None),
        ("POST", "/api/v1/jobs/abc/epochs/99999999999999999999/generate", {"prompt": "x"}),
        ("POST", "/api/v1/jobs", {**job, "params": {"max_train_epochs": HUGE}}),
        ("POST", "/api/v1/jobs", {**job, "params": {"max_train_epochs": 99999999999999999999}}),
        ("POST", "/api/v1/jobs", {**job, "params": {"max_train_steps": HUGE}}),
        ("POST", "/api/v1/jobs", {**job, "mode": "pro", "preset": None, "params": {"seed": HUGE}}),
        ("POST", "/api/v1/jobs", {**job, "params": {"network_dim": "NaN"}}),
        ("POST", "/api/v1/jobs", {**job, "params": "not a dict"}),
        ("POST", "/api/v1/jobs", {**job, "params": {"unknown_key\0": 1}}),
        ("POST", "/api/v1/jobs", {**job, "base_model": "tiny\0"}),
        ("POST", "/api/v1/jobs", {**job, "dataset_id": "\0"}),
        ("POST", "/api/v1/jobs", {**job, "name": "a\0b"}), ("POST", "/api/v1/jobs", {**job, "name": "a:b/c"}),
        ("POST", "/api/v1/jobs", {**job, "sample_prompts": ["x --w 99999"]}),
        ("POST", "/api/v1/jobs", {**job, "sample_prompts": ["x --s 100000000000000000000"]}),
        ("POST", "/api/v1/jobs", {**job, "sample_prompts": ["x --l nan"]}),
        ("POST", "/api/v1/jobs", {**job, "sample_prompts": ["<lora:x:inf> y"]}),
        ("POST", "/api/v1/jobs", {**job, "sample_prompts": ["\0"]}),
        ("POST", "/api/v1/jobs", {**job, "start_after": "the year 99999"}),
        ("POST", "/api/v1/jobs", {**job, "params": {"resolution": "99999999999999999999"}}),
        ("POST", "/api/v1/jobs/estimate", {**job, "params": {"train_batch_size": HUGE}}),
        ("POST", "/api/v1/jobs/estimate", {**job, "params": {"network_args": ["conv_dim=99999999999999999999"]}}),
        ("POST", "/api/v1/jobs/estimate", {**job, "params": {"text_encoder_lr": [1e308, -1]}}),
        ("POST", f"/api/v1/datasets/{dataset_id}/tags", {"tags": ["x"] * 10_000, "action": "add"}),
        ("POST", f"/api/v1/datasets/{dataset_id}/crop", {"mode": "center", "width": HUGE, "height": 64}),
        ("POST", f"/api/v1/datasets/{dataset_id}/crop", {"mode": "center", "width": 64, "height": 64,
                                                         "image_ids": ["\0"]}),
        ("POST", "/api/v1/models", {"job_id": "\0", "epoch": HUGE, "name": "m"}),
        ("POST", "/api/v1/auth/tokens", {"name": "\0", "days": HUGE}),
    ]
    return bodies


def test_hostile_json_bodies_and_paths_get_4xx_never_5xx(client):
    me = register(client, "bodies@example.com")
    dataset = client.post("/api/v1/datasets", json={"name": "d"}, headers=me).json()
    bodies = hostile_bodies(dataset["id"])
    assert len(bodies) >= 40
    answers = [(method, url, client.request(method, url, json=body, headers=me).status_code)
               for method, url, body in bodies]
    assert [a for a in answers if a[2] >= 500] == []
    assert client.post("/api/v1/auth/register", json={"email": "a\0@example.com", "password": "x" * 12}
                       ).status_code < 500
    assert client.post("/api/v1/auth/login", data={"username": "a\0@example.com", "password": "x" * 12}
                       ).status_code < 500
    assert client.get(f"/api/v1/datasets/{dataset['id']}", headers=me).json()["name"] == "d"  # nothing lost
