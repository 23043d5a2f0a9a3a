"""The same behaviour from both storage backends: a local folder and S3 (moto's server)."""

from __future__ import annotations

import io
import time

import httpx
import pytest

from core.storage import LocalStorage, S3Storage, StorageError
from tests.service.conftest import s3_env, settings_from_env


def s3_storage(endpoint: str) -> S3Storage:
    env = s3_env(endpoint)
    backend = S3Storage(settings_from_env(env))
    backend.ensure_bucket()
    return backend


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "files", "x" * 40)
    return s3_storage(request.getfixturevalue("s3_endpoint"))


def test_objects_round_trip_stream_and_list(storage):
    big = bytes(range(256)) * 40_000  # 10 MB: several streaming chunks, and over boto3's 8 MB multipart threshold
    assert storage.put_file("u/1/a/big.bin", io.BytesIO(big)) == len(big)
    assert storage.put_bytes("u/1/a/small.txt", b"hello") == 5
    assert storage.get_bytes("u/1/a/big.bin") == big
    assert len(list(storage.iter_chunks("u/1/a/big.bin"))) >= 2
    assert storage.exists("u/1/a/small.txt") and not storage.exists("u/1/a/none")
    assert storage.size("u/1/a/big.bin") == len(big)
    assert storage.list_keys("u/1/") == ["u/1/a/big.bin", "u/1/a/small.txt"]
    modified = storage.list_modified("u/1/")
    assert sorted(modified) == storage.list_keys("u/1/")
    assert all(abs(when - time.time()) < 600 for when in modified.values())  # written just now, by any clock


def test_download_to_a_file_and_missing_objects(storage, tmp_path):
    storage.put_bytes("k/x.bin", b"abc")
    storage.download_to("k/x.bin", tmp_path / "out" / "x.bin")
    assert (tmp_path / "out" / "x.bin").read_bytes() == b"abc"
    with pytest.raises(StorageError):
        storage.get_bytes("k/missing.bin")


def test_delete_and_delete_prefix(storage):
    for name in ("a", "b", "c"):
        storage.put_bytes(f"p/q/{name}", b"1")
    storage.put_bytes("p/other", b"1")
    storage.delete("p/q/a")
    assert storage.delete_prefix("p/q/") == 2
    assert storage.list_keys("p/") == ["p/other"]


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", ""])
def test_keys_that_leave_the_store_are_refused(storage, key):
    with pytest.raises(StorageError):
        storage.put_bytes(key, b"x")


def test_s3_signed_link_downloads_and_names_the_file(s3_endpoint):
    storage = s3_storage(s3_endpoint)
    storage.put_bytes("d/lora.safetensors", b"weights")
    response = httpx.get(storage.signed_url("d/lora.safetensors", "mine.safetensors", expires_s=60))
    assert response.content == b"weights"
    assert 'filename="mine.safetensors"' in response.headers["content-disposition"]


def test_local_links_are_signed_and_expire(tmp_path):
    storage = LocalStorage(tmp_path, "s" * 40)
    expires = int(time.time()) + 60
    signature = storage.sign("a/b.png", expires, "b.png")
    assert storage.verify("a/b.png", expires, "b.png", signature)
    assert not storage.verify("a/c.png", expires, "b.png", signature)
    assert not storage.verify("a/b.png", expires, "other.png", signature)
    assert not storage.verify("a/b.png", int(time.time()) - 1, "b.png", storage.sign("a/b.png", int(time.time()) - 1,
                                                                                   "b.png"))
    assert not LocalStorage(tmp_path, "t" * 40).verify("a/b.png", expires, "b.png", signature)
