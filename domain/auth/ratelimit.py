"""Fixed-window counters in Redis, shared by every worker (Redis >= 6.2, so the embedded server works).

Logins are throttled differently (growing delays, reserved before the check): throttle.py.
"""

from __future__ import annotations

from domain.errors import RateLimited
from domain.redis_store import RedisPipeline, RedisStore


class RateLimiter:
    def __init__(self, store: RedisStore, name: str, limit: int, window_s: int) -> None:
        self.store = store
        self.name = name
        self.limit = limit
        self.window_s = window_s

    def _key(self, subject: str) -> str:
        return self.store.key("ratelimit", self.name, subject)

    def _count(self, pipe: RedisPipeline, key: str) -> None:
        """Start the window on first use, then count (works on Redis 6.2, which lacks EXPIRE NX)."""
        pipe.set(key, 0, ex=self.window_s, nx=True)
        pipe.incr(key)

    async def consume(self, subject: str, what: str) -> None:
        """Count one use, refusing it when the window is full."""
        key = self._key(subject)
        async with self.store.client.pipeline(transaction=True) as pipe:
            self._count(pipe, key)
            _, count = await pipe.execute()
        if int(count) > self.limit:
            await self._refuse(key, what)

    async def _refuse(self, key: str, what: str) -> None:
        retry_after = max(int(await self.store.client.ttl(key)), 1)
        window = (
            f"{self.window_s // 60} minutes"
            if self.window_s % 60 == 0 and self.window_s > 60
            else f"{self.window_s} s"
        )
        raise RateLimited(
            f"too many {what}: at most {self.limit} per {window}; try again in {retry_after} s",
            retryAfter=retry_after,
        )
