"""Storage that waits out outages: every operation is retried with backoff while the storage cannot be reached,
up to a time budget; then StorageUnavailable, whose message names no endpoint, bucket or key.

Workers use it, so a storage server restarting mid-job delays the job instead of failing it (and a longer outage
interrupts the job, which resumes from its last stored epoch once the reconciler re-queues it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from core.storage import Storage, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "503", "500"})


class StorageUnavailable(RuntimeError):
    """Storage stayed out of reach for the whole retry budget."""


def is_transient(exc: BaseException) -> bool:
    """Connection problems and the server's own 5xx answers; not a missing object or a refused request."""
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "") in TRANSIENT_CODES
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)


class PatientStorage:
    def __init__(self, inner: Storage, budget_s: float = 120.0, first_wait_s: float = 0.5,
                 longest_wait_s: float = 10.0) -> None:
        self.inner, self.budget_s = inner, budget_s
        self.first_wait_s, self.longest_wait_s = first_wait_s, longest_wait_s

    def _patiently(self, what: str, call: Callable[[], T], before_retry: Callable[[], None] | None = None) -> T:
        deadline = time.monotonic() + self.budget_s
        wait = self.first_wait_s
        while True:
            try:
                return call()
            except StorageError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if time.monotonic() + wait > deadline:
                    raise StorageUnavailable(f"storage could not be reached for {self.budget_s:.0f} s "
                                             f"({what})") from None
                log.warning("storage unreachable during %s (%s); retrying in %.1f s", what, type(exc).__name__, wait)
                time.sleep(wait)
                wait = min(wait * 2, self.longest_wait_s)
                if before_retry is not None:
                    before_retry()

    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> int:
        start = source.tell()
        return self._patiently("an upload", lambda: self.inner.put_file(key, source, content_type),
                               lambda: source.seek(start))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        return self._patiently("an upload", lambda: self.inner.put_bytes(key, data, content_type))

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        yield self.get_bytes(key)

    def get_bytes(self, key: str) -> bytes:
        return self._patiently("a download", lambda: self.inner.get_bytes(key))

    def download_to(self, key: str, target: Path) -> None:
        self._patiently("a download", lambda: self.inner.download_to(key, target))

    def exists(self, key: str) -> bool:
        return self._patiently("a lookup", lambda: self.inner.exists(key))

    def size(self, key: str) -> int:
        return self._patiently("a lookup", lambda: self.inner.size(key))

    def delete(self, key: str) -> None:
        self._patiently("a delete", lambda: self.inner.delete(key))

    def delete_prefix(self, prefix: str) -> int:
        return self._patiently("a delete", lambda: self.inner.delete_prefix(prefix))

    def list_keys(self, prefix: str) -> list[str]:
        return self._patiently("a listing", lambda: self.inner.list_keys(prefix))

    def signed_url(self, key: str, filename: str | None = None, expires_s: int = 3600) -> str:
        return self.inner.signed_url(key, filename, expires_s)
