"""Object storage behind one interface: a local folder (embedded) or any S3-compatible endpoint."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import quote, urlencode

from core.settings import Settings

CHUNK = 1024 * 1024


PARTIAL_PREFIX = ".upload-"  # a file being written; renamed onto its key when complete


class StorageError(Exception):
    pass


def check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise StorageError(f"invalid storage key {key!r}")
    return key


class ReadMeter:
    """A read-only view of a binary stream that counts (and optionally hashes) what passes through, so an upload
    needs one pass over the data. close() leaves the underlying stream to its owner."""

    def __init__(self, source: BinaryIO, sha256: bool = False) -> None:
        self._source = source
        self.size = 0
        self._digest = hashlib.sha256() if sha256 else None

    def read(self, n: int = -1) -> bytes:
        chunk = self._source.read(n)
        self.size += len(chunk)
        if self._digest is not None:
            self._digest.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        if self._digest is None:
            raise ValueError("this ReadMeter does not hash")
        return self._digest.hexdigest()

    def close(self) -> None:
        pass


class Storage(Protocol):
    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> int: ...
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int: ...
    def iter_chunks(self, key: str) -> Iterator[bytes]: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download_to(self, key: str, target: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def list_modified(self, prefix: str) -> dict[str, float]: ...
    def signed_url(self, key: str, filename: str | None = None, expires_s: int = 3600) -> str: ...


class LocalStorage:
    """Files under a folder; links are HMAC-signed `/files/{key}` URLs served by the API."""

    def __init__(self, root: Path, secret: str) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = secret.encode()

    def path(self, key: str) -> Path:
        """Where a key's file is (whether or not it exists)."""
        return self.root / check_key(key)

    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> int:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        return self.put_file(key, io.BytesIO(data), content_type)

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise StorageError(f"no object {key!r}") from exc
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def download_to(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self.path(key), target)
        except FileNotFoundError as exc:
            raise StorageError(f"no object {key!r}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root / check_key(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root).as_posix()) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(PARTIAL_PREFIX))

    def list_modified(self, prefix: str) -> dict[str, float]:
        """Each key under the prefix with the Unix time it was last written."""
        modified = {}
        for key in self.list_keys(prefix):
            with contextlib.suppress(FileNotFoundError):
                modified[key] = self.path(key).stat().st_mtime
        return modified

    def sweep_partial_uploads(self, older_than_s: float = 3600.0) -> int:
        """Removes the temporary files of writes a killed process never finished (older than any live write)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.root.rglob(f"{PARTIAL_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def delete_prefix(self, prefix: str) -> int:
        count = len(self.list_keys(prefix))
        shutil.rmtree(self.root / check_key(prefix.rstrip("/")), ignore_errors=True)
        return count

    def sign(self, key: str, expires: int, filename: str) -> str:
        message = f"{key}\n{expires}\n{filename}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int, filename: str, signature: str) -> bool:
        if expires < time.time():
            return False
        return hmac.compare_digest(self.sign(key, expires, filename).encode(), signature.encode())

    def signed_url(self, key: str, filename: str | None = None, expires_s: int = 3600) -> str:
        expires = int(time.time()) + expires_s
        name = filename or PurePosixPath(key).name
        query = urlencode({"exp": expires, "name": name, "sig": self.sign(check_key(key), expires, name)})
        return f"/api/v1/files/{quote(key)}?{query}"


class S3Storage:
    """boto3 against AWS or any S3 server; checksums only when required, which non-AWS servers accept."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": settings.s3_addressing_style},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
        )
        self.bucket = settings.s3_bucket
        self.client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key, aws_secret_access_key=settings.s3_secret_key, config=config,
        )

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> int:
        meter = ReadMeter(source)  # s3transfer may close what it is given; the caller's stream stays open
        self.client.upload_fileobj(meter, self.bucket, check_key(key), ExtraArgs={"ContentType": content_type})
        return meter.size

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)
        return len(data)

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"]
        except ClientError as exc:
            raise StorageError(f"no object {key!r}") from exc
        yield from body.iter_chunks(CHUNK)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def download_to(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in self.iter_chunks(key):
                out.write(chunk)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=check_key(key))["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        modified: dict[str, float] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            modified.update((item["Key"], item["LastModified"].timestamp()) for item in page.get("Contents", []))
        return modified

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(check_key(prefix))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def signed_url(self, key: str, filename: str | None = None, expires_s: int = 3600) -> str:
        params = {"Bucket": self.bucket, "Key": check_key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)


def storage_for(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.files_dir, settings.signing_key())
