"""Priority windows: during [starts_at, ends_at) only the top N of a board may redeem a reward.

The ranking is the board's as of the window's start, frozen once in a
leaderboard snapshot (gamification/leaderboards/snapshots.py): points moving
during the window do not change who may redeem. A reward has at most one window
at a time; outside every window anyone may redeem.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Forbidden, InvalidInput, NotFound
from domain.models import Member, Reward, RewardWindow
from gamification.leaderboards.boards import program_boards
from gamification.leaderboards.snapshots import FrozenRank, frozen_rank
from gamification.periods import BOARD_PERIODS, PeriodKind

MAX_TOP_N = 10_000
PRIORITY_WINDOW = "PRIORITY_WINDOW"


@dataclass(frozen=True)
class WindowSpec:
    board_key: str
    period: PeriodKind
    top_n: int
    starts_at: datetime
    ends_at: datetime


async def store_window(session: AsyncSession, reward: Reward, spec: WindowSpec) -> RewardWindow:
    """Add the window, or replace the reward's window that starts at the same instant.

    The caller holds the reward's row lock, so two admins cannot add overlapping windows.
    """
    starts_at, ends_at = _utc(spec.starts_at, "startsAt"), _utc(spec.ends_at, "endsAt")
    if ends_at <= starts_at:
        raise InvalidInput("endsAt: must be after startsAt")
    if not 1 <= spec.top_n <= MAX_TOP_N:
        raise InvalidInput(f"topN: must be between 1 and {MAX_TOP_N}, got {spec.top_n}")
    if spec.period not in BOARD_PERIODS:
        raise InvalidInput(f"period: {spec.period.value} is not a leaderboard period")
    board = (await program_boards(session, reward.program_id)).get(spec.board_key)
    if board is None:
        raise NotFound(f"boardKey: no leaderboard {spec.board_key[:70]!r} in this program")
    board.require_period(spec.period)
    windows = (await session.scalars(select(RewardWindow).where(RewardWindow.reward_id == reward.id))).all()
    window = next((w for w in windows if w.starts_at == starts_at), None)
    for other in windows:
        if other is not window and other.starts_at < ends_at and starts_at < other.ends_at:
            raise InvalidInput(
                f"startsAt: the window overlaps the one from {other.starts_at.isoformat()} to "
                f"{other.ends_at.isoformat()}; a reward has at most one window at a time"
            )
    if window is None:
        window = RewardWindow(reward_id=reward.id, starts_at=starts_at)
        session.add(window)
    if (window.board_key, window.period, window.top_n) != (spec.board_key, spec.period.value, spec.top_n):
        window.snapshot_id = None  # a different ranking: frozen afresh when the window is first used
    window.board_key = spec.board_key
    window.period = spec.period.value
    window.top_n = spec.top_n
    window.ends_at = ends_at
    await session.flush()
    return window


async def remove_window(session: AsyncSession, reward: Reward, starts_at: datetime) -> bool:
    """Remove the reward's window that starts at `starts_at`; False when there is none."""
    result = await session.execute(
        delete(RewardWindow).where(
            RewardWindow.reward_id == reward.id, RewardWindow.starts_at == _utc(starts_at, "startsAt")
        )
    )
    assert isinstance(result, CursorResult)
    return result.rowcount > 0


async def open_window(session: AsyncSession, reward_id: int, now: datetime) -> RewardWindow | None:
    """The reward's window that contains `now`, if any."""
    return await session.scalar(
        select(RewardWindow)
        .where(RewardWindow.reward_id == reward_id, RewardWindow.starts_at <= now, RewardWindow.ends_at > now)
        .order_by(RewardWindow.starts_at.desc())
        .limit(1)
    )


async def unfrozen_open_window(
    session: AsyncSession, program_id: int, reward_key: str, member_external_id: str, now: datetime
) -> tuple[int, int] | None:
    """(window id, member id) when the reward's window containing `now` has no frozen ranking yet."""
    result = await session.execute(
        select(RewardWindow.id, Member.id)
        .join(Reward, Reward.id == RewardWindow.reward_id)
        .join(Member, Member.program_id == Reward.program_id)
        .where(
            Reward.program_id == program_id,
            Reward.key == reward_key,
            Member.external_id == member_external_id,
            Member.erased_at.is_(None),
            RewardWindow.starts_at <= now,
            RewardWindow.ends_at > now,
            RewardWindow.snapshot_id.is_(None),
        )
        .limit(1)
    )
    row = result.first()
    return None if row is None else (row[0], row[1])


async def freeze(
    session: AsyncSession, program_id: int, window: RewardWindow, member_id: int, now: datetime
) -> FrozenRank:
    """The member's rank in the window's ranking, frozen (once) as of the window's start."""
    frozen = await frozen_rank(
        session,
        program_id,
        window.board_key,
        PeriodKind(window.period),
        window.starts_at,
        window.top_n,
        member_id,
        now,
    )
    if window.snapshot_id is None and frozen.snapshot_id:  # 0: nobody in the member's scope had scored
        await session.execute(
            update(RewardWindow)
            .where(RewardWindow.id == window.id, RewardWindow.snapshot_id.is_(None))
            .values(snapshot_id=frozen.snapshot_id)
            .execution_options(synchronize_session=False)
        )
    return frozen


async def admit(
    session: AsyncSession,
    program_id: int,
    reward: Reward,
    window: RewardWindow,
    member_id: int,
    now: datetime,
) -> None:
    """FORBIDDEN (reason PRIORITY_WINDOW, retryAt = the window's end) unless the member is in the top N."""
    frozen = await freeze(session, program_id, window, member_id, now)
    if frozen.rank is not None:
        return
    standing = "you were not among them" if frozen.position is None else f"your rank was {frozen.position}"
    raise Forbidden(
        f"reward {reward.key!r} is reserved for the top {window.top_n} of board {window.board_key!r} "
        f"({window.period}) until {window.ends_at.isoformat()}; at the window start "
        f"({window.starts_at.isoformat()}) {standing}",
        reason=PRIORITY_WINDOW,
        retryAt=window.ends_at.isoformat(),
    )


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{field}: needs a UTC offset, e.g. 2026-12-01T00:00:00+00:00")
    return value.astimezone(UTC)
