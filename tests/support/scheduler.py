"""Running the time-flip scheduler's passes at an instant the test chooses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from domain.segments.membership import Flip
from domain.segments.scheduler import TimeFlipScheduler

if TYPE_CHECKING:
    from api.runtime import Services


@dataclass
class PinnedClock:
    """A clock that stands still at `at`."""

    at: datetime

    def now(self) -> datetime:
        return self.at


async def flips_at(services: Services, at: datetime, batch: int = 500) -> list[Flip]:
    """Run scheduler passes as of `at` until nothing is due; the flips they wrote."""
    scheduler = TimeFlipScheduler(services.db, PinnedClock(at), services.segments.engine, batch=batch)
    flips: list[Flip] = []
    while True:
        claimed, written = await scheduler.pass_once()
        flips += written
        if not claimed:
            return flips
