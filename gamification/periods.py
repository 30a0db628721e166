"""Calendar periods of boards and challenges, in the program's timezone (UTC unless configured).

Pure: no I/O. A period is named by its kind and its start, an aware UTC datetime
of the local midnight that opens it (weeks open on Monday). ALL_TIME has no start.
Local midnights are found with zoneinfo, so a day is 23 or 25 hours long across
a DST change and still starts at local midnight.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class PeriodKind(StrEnum):
    ALL_TIME = "ALL_TIME"
    YEARLY = "YEARLY"
    QUARTERLY = "QUARTERLY"
    MONTHLY = "MONTHLY"
    WEEKLY = "WEEKLY"
    DAILY = "DAILY"


#: The kinds a leaderboard may keep (the contract's LeaderboardPeriod).
BOARD_PERIODS = (PeriodKind.ALL_TIME, PeriodKind.MONTHLY, PeriodKind.WEEKLY, PeriodKind.DAILY)


def period_start(kind: PeriodKind, at: datetime, tz: ZoneInfo) -> datetime | None:
    """The start of the period of `kind` that contains `at`; None for ALL_TIME."""
    if kind == PeriodKind.ALL_TIME:
        return None
    local = at.astimezone(tz).date()
    return _midnight(_first_day(kind, local), tz)


def period_end(kind: PeriodKind, start: datetime | None, tz: ZoneInfo) -> datetime | None:
    """The end (exclusive) of the period that opens at `start`; None for ALL_TIME."""
    if kind == PeriodKind.ALL_TIME or start is None:
        return None
    return shift(kind, start, 1, tz)


def shift(kind: PeriodKind, start: datetime, periods: int, tz: ZoneInfo) -> datetime:
    """The start of the period `periods` after (negative: before) the one that opens at `start`."""
    first = start.astimezone(tz).date()
    if kind == PeriodKind.DAILY:
        day = first + timedelta(days=periods)
    elif kind == PeriodKind.WEEKLY:
        day = first + timedelta(weeks=periods)
    else:
        months = {PeriodKind.MONTHLY: 1, PeriodKind.QUARTERLY: 3, PeriodKind.YEARLY: 12}[kind] * periods
        index = first.year * 12 + first.month - 1 + months
        day = date(index // 12, index % 12 + 1, 1)
    return _midnight(day, tz)


def is_period_start(kind: PeriodKind, start: datetime, tz: ZoneInfo) -> bool:
    return period_start(kind, start, tz) == start


def _first_day(kind: PeriodKind, day: date) -> date:
    if kind == PeriodKind.DAILY:
        return day
    if kind == PeriodKind.WEEKLY:
        return day - timedelta(days=day.weekday())
    if kind == PeriodKind.MONTHLY:
        return day.replace(day=1)
    if kind == PeriodKind.QUARTERLY:
        return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return date(day.year, 1, 1)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    # fold=0 picks the first of two midnights; a midnight skipped by DST resolves forward
    local = datetime.combine(day, time(0), tzinfo=tz)
    return local.astimezone(UTC)
