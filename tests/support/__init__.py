"""Test helpers that are not fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from api.runtime import Services
    from domain.clock import Clock
    from domain.settings import Settings

T = TypeVar("T")


class ShiftableClock:
    """The real time plus an offset tests may move; never sleep to wait for time."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def shift(self, delta: timedelta) -> None:
        self.offset += delta

    def reset(self) -> None:
        self.offset = timedelta()


class FrozenClock:
    """A clock that stands still at `at` until a test moves it: two runs of the same work see one `now`."""

    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


def move_to(clock: ShiftableClock, instant: datetime) -> None:
    """Set the clock to `instant` (it keeps running from there)."""
    clock.shift(instant - clock.now())


@dataclass
class Harness:
    """Services on a private event loop: hypothesis cannot re-enter pytest-asyncio's session loop."""

    loop: asyncio.AbstractEventLoop
    services: Services

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)


@contextmanager
def private_services(settings: Settings, clock: Clock | None = None) -> Iterator[Harness]:
    """Services on a loop of their own, with `clock` (default: a `ShiftableClock`)."""
    from api.runtime import build_services

    loop = asyncio.new_event_loop()
    services = build_services(settings, clock=clock or ShiftableClock())
    try:
        yield Harness(loop, services)
    finally:
        # close() also awaits the bus's commit announcements still being published, which a
        # closed loop would otherwise destroy half-way (an unraisable warning in a later test)
        loop.run_until_complete(services.close())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
