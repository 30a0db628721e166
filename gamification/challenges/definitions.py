"""Challenge definitions: the vocabularies, the validation of an admin's input, the period windows.

Pure: no I/O. A challenge counts the ACCEPTED events of one type whose occurredAt
falls in one calendar period (gamification/periods.py, in the program's timezone);
reaching `target` completes it once per member and period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from domain.errors import InvalidInput
from domain.events.validation import EVENT_TYPE
from domain.programs.service import validate_key
from gamification.periods import PeriodKind, period_end, period_start

MAX_TARGET = 10_000
MAX_POINTS = 1_000_000
MAX_NAME = 200
#: Active challenges per program: progress reads one column per challenge.
MAX_ACTIVE = 100
#: The stored period start of ALL_TIME completions (the column is part of the primary key).
ALL_TIME_START = datetime(1970, 1, 1, tzinfo=UTC)


class ChallengePeriod(StrEnum):
    """The calendar period a challenge's count restarts with (PeriodKind's values)."""

    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    QUARTERLY = "QUARTERLY"
    YEARLY = "YEARLY"
    ALL_TIME = "ALL_TIME"

    @property
    def kind(self) -> PeriodKind:
        return PeriodKind(self.value)


@dataclass(frozen=True)
class ChallengeDraft:
    """A challenge as an admin gives it."""

    key: str
    name: str
    event_type: str
    target: int
    period: str
    points: int


def validate_challenge(draft: ChallengeDraft) -> ChallengeDraft:
    """The draft with its name trimmed; BAD_USER_INPUT naming the first faulty field."""
    validate_key(draft.key, "key")
    name = draft.name.strip()
    if not name:
        raise InvalidInput("name: must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"name: longer than {MAX_NAME} characters")
    check_event_type(draft.event_type)
    if not 1 <= draft.target <= MAX_TARGET:
        raise InvalidInput(f"target: must be between 1 and {MAX_TARGET}, got {draft.target}")
    if draft.period not in ChallengePeriod.__members__:
        known = ", ".join(ChallengePeriod)
        raise InvalidInput(f"period: {draft.period[:40]!r} is not one of {known}")
    if not 0 <= draft.points <= MAX_POINTS:
        raise InvalidInput(f"points: must be between 0 and {MAX_POINTS}, got {draft.points}")
    return ChallengeDraft(draft.key, name, draft.event_type, draft.target, draft.period, draft.points)


def check_event_type(value: str, field: str = "eventType") -> str:
    if not EVENT_TYPE.match(value):
        raise InvalidInput(f"{field}: {value[:70]!r} does not match [a-z][a-z0-9_]{{0,63}}")
    return value


@dataclass(frozen=True)
class Window:
    """The events one challenge counts in one period: [start, end) of `event_type`; no bounds = all time."""

    event_type: str
    start: datetime | None
    end: datetime | None

    @property
    def stored_start(self) -> datetime:
        """The completion row's period_start (ALL_TIME_START for all time)."""
        return ALL_TIME_START if self.start is None else self.start

    def contains(self, at: datetime) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)


def window_of(period: ChallengePeriod, event_type: str, at: datetime, tz: ZoneInfo) -> Window:
    """The window of the period containing `at`."""
    start = period_start(period.kind, at, tz)
    return Window(event_type, start, period_end(period.kind, start, tz))


def completion_key(challenge_id: int, member_id: int, window: Window) -> str:
    """The ledger idempotency key of a completion's bonus: one per challenge, member and period."""
    return f"challenge:{challenge_id}:{member_id}:{window.stored_start.isoformat()}"
