"""Job-change notices for live pages, over Redis pub/sub when there is a Redis.

The database stays the one record of a job: a notice only says "job X changed", and a listener re-reads the job.
Without Redis (the embedded default) nobody publishes and listeners poll the database instead.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import redis

log = logging.getLogger(__name__)


def channel(job_id: str) -> str:
    return f"lorabake:job:{job_id}"


class JobNotices:
    def __init__(self, redis_url: str | None) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=5) if redis_url else None

    def changed(self, job_id: str) -> None:
        """Best effort: a lost notice only delays a live page until its next poll, so errors are logged, not raised."""
        if self._client is None:
            return
        try:
            self._client.publish(channel(job_id), "changed")
        except redis.RedisError as exc:
            log.warning("could not publish a notice for job %s: %s", job_id, exc)


@lru_cache(maxsize=4)
def notices_for(redis_url: str | None) -> JobNotices:
    return JobNotices(redis_url)
