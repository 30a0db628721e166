"""How far back boards and challenges read raw events (`loyalty prune --events-retention` refuses less).

A board or challenge period reads its period's events: the longest period kind decides
(ALL_TIME: the whole history). A POINTS board reads the ledger, kept whole; it reads an
event only for its occurredAt within a bounded period, so its ALL_TIME period needs none.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Challenge, Program
from domain.ops.event_retention import Window
from gamification.leaderboards.boards import BoardMetric, program_boards
from gamification.periods import PeriodKind

#: The longest a period of each kind lasts, in days (None: unbounded).
PERIOD_DAYS: dict[PeriodKind, float | None] = {
    PeriodKind.ALL_TIME: None,
    PeriodKind.YEARLY: 366,
    PeriodKind.QUARTERLY: 92,
    PeriodKind.MONTHLY: 31,
    PeriodKind.WEEKLY: 7,
    PeriodKind.DAILY: 1,
}


def _longest_period(periods: list[PeriodKind], reads_all_time: bool) -> float | None:
    kept = [PERIOD_DAYS[p] for p in periods if reads_all_time or p != PeriodKind.ALL_TIME]
    if not kept:
        return 0.0
    if any(days is None for days in kept):
        return None
    return max(days for days in kept if days is not None)


async def gamification_windows(session: AsyncSession) -> list[Window]:
    windows: list[Window] = []
    programs = (await session.execute(select(Program.id, Program.key).order_by(Program.id))).all()
    for program_id, program_key in programs:
        for board in (await program_boards(session, program_id)).values():
            days = _longest_period(list(board.periods), board.metric != BoardMetric.POINTS)
            if days != 0.0:
                windows.append(Window(days, f"leaderboard {board.key!r} of program {program_key!r}"))
        challenges = await session.execute(
            select(Challenge.key, Challenge.period).where(
                Challenge.program_id == program_id, Challenge.active.is_(True)
            )
        )
        for key, period in challenges:
            windows.append(
                Window(PERIOD_DAYS[PeriodKind(period)], f"challenge {key!r} of program {program_key!r}")
            )
    return windows
