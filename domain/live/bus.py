"""Per process: one Redis pub/sub connection that fans relayed changes out to local subscribers
and carries commit announcements between processes.

A subscriber is a bounded queue. The bus never waits on a subscriber: when its
queue is full it is ended, and its reader closes the subscription with the
cursor to resume from. Ingest therefore never slows down for a slow or dead
connection.

Nothing relayed is lost silently. Each relayed message is a link of the relay's
chain (`Relayed`); when one arrives whose start lies beyond what this process
heard (its pub/sub connection was down, or redis-py reconnected it quietly), the
bus first replays the missed range from the change log to the subscribers it
had, in log order, then goes on. If that replay fails, those subscribers are
ended with ChangesMissed and the cursor of the last change they were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import aclosing, contextmanager

import orjson
from sqlalchemy import ColumnElement, or_

from domain.db.engine import Database
from domain.errors import DomainError
from domain.live.messages import LiveChange, Relayed, decode
from domain.live.relay import changes_channel, relayed_position, replay_pages, wanted
from domain.live.sequence import Missed, RelayedSequence
from domain.ops.metrics import (
    LIVE_CHANGES_REPLAYED,
    LIVE_GAPS_DETECTED,
    LIVE_GAPS_REPLAYED,
    LIVE_RECONNECTS,
    LIVE_SUBSCRIBERS_CLOSED,
    LIVE_SUBSCRIBERS_TOO_SLOW,
)
from domain.redis_store import Listener, RedisStore

log = logging.getLogger(__name__)

Wake = Callable[[Iterable[str]], None]


class SubscriptionInterrupted(DomainError):
    """The server ends a subscription that can no longer be served in order; `since` resumes it."""

    def __init__(self, message: str, resume_after: int | None) -> None:
        cursor = f'since: "{resume_after}"' if resume_after is not None else "no since (nothing was sent yet)"
        super().__init__(f"{message}; resume with {cursor}")
        self.resume_after = resume_after


class SubscriberTooSlow(SubscriptionInterrupted):
    """A subscriber fell more than its queue's capacity behind."""

    code = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, capacity: int, resume_after: int | None) -> None:
        super().__init__(f"too slow: over {capacity} changes queued", resume_after)


class ChangesMissed(SubscriptionInterrupted):
    """This process missed relayed changes (Redis was unreachable) and could not replay them from the log."""

    code = "CHANGES_MISSED"

    def __init__(self, resume_after: int | None) -> None:
        super().__init__("interrupted: changes were missed while Redis was unreachable", resume_after)


Interruption = Callable[[int | None], SubscriptionInterrupted]


