"""Board definitions: what a board ranks, over whom, and which periods it keeps.

Every program has the built-in board `points` (posted points earned, every
period, whole program) without storing anything; defining a board with the key
`points` replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput, NotFound
from domain.events.validation import EVENT_TYPE
from domain.models import Leaderboard, Segment
from domain.programs.service import validate_key
from gamification.periods import BOARD_PERIODS, PeriodKind

MAX_KEEP_PERIODS = 120
MAX_SNAPSHOT_SIZE = 10_000
DEFAULT_KEEP_PERIODS = 12
DEFAULT_SNAPSHOT_SIZE = 1000


class BoardMetric(StrEnum):
    #: Posted points earned: redemptions do not lower it, reversals do.
    POINTS = "POINTS"
    #: Accepted events of one type.
    EVENT_COUNT = "EVENT_COUNT"
    #: Sum of the amounts of accepted events of one type, in whole currency units (floored).
    EVENT_AMOUNT = "EVENT_AMOUNT"


class BoardScope(StrEnum):
    PROGRAM = "PROGRAM"
    #: One ranking per organization (B2B dealer company, B2E department).
    ORGANIZATION = "ORGANIZATION"
    #: The members currently in one segment.
    SEGMENT = "SEGMENT"


@dataclass(frozen=True)
class BoardDefinition:
    key: str
    name: str
    metric: BoardMetric
    event_type: str | None
    scope: BoardScope
    segment_key: str | None
    periods: tuple[PeriodKind, ...]
    keep_periods: int = DEFAULT_KEEP_PERIODS
    snapshot_size: int = DEFAULT_SNAPSHOT_SIZE
    public: bool = True

    def require_period(self, period: PeriodKind) -> None:
        if period not in self.periods:
            kept = ", ".join(p.value for p in self.periods)
            raise InvalidInput(f"period: board {self.key!r} keeps no {period.value} period; it keeps {kept}")


POINTS_BOARD = BoardDefinition(
    key="points",
    name="Points earned",
    metric=BoardMetric.POINTS,
    event_type=None,
    scope=BoardScope.PROGRAM,
    segment_key=None,
    periods=BOARD_PERIODS,
)


def validate_board(board: BoardDefinition) -> BoardDefinition:
    """The definition with its periods in canonical order; BAD_USER_INPUT naming the faulty field."""
    validate_key(board.key, "key")
    if not board.name.strip() or len(board.name) > 200:
        raise InvalidInput("name: must be 1 to 200 characters")
    if board.metric == BoardMetric.POINTS:
        if board.event_type is not None:
            raise InvalidInput("eventType: a POINTS board ranks all posted points; give no eventType")
    elif board.event_type is None or not EVENT_TYPE.match(board.event_type):
        raise InvalidInput(f"eventType: a {board.metric.value} board needs an event type like 'sale'")
    if (board.scope == BoardScope.SEGMENT) != (board.segment_key is not None):
        raise InvalidInput("segmentKey: give it exactly when the scope is SEGMENT")
    if not board.periods:
        raise InvalidInput("periods: give at least one of ALL_TIME, MONTHLY, WEEKLY, DAILY")
    for period in board.periods:
        if period not in BOARD_PERIODS:
            raise InvalidInput(f"periods: {period.value} is not a leaderboard period")
    if not 1 <= board.keep_periods <= MAX_KEEP_PERIODS:
        raise InvalidInput(f"keepPeriods: must be between 1 and {MAX_KEEP_PERIODS}")
    if not 1 <= board.snapshot_size <= MAX_SNAPSHOT_SIZE:
        raise InvalidInput(f"snapshotSize: must be between 1 and {MAX_SNAPSHOT_SIZE}")
    ordered = tuple(p for p in BOARD_PERIODS if p in board.periods)
    return replace(board, name=board.name.strip(), periods=ordered)


def definition_of(row: Leaderboard) -> BoardDefinition:
    return BoardDefinition(
        key=row.key,
        name=row.name,
        metric=BoardMetric(row.metric),
        event_type=row.event_type,
        scope=BoardScope(row.scope),
        segment_key=row.segment_key,
        periods=tuple(PeriodKind(p) for p in row.periods),
        keep_periods=row.keep_periods,
        snapshot_size=row.snapshot_size,
        public=row.public,
    )


def audited_board(board: BoardDefinition) -> dict[str, Any]:
    """A board's definition as the API shows it: what the audit log keeps before and after."""
    return {
        "key": board.key,
        "name": board.name,
        "metric": board.metric.value,
        "eventType": board.event_type,
        "scope": board.scope.value,
        "segmentKey": board.segment_key,
        "periods": [p.value for p in board.periods],
        "keepPeriods": board.keep_periods,
        "snapshotSize": board.snapshot_size,
        "public": board.public,
    }


async def program_boards(session: AsyncSession, program_id: int) -> dict[str, BoardDefinition]:
    """The program's boards by key, the built-in `points` board included, in key order."""
    rows = (await session.scalars(select(Leaderboard).where(Leaderboard.program_id == program_id))).all()
    boards = {POINTS_BOARD.key: POINTS_BOARD} | {row.key: definition_of(row) for row in rows}
    return dict(sorted(boards.items()))


async def board_by_key(
    session: AsyncSession, program_id: int, key: str, field: str = "key"
) -> BoardDefinition:
    """The program's board `key`; NotFound names `field`, the argument that gave the key."""
    board = (await program_boards(session, program_id)).get(key)
    if board is None:
        raise NotFound(f"{field}: no leaderboard {key[:70]!r} in this program")
    return board


async def store_board(session: AsyncSession, program_id: int, board: BoardDefinition, now: datetime) -> None:
    """Create or replace a board definition (inside the caller's transaction)."""
    board = validate_board(board)
    if board.segment_key is not None:
        segment = await session.scalar(
            select(Segment.id).where(Segment.program_id == program_id, Segment.key == board.segment_key)
        )
        if segment is None:
            raise InvalidInput(f"segmentKey: no segment {board.segment_key!r} in this program")
    row = await session.scalar(
        select(Leaderboard).where(Leaderboard.program_id == program_id, Leaderboard.key == board.key)
    )
    if row is None:
        row = Leaderboard(program_id=program_id, key=board.key, created_at=now)
        session.add(row)
    row.name = board.name
    row.metric = board.metric.value
    row.event_type = board.event_type
    row.scope = board.scope.value
    row.segment_key = board.segment_key
    row.periods = [p.value for p in board.periods]
    row.keep_periods = board.keep_periods
    row.snapshot_size = board.snapshot_size
    row.public = board.public
    row.updated_at = now
