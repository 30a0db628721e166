"""Segment changes as a stream: replayed from the log after a cursor, then live from the bus."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing

from sqlalchemy import select

from domain.db.engine import Database
from domain.errors import InvalidInput
from domain.live.bus import LiveBus, Subscriber
from domain.live.messages import LiveChange
from domain.live.relay import log_end, replay_pages, wanted
from domain.models import Segment
from domain.ops.retention import pruned_through

MAX_REPLAY = 100_000
MAX_KEYS = 100


class LiveService:
    def __init__(self, db: Database, bus: LiveBus) -> None:
        self.db = db
        self.bus = bus

    async def stream(
        self, program_id: int, segment_keys: Sequence[str] | None, since: str | None
    ) -> AsyncGenerator[LiveChange, None]:
        """Every change of the program's segments (or of `segment_keys`), committed, in log order.

        With `since` (a cursor a change carried), the changes after it are replayed
        from the log first; nothing between the two is lost or repeated. Without it,
        the stream starts at the log's end. A subscription that cannot go on in order
        (it fell too far behind, or this process missed changes and could not replay
        them) ends with SubscriptionInterrupted naming the cursor to resume from:
        the highest it was sent, or where it started.
        """
        keys = await self._known_keys(program_id, segment_keys)
        after = parse_cursor(since)
        await self.bus.anchor()
        if after is not None:
            await self._check_retained(after)
        with self.bus.subscribe(program_id, keys) as subscriber:
            replayed: set[int] = set()
            if after is None:
                after = await self._log_end()
            last = after
            if since is not None:
                async for change in self._replay(program_id, keys, after, subscriber):
                    replayed.add(change.id)
                    last = change.id
                    yield change
            while True:
                change = await subscriber.next(last)
                if change.id in replayed or change.id <= after:
                    replayed.discard(change.id)  # delivered already, or before the cursor the client holds
                    continue
                last = max(last, change.id)  # a late commit may carry a lower id than one already sent
                yield change

    async def _replay(
        self, program_id: int, keys: frozenset[str] | None, after: int, subscriber: Subscriber
    ) -> AsyncIterator[LiveChange]:
        count = 0
        while True:
            async with aclosing(replay_pages(self.db, wanted(program_id, keys), after)) as pages:
                async for page in pages:
                    for change in page:
                        after = change.id
                        yield change
                    count += len(page)
                    if count > MAX_REPLAY:
                        raise InvalidInput(
                            f"since: more than {MAX_REPLAY} changes happened after this cursor; "
                            "reload the segments and subscribe without since"
                        )
            if not subscriber.ended:
                return
            subscriber.reset()  # what its queue dropped meanwhile is in the log: read on

    async def _log_end(self) -> int:
        async with self.db.read() as session:
            return await log_end(session)

    async def _check_retained(self, after: int) -> None:
        """Refuse a cursor whose next changes `loyalty prune` may have deleted: a replay would skip them."""
        async with self.db.read() as session:
            pruned = await pruned_through(session)
        if after < pruned:
            raise InvalidInput(
                f"since: the changes after {after} up to {pruned} were pruned (retention); "
                "reload the segments and subscribe without since"
            )

    async def _known_keys(self, program_id: int, segment_keys: Sequence[str] | None) -> frozenset[str] | None:
        if segment_keys is None:
            return None
        if len(segment_keys) > MAX_KEYS:
            raise InvalidInput(f"segmentKeys: at most {MAX_KEYS} keys per subscription")
        async with self.db.read() as session:
            found = set(
                await session.scalars(
                    select(Segment.key).where(Segment.program_id == program_id, Segment.key.in_(segment_keys))
                )
            )
        for index, key in enumerate(segment_keys):
            if key not in found:
                raise InvalidInput(f"segmentKeys[{index}]: no segment {key!r} in this program")
        return frozenset(segment_keys)


def parse_cursor(since: str | None) -> int | None:
    if since is None:
        return None
    if not since.isdigit() or len(since) > 18:
        raise InvalidInput(
            f"since: {since!r} is not a change cursor (use the `cursor` of a SegmentChangeEvent)"
        )
    return int(since)
