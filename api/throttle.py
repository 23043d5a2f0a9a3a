"""Throttles for sign-in and sign-up, and a cap on password hashing running at once.

Counters are fixed windows, in Redis when there is one (shared by every API process) and in the process otherwise
(the embedded mode runs one). Password hashing (argon2) is deliberately slow: at most HASH_SLOTS run at once, so a
flood of sign-ins waits for a slot or is turned away instead of slowing every other request down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from fastapi import HTTPException, status

from core.settings import Settings

HASH_SLOTS = 2
HASH_WAIT_S = 5.0


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    window_s: int


def limits(settings: Settings) -> tuple[Limit, Limit, Limit]:
    """(wrong passwords per account / 15 min, sign-in attempts per address / 15 min, sign-ups per address / hour)"""
    return (Limit("login-account", settings.login_failures_per_account, 900),
            Limit("login-address", settings.logins_per_address, 900),
            Limit("signup-address", settings.signups_per_address, 3600))


class Throttle:
    def __init__(self, redis_url: str | None, hash_slots: int = HASH_SLOTS, hash_wait_s: float = HASH_WAIT_S) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2) if redis_url else None
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(hash_slots)
        self.hash_wait_s = hash_wait_s

    def _key(self, limit: Limit, subject: str) -> str:
        window = int(time.time() // limit.window_s)
        return f"lorabake:throttle:{limit.name}:{window}:{subject}"

    def count(self, limit: Limit, subject: str) -> int:
        key = self._key(limit, subject)
        if self._redis is not None:
            try:
                return int(self._redis.get(key) or 0)
            except redis.RedisError:
                pass  # Redis away: fall back to this process's counters
        with self._lock:
            value, _ = self._local.get(key, (0, 0.0))
            return value

    def add(self, limit: Limit, subject: str) -> None:
        key = self._key(limit, subject)
        if self._redis is not None:
            try:
                with self._redis.pipeline() as pipe:
                    pipe.incr(key).expire(key, limit.window_s).execute()
                return
            except redis.RedisError:
                pass
        with self._lock:
            now = time.time()
            self._local = {k: v for k, v in self._local.items() if v[1] > now}  # forget finished windows
            value, _ = self._local.get(key, (0, 0.0))
            self._local[key] = (value + 1, now + limit.window_s)

    def clear(self, limit: Limit, subject: str) -> None:
        key = self._key(limit, subject)
        if self._redis is not None:
            try:
                self._redis.delete(key)
                return
            except redis.RedisError:
                pass
        with self._lock:
            self._local.pop(key, None)

    def check(self, limit: Limit, subject: str, what: str) -> None:
        """429 with Retry-After when `subject` used up `limit` in the current window."""
        if self.count(limit, subject) >= limit.count:
            retry = limit.window_s - int(time.time()) % limit.window_s
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                f"too many {what}; try again in {retry // 60 + 1} minutes",
                                headers={"Retry-After": str(retry)})

    @contextmanager
    def hashing_slot(self) -> Iterator[None]:
        """One of the hash slots; 503 when none frees up within hash_wait_s."""
        if not self._hashing.acquire(timeout=self.hash_wait_s):
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                "too many sign-ins at this moment; try again in a few seconds",
                                headers={"Retry-After": "5"})
        try:
            yield
        finally:
            self._hashing.release()
