"""Test helpers that are not fixtures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


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
