"""The relay: publishes the committed change log to Redis pub/sub, in log order, exactly once per pass.

The change log (segment_changes) is the outbox: a change is published only after
the transaction that wrote it committed, and a crash between commit and publish
is repaired because the relay resumes from its stored position. A pass whose
PUBLISH fails changes nothing (position, late watches): the next pass publishes
the same changes again. One process at a time relays (a Redis lease); the others
stand by and take over when it lapses.

Every message is a link of a chain over the log (`Relayed`: after, through), and
every pass publishes at least one, a heartbeat when there is nothing new, so a
process that missed messages while its Redis connection was down notices within
a pass and replays the missed range from the log (`domain.live.bus`). For one release it also
publishes each pass's changes in the previous release's form (`legacy_channel`).

Ids are allocated when rows are inserted, not when they commit, so a reader can
see id 12 before id 11 commits. The relay publishes strictly in id order and waits
at a gap for up to `gap_timeout` seconds (the transaction holding it is usually a
few milliseconds from committing). A gap that outlives that is most often a
rollback; it is skipped but watched for `late_ttl` seconds, and rows that appear
in it later (a long batch recompute) are published then. Per member, order still
holds: a member's later change waits on the lock its earlier change's transaction
holds, so it always has the larger id and commits later.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.live.messages import LiveChange, Relayed, encode, encode_legacy
from domain.models import Member, RelayPosition, Segment, SegmentChange
from domain.redis_store import Lease, RedisStore
from domain.segments.engine import SEGMENT_CHANGES

log = logging.getLogger(__name__)

POSITION = "segment_changes"
#: Changes per published message.
PER_MESSAGE = 200
#: Changes read from the log per query when a range is replayed to subscribers.
REPLAY_PAGE = 500


def changes_channel(redis: RedisStore) -> str:
    """The one channel of the relayed chain, for every program: each process hears it all, in order."""
    return redis.channel("live", "changes")


def legacy_channel(redis: RedisStore, program_id: int) -> str:
    """LEGACY, remove in the next release: the previous release's processes psubscribe to one channel
    per program (`live:changes:*`) and read a bare list of changes; for one release the relay also
    publishes there, so their subscribers keep receiving changes while a rolling upgrade runs
    (docs/operations.md, "Upgrades"). Not on a Redis Cluster, which no previous release could use."""
    return redis.key("live", "changes", program_id)


@dataclass
class _Late:
    """Ids skipped as a gap, still watched in case a long transaction commits them."""

    low: int
    high: int
    until: float
    published: set[int] = field(default_factory=set)


class ChangeRelay:
    name = "live-relay"
    topics = frozenset({SEGMENT_CHANGES})

    def __init__(
        self,
        db: Database,
        redis: RedisStore,
        clock: Clock,
        *,
        batch: int = 1000,
        interval: float = 1.0,
        gap_timeout: float = 2.0,
        late_ttl: float = 3600.0,
        lease_ttl: float = 10.0,
    ) -> None:
        self.db = db
        self.redis = redis
        self.clock = clock
        self.batch = batch
        self.interval = interval
        self.gap_timeout = gap_timeout
        self.late_ttl = late_ttl
        self.lease = Lease(redis, "live-relay", lease_ttl)
        self._position: int | None = None
        self._gap: tuple[int, float] | None = None  # (first missing id, when first seen)
        self._late: list[_Late] = []

    async def run_once(self) -> bool:
        if not await self.lease.hold():
            self._position = None  # another process relays; reload the position if we take over
            return False
        if self._position is None:
            async with self.db.unit_of_work() as uow:
                self._position = await _load_position(uow.session, self.clock)
        # read, publish, then store the position in a short write of its own: no transaction is held
        # while Redis answers (on SQLite a pass would hold the database's write lock every second)
        async with self.db.read() as session:
            rows = await read_changes(session, SegmentChange.id > self._position, self.batch)
            late = await self._late_rows(session)
        ready, position, skipped = self._advance(rows)
        await self._publish(self._position, late, ready)
        # published: only now does the pass count (a failed PUBLISH leaves everything as it was)
        for change in late:
            next(w for w in self._late if w.low <= change.id <= w.high).published.add(change.id)
        self._late.extend(skipped)
        if position != self._position:
            async with self.db.unit_of_work() as uow:
                await _save_position(uow.session, position, self.clock)
            self._position = position
        return len(rows) == self.batch and bool(ready)

    def _advance(self, rows: Sequence[LiveChange]) -> tuple[list[LiveChange], int, list[_Late]]:
        """The rows that may be published now, in id order, the new position, and the gaps skipped."""
        assert self._position is not None
        position = self._position
        ready: list[LiveChange] = []
        skipped: list[_Late] = []
        now = time.monotonic()
        for row in rows:
            if row.id != position + 1:
                missing = position + 1
                if self._gap is None or self._gap[0] != missing:
                    self._gap = (missing, now)
                if now - self._gap[1] < self.gap_timeout:
                    break
                log.info(
                    "relay: ids %d..%d not committed after %.1f s", missing, row.id - 1, self.gap_timeout
                )
                skipped.append(_Late(missing, row.id - 1, now + self.late_ttl))
            ready.append(row)
            position = row.id
        return ready, position, skipped

    async def _late_rows(self, session: AsyncSession) -> list[LiveChange]:
        """Rows that appeared in skipped gaps and were not published yet."""
        now = time.monotonic()
        self._late = [r for r in self._late if r.until > now]
        if not self._late:
            return []
        found = await read_changes(
            session, or_(*(SegmentChange.id.between(r.low, r.high) for r in self._late)), self.batch
        )
        return [
            row
            for row in found
            if row.id not in next(r for r in self._late if r.low <= row.id <= r.high).published
        ]

    async def _publish(self, position: int, late: list[LiveChange], ready: list[LiveChange]) -> None:
        """The chain's next links after `position`: late rows, then the ready ones; else a heartbeat."""
        messages = [
            Relayed(position, position, late[start : start + PER_MESSAGE])
            for start in range(0, len(late), PER_MESSAGE)
        ]
        after = position
        for start in range(0, len(ready), PER_MESSAGE):
            chunk = ready[start : start + PER_MESSAGE]
            messages.append(Relayed(after, chunk[-1].id, chunk))
            after = chunk[-1].id
        channel = changes_channel(self.redis)
        for message in messages or [Relayed(position, position, [])]:
            await self.redis.publish(channel, encode(message))
        if not self.redis.is_cluster:
            await self._publish_legacy(late + ready)

    async def _publish_legacy(self, changes: list[LiveChange]) -> None:
        """LEGACY, remove in the next release (`legacy_channel`)."""
        by_program: dict[int, list[LiveChange]] = defaultdict(list)
        for change in changes:
            by_program[change.program_id].append(change)
        for program_id, theirs in by_program.items():
            for start in range(0, len(theirs), PER_MESSAGE):
                await self.redis.client.publish(
                    legacy_channel(self.redis, program_id), encode_legacy(theirs[start : start + PER_MESSAGE])
                )


