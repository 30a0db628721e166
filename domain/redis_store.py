"""Redis: rankings, pub/sub and counters, all rebuildable from the database.

With no LOYALTY_REDIS_URL an embedded server (domain/embedded_redis.py) is
started in the data directory, on first use, and reached over its unix socket.
Commands that never touch Redis (provisioning from the CLI) never start it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from redis.asyncio import Redis

from domain import embedded_redis
from domain.settings import ConfigurationError


class RedisStore:
    def __init__(self, url: str | None, prefix: str, data_dir: Path | None) -> None:
        self.url = url
        self.prefix = prefix
        self.data_dir = data_dir
        self._client: Redis | None = None
        self._embedded: embedded_redis.EmbeddedRedis | None = None  # kept alive while the store is

    @property
    def client(self) -> Redis:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Redis:
        if self.url:
            return Redis.from_url(self.url, decode_responses=True)
        if self.data_dir is None:
            raise ConfigurationError(
                "no Redis: set LOYALTY_REDIS_URL, or give a data directory (--data-dir DIR or "
                "LOYALTY_DATA_DIR) for the embedded Redis server"
            )
        self._embedded = embedded_redis.acquire(self.data_dir)
        return Redis(unix_socket_path=str(self._embedded.socket_path), decode_responses=True)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._embedded is not None:
            # stops the server if this process started it and no other store here uses it
            await asyncio.to_thread(embedded_redis.release, self._embedded)
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
