"""Per process: one Redis pub/sub connection that fans relayed changes out to local subscribers
and carries commit announcements between processes.

A subscriber is a bounded queue. The bus never waits on a subscriber: when its
queue is full it is marked overflowed, and its reader ends the subscription with
the cursor to resume from. Ingest therefore never slows down for a slow or dead
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import orjson

from domain.errors import DomainError
from domain.live.messages import LiveChange, decode
from domain.live.relay import changes_channel
from domain.redis_store import RedisStore

log = logging.getLogger(__name__)

Wake = Callable[[Iterable[str]], None]


class SubscriberTooSlow(DomainError):
    """A subscriber fell more than its queue's capacity behind."""

    code = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, capacity: int, resume_after: int | None) -> None:
        cursor = f'since: "{resume_after}"' if resume_after is not None else "no since (nothing was sent yet)"
        super().__init__(f"too slow: over {capacity} changes queued; resume with {cursor}")
        self.resume_after = resume_after


class Subscriber:
    """One subscription's bounded queue of changes, filtered by program and segment keys."""

    def __init__(self, program_id: int, keys: frozenset[str] | None, capacity: int) -> None:
        self.program_id = program_id
        self.keys = keys
        self.capacity = capacity
        self._queue: asyncio.Queue[LiveChange | None] = asyncio.Queue(capacity + 1)
        self.overflowed = False

    def offer(self, change: LiveChange) -> None:
        if self.overflowed or (self.keys is not None and change.segment_key not in self.keys):
            return
        if self._queue.qsize() >= self.capacity:
            self.overflowed = True
            self._queue.put_nowait(None)  # the one spare slot: wakes the reader to end the subscription
            return
        self._queue.put_nowait(change)

    def reset(self) -> None:
        """Forget what is queued and the overflow (the reader is catching up from the log instead)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.overflowed = False

    async def next(self, resume_after: int | None) -> LiveChange:
        change = await self._queue.get()
        if change is None:
            raise SubscriberTooSlow(self.capacity, resume_after)
        return change


class LiveBus:
    def __init__(self, redis: RedisStore, *, queue_capacity: int = 1000) -> None:
        self.redis = redis
        self.queue_capacity = queue_capacity
        self._subscribers: dict[int, set[Subscriber]] = {}
        self._wake: Wake | None = None
        self._reader: asyncio.Task[None] | None = None
        self._publishes: set[asyncio.Task[object]] = set()
        self.wake_channel = redis.key("live", "wake")

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
        return await self.redis.client.publish(self.wake_channel, orjson.dumps(sorted(topics)))

    def _published(self, task: asyncio.Task[object]) -> None:
        self._publishes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not announce a commit through Redis: %s", task.exception())

    # ---------- subscriptions ----------

    @contextmanager
    def subscribe(self, program_id: int, keys: frozenset[str] | None) -> Iterator[Subscriber]:
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
            for subscriber in self._subscribers.get(change.program_id, ()):
                subscriber.offer(change)

    # ---------- the reader ----------

    async def start(self, wake: Wake) -> None:
        self._wake = wake
        self._reader = asyncio.create_task(self._read_forever(), name="live-bus")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._wake = None

    async def _read_forever(self) -> None:
        pattern = changes_channel(self.redis, "*")
        while True:
            try:
                async with self.redis.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.wake_channel)
                    await pubsub.psubscribe(pattern)
                    if self._wake is not None:  # wakes sent while we were not listening are lost
                        self._wake(["*"])
                    async for message in pubsub.listen():
                        self._receive(message)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("live bus lost Redis (%s); reconnecting in 1 s", error)
                await asyncio.sleep(1)

    def _receive(self, message: dict[str, object]) -> None:
        kind, data = message.get("type"), message.get("data")
        if not isinstance(data, str | bytes):
            return
        if kind == "pmessage":
            self.dispatch(decode(data))
        elif kind == "message" and self._wake is not None:
            self._wake(orjson.loads(data))
