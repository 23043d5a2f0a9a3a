"""Throttles for sign-in and sign-up, and a cap on password hashing running at once.

Counters are fixed windows, in Redis when there is one (shared by every API process) and in the process otherwise
(the embedded mode runs one). With Redis configured and out of reach, sign-in and sign-up fail closed (503 with the
reason): counting in each process instead would silently multiply every limit by the number of API processes.
Password hashing (argon2) is deliberately slow: at most HASH_SLOTS run at once, so a
flood of sign-ins waits for a slot or is turned away instead of slowing every other request down.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import redis
from fastapi import Request

from api.errors import TooMany, Unavailable
from api.security import verify_password
from core.settings import Settings

log = logging.getLogger(__name__)
HASH_SLOTS = 2
HASH_WAIT_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    window_s: int


@dataclass(frozen=True)
class Limits:
    pair: Limit  # wrong passwords for one account from one address / 15 min: that pair is refused
    address: Limit  # sign-in attempts from one address / 15 min: that address is refused
    account: Limit  # wrong passwords for one account / 15 min: past `count`, its sign-ins only slow down
    signup: Limit  # new accounts from one address / hour


def limits(settings: Settings) -> Limits:
    return Limits(Limit("login-pair", settings.login_failures_per_pair, 900),
                  Limit("login-address", settings.logins_per_address, 900),
                  Limit("login-account", settings.login_failures_before_delay, 900),
                  Limit("signup-address", settings.signups_per_address, 3600))


def account_delay_s(failures: int, settings: Settings) -> float:
    """How long a sign-in for an account waits: nothing up to the threshold, then 0.1 s more for every further
    threshold's worth of wrong passwords, at most login_delay_max_s. The owner is slowed, never refused."""
    over = failures - settings.login_failures_before_delay
    if over < 0:
        return 0.0
    return min(settings.login_delay_max_s, 0.1 * (1 + over / max(1, settings.login_failures_before_delay)))


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The client's address: the connecting peer, unless the peer is a trusted proxy; then the right-most address
    in X-Forwarded-For that is not one of the trusted proxies (what a client sends itself sits further left and
    is never believed)."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(tuple(trusted_proxies))
    if not networks or not _within(peer, networks):
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, networks):
            return hop
    return hops[0] if hops else peer


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _within(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class Throttle:
    def __init__(self, redis_url: str | None, hash_slots: int = HASH_SLOTS, hash_wait_s: float = HASH_WAIT_S) -> None:
        self._redis = (redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
                       if redis_url else None)
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(hash_slots)
        self.hash_wait_s = hash_wait_s

    def _key(self, limit: Limit, subject: str) -> str:
        window = int(time.time() // limit.window_s)
        return f"lorabake:throttle:{limit.name}:{window}:{subject}"

    def _shared(self, action: Callable[[redis.Redis], T]) -> T:
        assert self._redis is not None
        try:
            return action(self._redis)
        except redis.RedisError as exc:
            log.error("sign-in throttle: Redis cannot be reached (%s); sign-ins and sign-ups are refused until it "
                      "is back", exc)
            raise Unavailable("signing in is paused: the server cannot reach its rate-limit store (Redis) right now; "
                              "try again in a minute", headers={"Retry-After": "30"}) from None

    def count(self, limit: Limit, subject: str) -> int:
        key = self._key(limit, subject)
        if self._redis is not None:
            return self._shared(lambda r: int(r.get(key) or 0))
        with self._lock:
            value, _ = self._local.get(key, (0, 0.0))
            return value

    def add(self, limit: Limit, subject: str) -> None:
        key = self._key(limit, subject)
        if self._redis is not None:
            self._shared(lambda r: r.pipeline().incr(key).expire(key, limit.window_s).execute())
            return
        with self._lock:
            now = time.time()
            self._local = {k: v for k, v in self._local.items() if v[1] > now}  # forget finished windows
            value, _ = self._local.get(key, (0, 0.0))
            self._local[key] = (value + 1, now + limit.window_s)

    def clear(self, limit: Limit, subject: str) -> None:
        key = self._key(limit, subject)
        if self._redis is not None:
            self._shared(lambda r: r.delete(key))
            return
        with self._lock:
            self._local.pop(key, None)

    def check(self, limit: Limit, subject: str, what: str) -> None:
        """429 with Retry-After when `subject` used up `limit` in the current window."""
        if self.count(limit, subject) >= limit.count:
            retry = limit.window_s - int(time.time()) % limit.window_s
            raise TooMany(f"too many {what}; try again in {retry // 60 + 1} minutes",
                          headers={"Retry-After": str(retry)})

    def verify(self, password: str, stored_hash: str | None) -> bool:
        """A password check in one of the hash slots (blocking: run it in the thread pool)."""
        with self.hashing_slot():
            return verify_password(password, stored_hash)

    @contextmanager
    def hashing_slot(self) -> Iterator[None]:
        """One of the hash slots; 503 when none frees up within hash_wait_s."""
        if not self._hashing.acquire(timeout=self.hash_wait_s):
            raise Unavailable("too many sign-ins at this moment; try again in a few seconds",
                              headers={"Retry-After": "5"})
        try:
            yield
        finally:
            self._hashing.release()