async def read_changes(session: AsyncSession, where: ColumnElement[bool], limit: int) -> list[LiveChange]:
    """Change log rows matching `where`, in log order, as they go on the wire."""
    query = (
        select(
            SegmentChange.id,
            SegmentChange.program_id,
            Segment.key,
            Member.external_id,
            SegmentChange.change,
            SegmentChange.at,
        )
        .join(Segment, Segment.id == SegmentChange.segment_id)
        .join(Member, Member.id == SegmentChange.member_id)
        .where(where)
        .order_by(SegmentChange.id)
        .limit(limit)
    )
    return [LiveChange(*row) for row in await session.execute(query)]


def wanted(program_id: int, keys: Iterable[str] | None) -> ColumnElement[bool]:
    """The changes a subscription wants: its program's, and only those of `keys` when it names some."""
    clause = SegmentChange.program_id == program_id
    if keys is not None:
        clause &= Segment.key.in_(sorted(keys))
    return clause


async def replay_pages(
    db: Database, where: ColumnElement[bool], after: int, through: int | None = None
) -> AsyncGenerator[list[LiveChange], None]:
    """The changes matching `where` after `after` (up to `through`), from the log, in log order:
    pages of at most REPLAY_PAGE, each read in a short transaction of its own."""
    while True:
        bounds = SegmentChange.id > after
        if through is not None:
            bounds &= SegmentChange.id <= through
        async with db.read() as session:
            page = await read_changes(session, where & bounds, REPLAY_PAGE)
        if page:
            yield page
        if len(page) < REPLAY_PAGE:
            return
        after = page[-1].id


async def log_end(session: AsyncSession) -> int:
    """The change log's last id (0 when empty)."""
    return await session.scalar(select(func.coalesce(func.max(SegmentChange.id), 0))) or 0


async def stored_position(session: AsyncSession) -> int | None:
    """The relay's stored position: the last change-log id it published (None before it first ran)."""
    return await session.scalar(select(RelayPosition.position).where(RelayPosition.name == POSITION))


async def relayed_position(session: AsyncSession) -> int:
    """How far the relay has published (its stored position; the log's end before it ever ran)."""
    stored = await stored_position(session)
    return stored if stored is not None else await log_end(session)


async def _load_position(session: AsyncSession, clock: Clock) -> int:
    """Where relaying resumes: the stored position, or the log's end the first time."""
    stored = await stored_position(session)
    if stored is not None:
        return stored
    end = await log_end(session)
    await session.execute(
        insert_for(session, RelayPosition.__table__)
        .values(name=POSITION, position=end, updated_at=clock.now())
        .on_conflict_do_nothing()
    )
    stored = await stored_position(session)  # another process's, if it inserted first
    return stored if stored is not None else end


async def _save_position(session: AsyncSession, position: int, clock: Clock) -> None:
    await session.execute(
        update(RelayPosition)
        .where(RelayPosition.name == POSITION, RelayPosition.position < position)
        .values(position=position, updated_at=clock.now())
    )
