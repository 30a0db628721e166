"""Redis: rankings, pub/sub and counters, all rebuildable from the database.

One Redis server or a Redis Cluster, decided here and nowhere else:

- `LOYALTY_REDIS_URL=redis://host:port/0` (or `rediss://`, `unix://`): one server;
- `LOYALTY_REDIS_URL=redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://`
  for TLS): a Redis Cluster, reached through any of the listed nodes (the others are found from them);
- unset: an embedded server (domain/embedded_redis.py) started in the data directory, on first use,
  and reached over its unix socket. Commands that never touch Redis (provisioning from the CLI)
  never start it.

On a cluster every multi-key operation keeps its keys in one slot with a hash tag (`{...}`): a
board's keys share `{program:board}`, a lease and its epoch counter share the lease key, a throttle's
keys share `{throttle}`. Pub/sub is sharded (SPUBLISH/SSUBSCRIBE): every channel carries the tag
`{<prefix>pubsub}`, so one shard carries the relay's single ordered stream and each process holds one
subscription connection, to that shard's master (docs/scaling.md, "Redis Cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast
from urllib.parse import unquote

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.exceptions import WatchError

from domain import embedded_redis
from domain.settings import ConfigurationError

#: What every Redis use is written against: the commands both clients share.
RedisClient: TypeAlias = Redis | RedisCluster
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


@dataclass(frozen=True)
class ClusterAddress:
    """A `redis+cluster://` URL: the nodes to discover the cluster from, and how to sign in."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> ClusterAddress | None:
        """The cluster a URL names; None for a one-server URL; ConfigurationError when it is malformed."""
        scheme, _, rest = url.partition("://")
        if scheme not in _CLUSTER_SCHEMES:
            return None
        userinfo, _, hosts = rest.rpartition("@")
        hosts = hosts.split("/", 1)[0].split("?", 1)[0]
        username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
        nodes = []
        for node in hosts.split(","):
            host, _, port = node.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError(
                    f"LOYALTY_REDIS_URL: {node!r} is not host:port (the cluster form is "
                    f"{scheme}://[user:password@]host:port[,host:port...])"
                )
            nodes.append((host.strip("[]"), int(port)))
        return cls(
            tuple(nodes), unquote(username) or None, unquote(password) or None, _CLUSTER_SCHEMES[scheme]
        )

    def client(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            username=self.username,
            password=self.password,
            ssl=self.tls,
            decode_responses=True,
        )

    def node_client(self, node: ClusterNode) -> Redis:
        """A one-connection client of one node (a sharded subscription lives on its channel's shard)."""
        return Redis(
            host=node.host,
            port=int(node.port),
            username=self.username,
            password=self.password,
            ssl=self.tls,
            decode_responses=True,
            single_connection_client=True,
        )


