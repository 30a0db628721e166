"""The Redis side of boards: one sorted set per board, scope, period and period start.

Keys are `<prefix>lb:{<program>:<board>}:<scope>:<period>:<start>` where start
is the period start in epoch seconds (`all` for ALL_TIME). The braces are a Redis
Cluster hash tag: all keys of a board live on one shard, so a rebuild can swap
them in with RENAME. Elements are member ids; scores are packed by `scores.py`.
Closed periods expire `keep_periods` periods after they end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import cast

from domain.redis_store import Lease, RedisClient, RedisPipeline, RedisStore, slot_tag
from gamification.leaderboards.scores import decode
from gamification.periods import PeriodKind


@dataclass(frozen=True)
class BoardKey:
    program_id: int
    board: str
    scope: str
    period: PeriodKind
    start: datetime | None

    def name(self, redis: RedisStore) -> str:
        start = "all" if self.start is None else str(int(self.start.timestamp()))
        return redis.key(
            "lb", "{" + board_tag(self.program_id, self.board) + "}", self.scope, self.period.value, start
        )


def board_tag(program_id: int, board: str) -> str:
    """The hash tag of every key of one board (and of the feeder lease's fence there)."""
    return f"{program_id}:{board}"


def board_pattern(redis: RedisStore, program_id: int, board: str) -> str:
    """Matches every key of one board (for SCAN)."""
    return redis.key("lb", "{" + board_tag(program_id, board) + "}", "*").replace("[", "\\[")


@dataclass(frozen=True)
class RankedMember:
    rank: int  # 1-based
    member_id: int
    points: int


@dataclass(frozen=True)
class Update:
    """Scores to set and members to drop on one key, and when the key may expire (None: never)."""

    scores: Mapping[int, int]
    removed: Iterable[int]
    expire_at: datetime | None


async def apply_updates(
    client: RedisClient, updates: Mapping[str, Update], fence: Lease | None = None
) -> bool:
    """Write absolute scores (ZADD) and removals, atomically per board (MULTI/EXEC in the board's
    slot: a Redis Cluster runs no transaction across slots); idempotent.

    With a `fence`, a board is written only while no later holder of the lease has written it (the
    lease's epoch, `Lease.fenced`): a rebuild that took the lease over cannot be overwritten by a
    stale pass. False when some board was refused.
    """
    by_slot: dict[str, dict[str, Update]] = defaultdict(dict)
    for key, update in updates.items():
        by_slot[slot_tag(key)][key] = update
    written = True
    for tag, group in by_slot.items():
        if fence is not None:
            written = await fence.fenced(tag, partial(_queue, updates=group)) and written
            continue
        async with client.pipeline(transaction=True) as pipe:
            _queue(pipe, group)
            await pipe.execute()
    return written


def _queue(pipe: RedisPipeline, updates: Mapping[str, Update]) -> None:
    for key, update in updates.items():
        if update.scores:
            pipe.zadd(key, {str(m): s for m, s in update.scores.items()})
        removed = [str(m) for m in update.removed]
        if removed:
            pipe.zrem(key, *removed)
        if update.expire_at is not None:
            pipe.expireat(key, int(update.expire_at.timestamp()))


async def top(client: RedisClient, key: str, first: int, offset: int) -> list[RankedMember]:
    rows = cast(
        list[tuple[str, float]], await client.zrevrange(key, offset, offset + first - 1, withscores=True)
    )
    return [RankedMember(offset + i + 1, int(m), decode(s).points) for i, (m, s) in enumerate(rows)]


async def around(client: RedisClient, key: str, member_id: int, radius: int) -> list[RankedMember]:
    rank = cast(int | None, await client.zrevrank(key, str(member_id)))
    if rank is None:
        return []
    return await top(client, key, 2 * radius + 1 + min(rank - radius, 0), max(rank - radius, 0))


# Rank and score of one member at the same moment, in one round trip (a Lua script runs atomically,
# on one server and on a cluster alike; a MULTI/EXEC costs a cluster client far more).
_ENTRY = """
local rank = redis.call('zrevrank', KEYS[1], ARGV[1])
if not rank then return {} end
return {rank, redis.call('zscore', KEYS[1], ARGV[1])}
"""


async def entry(client: RedisClient, key: str, member_id: int) -> RankedMember | None:
    found = cast(list[int | str], await client.eval(_ENTRY, 1, key, str(member_id)))
    if not found:
        return None
    rank, score = found
    return RankedMember(int(rank) + 1, member_id, decode(float(score)).points)


async def size(client: RedisClient, key: str) -> int:
    return int(await client.zcard(key))


def feeder_lease(redis: RedisStore, ttl: float = 10.0) -> Lease:
    """Held by whoever writes boards: the feeder, or a rebuild that pauses it."""
    return Lease(redis, "leaderboard-feeder", ttl)