class Subscriber:
    """One subscription's bounded queue of changes, filtered by program and segment keys."""

    def __init__(self, program_id: int, keys: frozenset[str] | None, capacity: int) -> None:
        self.program_id = program_id
        self.keys = keys
        self.capacity = capacity
        self._queue: asyncio.Queue[LiveChange | None] = asyncio.Queue(capacity + 1)
        self._ending: Interruption | None = None

    @property
    def ended(self) -> bool:
        return self._ending is not None

    def offer(self, change: LiveChange) -> None:
        if self._ending is not None or (self.keys is not None and change.segment_key not in self.keys):
            return
        if self._queue.qsize() >= self.capacity:
            self.end(lambda after: SubscriberTooSlow(self.capacity, after))
            return
        self._queue.put_nowait(change)

    def end(self, interruption: Interruption) -> None:
        """Take no more changes; the reader gets what is queued, then `interruption`."""
        if self._ending is None:
            self._ending = interruption
            self._queue.put_nowait(None)  # the one spare slot: wakes the reader to end the subscription

    def reset(self) -> None:
        """Forget what is queued and the end (the reader is catching up from the log instead)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._ending = None

    async def next(self, resume_after: int | None) -> LiveChange:
        change = await self._queue.get()
        if change is None:
            assert self._ending is not None
            raise self._ending(resume_after)
        return change


class ConnectionSilent(ConnectionError):
    """The pub/sub connection heard nothing, not even the answer to a PING: it is dead but open."""


class LiveBus:
    def __init__(
        self,
        redis: RedisStore,
        db: Database,
        *,
        queue_capacity: int = 1000,
        silence_s: float = 10.0,
        ping_timeout_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.db = db
        self.queue_capacity = queue_capacity
        #: After this long without a message (the relay publishes at least one a second), PING ...
        self.silence_s = silence_s
        #: ... and without the answer within this long, drop the connection and open a new one.
        self.ping_timeout_s = ping_timeout_s
        self.sequence = RelayedSequence()
        self._subscribers: dict[int, set[Subscriber]] = {}
        self._wake: Wake | None = None
        self._reader: asyncio.Task[None] | None = None
        self._publishes: set[asyncio.Task[object]] = set()
        self.wake_channel = redis.channel("live", "wake")

    # ---------- announcements ----------

    def announce(self, topics: set[str]) -> None:
        """After a commit: wake this process's loops at once and the other processes through Redis."""
        if self._wake is not None:
            self._wake(topics)
        try:
            task: asyncio.Task[object] = asyncio.get_running_loop().create_task(self._broadcast(topics))
        except RuntimeError:  # no event loop (a synchronous caller): the loops' intervals cover it
            return
        self._publishes.add(task)
        task.add_done_callback(self._published)

    async def _broadcast(self, topics: set[str]) -> object:
        return await self.redis.publish(self.wake_channel, orjson.dumps(sorted(topics)))

    def _published(self, task: asyncio.Task[object]) -> None:
        self._publishes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not announce a commit through Redis: %s", task.exception())

    # ---------- subscriptions ----------

    async def anchor(self) -> None:
        """Know where the chain stands before anyone subscribes: the relay's stored position.

        A subscriber registered afterwards is handed every change after the bus's position then.
        """
        if self.sequence.position is None:
            async with self.db.read() as session:
                self.sequence.anchor(await relayed_position(session))

    @contextmanager
    def subscribe(self, program_id: int, keys: frozenset[str] | None) -> Iterator[Subscriber]:
        """Register a subscriber (after `anchor`): it is offered every change after the bus's position."""
        subscriber = Subscriber(program_id, keys, self.queue_capacity)
        self._subscribers.setdefault(program_id, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            local = self._subscribers.get(program_id)
            if local is not None:
                local.discard(subscriber)
                if not local:
                    del self._subscribers[program_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def dispatch(self, changes: Iterable[LiveChange]) -> None:
        for change in changes:
            self._offer(change, self._subscribers.get(change.program_id, ()))

    def _offer(self, change: LiveChange, subscribers: Iterable[Subscriber]) -> None:
        for subscriber in subscribers:
            was_ended = subscriber.ended
            subscriber.offer(change)
            if subscriber.ended and not was_ended:
                LIVE_SUBSCRIBERS_TOO_SLOW.inc()

    # ---------- the reader ----------

    async def start(self, wake: Wake) -> None:
        self._wake = wake
        self._reader = asyncio.create_task(self._read_forever(), name="live-bus")

    async def stop(self) -> None:
        """Stop reading, and cancel the announcements still being published (before Redis closes)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._wake = None
        for task in self._publishes:
            task.cancel()
        await asyncio.gather(*self._publishes, return_exceptions=True)

    async def _read_forever(self) -> None:
        while True:
            try:
                await self.anchor()
                async with self.redis.listen(self.wake_channel, changes_channel(self.redis)) as listener:
                    if self._wake is not None:  # wakes sent while we were not listening are lost
                        self._wake(["*"])
                    await self._listen(listener)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                LIVE_RECONNECTS.inc()
                log.warning("live bus: lost its connection (%s); reconnecting in 1 s", error)
                await asyncio.sleep(1)

    async def _listen(self, listener: Listener) -> None:
        """Receive until the connection fails, or falls silent: a connection that is open but dead
        (a half-open TCP connection after a failover or a partition) would otherwise hear nothing,
        for hours, without an error. Silence is checked with a PING on the connection itself, so an
        idle program (no relay publishing) keeps its connection."""
        clock = asyncio.get_running_loop().time
        heard = clock()
        pinged: float | None = None
        while True:
            message = await listener.get_message(min(self.silence_s, self.ping_timeout_s) / 2)
            now = clock()
            if message is not None:
                heard, pinged = now, None
                await self._receive(message)
            elif pinged is not None and now - pinged > self.ping_timeout_s:
                raise ConnectionSilent(
                    f"nothing heard for {now - heard:.0f} s, not even the answer to a PING"
                )
            elif pinged is None and now - heard > self.silence_s:
                await listener.ping()
                pinged = now

    async def _receive(self, message: dict[str, object]) -> None:
        """One pub/sub message; a malformed one is logged and skipped (the connection stays)."""
        channel, data = message.get("channel"), message.get("data")
        if message.get("type") != "message" or not isinstance(data, str | bytes):
            return
        try:
            body = _topics(data) if channel == self.wake_channel else decode(data)
        except ValueError as error:
            log.warning("live bus: skipped a malformed message on %s: %s", channel, error)
            return
        if isinstance(body, Relayed):
            await self.receive(body)
        elif self._wake is not None:
            self._wake(body)

    async def receive(self, message: Relayed) -> None:
        """Hand out a relayed message's changes, after replaying what this process missed before it."""
        missed, fresh = self.sequence.take(message)
        if missed is not None:
            await self.replay(missed)
        self.dispatch(fresh)

    # ---------- gaps ----------

    async def replay(self, missed: Missed) -> None:
        """Hand the subscribers registered now the changes of `missed` from the log, in log order;
        end those it cannot serve with ChangesMissed."""
        LIVE_GAPS_DETECTED.inc()
        targets = {
            program: serving
            for program, subscribers in self._subscribers.items()
            if (serving := [s for s in subscribers if not s.ended])
        }
        count = sum(len(s) for s in targets.values())
        if not count:
            log.info("live bus: missed log ids %d..%d; no local subscriber", missed.after + 1, missed.through)
            return
        log.warning(
            "live bus: missed relayed changes (log ids %d..%d, while not connected to Redis); "
            "replaying them from the log to %d local subscriptions",
            missed.after + 1,
            missed.through,
            count,
        )
        replayed = 0
        try:
            async with aclosing(
                replay_pages(self.db, _wanted(targets), missed.after, missed.through)
            ) as pages:
                async for page in pages:
                    for change in page:
                        self._offer(change, targets[change.program_id])
                    self.sequence.remember(c.id for c in page)
                    replayed += len(page)
                    if all(s.ended for subscribers in targets.values() for s in subscribers):
                        break  # each of them ended (too slow): nobody reads on
        except Exception as error:
            closed = 0
            for subscribers in targets.values():
                for subscriber in subscribers:
                    if not subscriber.ended:
                        subscriber.end(ChangesMissed)
                        closed += 1
            LIVE_SUBSCRIBERS_CLOSED.inc(closed)
            log.error(
                "live bus: could not replay log ids %d..%d (%s); closed %d subscriptions with 4008 "
                "and the cursor to resume from",
                missed.after + 1,
                missed.through,
                error,
                closed,
            )
            return
        LIVE_GAPS_REPLAYED.inc()
        LIVE_CHANGES_REPLAYED.inc(replayed)
        log.info("live bus: replayed %d missed changes to %d local subscriptions", replayed, count)


def _topics(data: str | bytes) -> list[str]:
    """The topics a commit announcement names (`announce`); ValueError when it is not a list of them."""
    topics = orjson.loads(data)
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise ValueError(f"not a list of topics: {str(data)[:100]}")
    return topics


def _wanted(targets: dict[int, list[Subscriber]]) -> ColumnElement[bool]:
    """What the subscribers want: their programs, and only their keys where all of a program's filter."""
    clauses = []
    for program_id, subscribers in targets.items():
        filtering = all(s.keys is not None for s in subscribers)
        clauses.append(
            wanted(program_id, set().union(*(s.keys or () for s in subscribers)) if filtering else None)
        )
    return or_(*clauses)