def slot_tag(key: str) -> str:
    """What Redis Cluster hashes to place `key`: the first non-empty `{...}`, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class ShardMoved(ConnectionError):
    """The shard of a sharded subscription moved (a failover or a resharding): subscribe again."""


class Listener:
    """One subscription connection: messages of the channels subscribed, and PING on that connection."""

    def __init__(self, pubsub: PubSub, sharded: bool) -> None:
        self._pubsub = pubsub
        self._sharded = sharded

    async def get_message(self, wait: float) -> dict[str, Any] | None:
        """The next message or None after `wait` s; a sharded message reads as type "message".

        ShardMoved when the server ends a sharded subscription itself (its slot moved away)."""
        message = cast(dict[str, Any] | None, await self._pubsub.get_message(timeout=wait))
        if message is None or not self._sharded:
            return message
        if message.get("type") == "sunsubscribe":
            raise ShardMoved(f"the shard of {message.get('channel')!r} moved; subscribing again")
        if message.get("type") == "smessage":
            return {**message, "type": "message"}
        return message

    async def ping(self) -> None:
        await self._pubsub.ping()


class RedisStore:
    def __init__(self, url: str | None, prefix: str, data_dir: Path | None) -> None:
        self.url = url
        self.prefix = prefix
        self.data_dir = data_dir
        self.cluster_address = ClusterAddress.parse(url) if url else None
        self._client: RedisClient | None = None
        self._embedded: embedded_redis.EmbeddedRedis | None = None  # kept alive while the store is

    @property
    def is_cluster(self) -> bool:
        return self.cluster_address is not None

    @property
    def client(self) -> RedisClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> RedisClient:
        if self.cluster_address is not None:
            return self.cluster_address.client()
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

    # ---------- pub/sub ----------

    def channel(self, *parts: object) -> str:
        """A pub/sub channel; on a cluster all of them share one hash tag, hence one shard."""
        if self.is_cluster:
            return self.prefix + "{" + self.prefix + "pubsub}:" + ":".join(str(p) for p in parts)
        return self.key(*parts)

    async def publish(self, channel: str, message: str | bytes) -> int:
        """PUBLISH, or SPUBLISH on a cluster (routed to the channel's shard, not broadcast to all nodes)."""
        if isinstance(self.client, RedisCluster):
            return int(await self.client.spublish(channel, message))
        return int(await self.client.publish(channel, message))

    @contextlib.asynccontextmanager
    async def listen(self, *channels: str) -> AsyncIterator[Listener]:
        """Subscribe to `channels` (SUBSCRIBE, or SSUBSCRIBE on the shard that owns them on a cluster),
        with the confirmations consumed: every message got from it is a published one."""
        client = self.client
        if self.cluster_address is None or not isinstance(client, RedisCluster):
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(*channels)
                await _confirmed(pubsub, len(channels))
                yield Listener(pubsub, sharded=False)
            return
        if len({slot_tag(c) for c in channels}) > 1:
            raise ValueError(f"sharded channels of different shards: {channels}")
        await client.initialize()  # the client itself first (a no-op once done)
        # then a fresh slot map: after a failover the channels' shard has a new master
        await client.nodes_manager.initialize()
        node = client.get_node_from_key(channels[0])
        if node is None:
            raise ConnectionError(f"no node of the cluster serves the slot of {channels[0]!r}")
        node_client = self.cluster_address.node_client(node)
        try:
            async with node_client.pubsub() as pubsub:
                await pubsub.ssubscribe(*channels)
                await _confirmed(pubsub, len(channels))
                yield Listener(pubsub, sharded=True)
        finally:
            await node_client.aclose()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._embedded is not None:
            # stops the server if this process started it and no other store here uses it
            await asyncio.to_thread(embedded_redis.release, self._embedded)
            self._embedded = None


async def _confirmed(pubsub: PubSub, count: int, within: float = 5.0) -> None:
    """Read the `count` subscribe confirmations, so that no published message is mistaken for one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen = 0
    while seen < count:
        left = deadline - loop.time()
        if left <= 0:
            raise ConnectionError(f"no subscribe confirmation within {within} s")
        message = await pubsub.get_message(timeout=left)
        if message is not None and message.get("type") in ("subscribe", "ssubscribe"):
            seen += 1


# KEYS[1] the lease, KEYS[2] its epoch counter (same slot); ARGV token, ttl ms.
# 0: held by another; -1: still ours (renewed); n > 0: newly ours, at epoch n.
_HOLD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return -1
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
return 0
"""

# The epoch this holder holds at: the current one when it holds already, else the next one.
_TAKE_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return tonumber(redis.call('get', KEYS[2]) or '0')
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('incr', KEYS[2])
"""

#: Adds commands to a transaction.
Queue = Callable[[RedisPipeline], object]


class Lease:
    """A Redis lease held by one process at a time; renewed on every pass, lapses after `ttl` seconds.

    Each acquisition gets the next epoch of the lease (a counter in the lease's slot that never
    expires). A write fenced by the lease (`fenced`) raises the lease's fence in the slot it writes
    to its epoch, in the same transaction, and is refused once a later epoch stands there: a holder
    whose lease was taken over cannot overwrite what the newer holder wrote, on one server and on a
    cluster alike (where the lease and the data it guards live on different shards).
    """

    def __init__(self, redis: RedisStore, name: str, ttl: float) -> None:
        self.redis = redis
        self.name = name
        self.key = redis.key("lease", name)
        # `{<lease key>}` hashes like the lease key itself (which has no braces): the same slot
        self.epoch_key = redis.key("lease-epoch", "{" + self.key + "}")
        self.ttl_ms = int(ttl * 1000)
        self.token = uuid.uuid4().hex
        #: The epoch of this holder's current acquisition (None: never held).
        self.epoch: int | None = None

    async def hold(self) -> bool:
        held = int(await self.redis.client.eval(_HOLD, 2, self.key, self.epoch_key, self.token, self.ttl_ms))
        if held > 0:
            self.epoch = held
        return held != 0

    async def take_over(self) -> None:
        """Hold the lease now, whoever held it: the old holder's fenced writes fail from here on, in
        every slot this holder writes to (or `claim`s)."""
        epoch = await self.redis.client.eval(_TAKE_OVER, 2, self.key, self.epoch_key, self.token, self.ttl_ms)
        self.epoch = int(epoch)

    async def release(self) -> None:
        if await self.redis.client.get(self.key) == self.token:
            await self.redis.client.delete(self.key)

    def fence_key(self, tag: str) -> str:
        """This lease's fence in the slot of hash tag `tag`."""
        return self.redis.key("fence", self.name, "{" + tag + "}")

    async def fenced(self, tag: str, queue: Queue) -> bool:
        """Run the commands `queue` adds to a transaction in `tag`'s slot, raising the fence there to
        this holder's epoch; False (nothing written) when a later epoch stands there already."""
        if self.epoch is None:
            return False
        fence = self.fence_key(tag)
        async with self.redis.client.pipeline(transaction=True) as pipe:
            await pipe.watch(fence)
            if int(await pipe.get(fence) or 0) > self.epoch:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(fence, self.epoch)
            queue(pipe)
            try:
                await pipe.execute()
            except WatchError:
                return False
        return True

    async def claim(self, tag: str) -> bool:
        """Raise the fence in `tag`'s slot to this holder's epoch before writing there otherwise."""
        return await self.fenced(tag, lambda _: None)
