"""Reads behind challenges: active definitions, event counts per period window, completions, badges.

Each function is a fixed number of queries for any number of members, so the API's
DataLoaders and the awarder cost the same for one member as for a page of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.enums import EventStatus
from domain.events.refunds import not_refunded
from domain.models import Challenge, ChallengeCompletion, Event
from gamification.calendar import program_zone
from gamification.challenges.definitions import ALL_TIME_START, ChallengePeriod, Window, window_of

#: Windows counted by one statement (one column each).
WINDOWS_PER_QUERY = 100


async def active_challenges(
    session: AsyncSession, program_id: int, event_types: Collection[str] | None = None
) -> list[Challenge]:
    """The program's active challenges by key, optionally only those counting `event_types`."""
    query = select(Challenge).where(Challenge.program_id == program_id, Challenge.active.is_(True))
    if event_types is not None:
        query = query.where(Challenge.event_type.in_(sorted(event_types)))
    return list((await session.scalars(query.order_by(Challenge.key))).all())


async def count_events(
    session: AsyncSession, program_id: int, member_ids: Collection[int], windows: Collection[Window]
) -> dict[tuple[int, Window], int]:
    """ACCEPTED events per member and window; a pair with no events is absent."""
    counts: dict[tuple[int, Window], int] = {}
    ordered = sorted(set(windows), key=_window_order)
    if not member_ids or not ordered:
        return counts
    for at in range(0, len(ordered), WINDOWS_PER_QUERY):
        chunk = ordered[at : at + WINDOWS_PER_QUERY]
        columns = [func.sum(case((_inside(w), 1), else_=0)) for w in chunk]
        query = select(Event.member_id, *columns).where(
            Event.program_id == program_id,
            Event.member_id.in_(sorted(member_ids)),
            Event.type.in_(sorted({w.event_type for w in chunk})),
            Event.status == EventStatus.ACCEPTED.value,
            not_refunded(Event),
        )
        if all(w.start is not None and w.end is not None for w in chunk):  # lets the index bound the scan
            query = query.where(
                Event.occurred_at >= min(w.start for w in chunk if w.start is not None),
                Event.occurred_at < max(w.end for w in chunk if w.end is not None),
            )
        for member_id, *sums in await session.execute(query.group_by(Event.member_id)):
            for window, total in zip(chunk, sums, strict=True):
                if total:
                    counts[(member_id, window)] = int(total)
    return counts


def _inside(window: Window) -> ColumnElement[bool]:
    conditions = [Event.type == window.event_type]
    if window.start is not None:
        conditions.append(Event.occurred_at >= window.start)
    if window.end is not None:
        conditions.append(Event.occurred_at < window.end)
    return and_(*conditions)


def _window_order(window: Window) -> tuple[str, datetime]:
    return window.event_type, window.stored_start


@dataclass(frozen=True)
class ProgressView:
    """One member's progress on one active challenge in the period containing `now`."""

    challenge: Challenge
    window: Window
    count: int
    completed_at: datetime | None


async def member_progress(
    session: AsyncSession, program_id: int, member_ids: Sequence[int], now: datetime
) -> dict[int, list[ProgressView]]:
    """Per member, its progress on every active challenge of the program (by challenge key)."""
    challenges = await active_challenges(session, program_id)
    if not challenges or not member_ids:
        return {m: [] for m in member_ids}
    tz = await program_zone(session, program_id)
    windows = {c.id: window_of(ChallengePeriod(c.period), c.event_type, now, tz) for c in challenges}
    counts = await count_events(session, program_id, member_ids, windows.values())
    done = await completion_times(session, member_ids, windows)
    return {
        m: [
            ProgressView(
                c,
                windows[c.id],
                counts.get((m, windows[c.id]), 0),
                done.get((c.id, m, windows[c.id].stored_start)),
            )
            for c in challenges
        ]
        for m in member_ids
    }


async def completion_times(
    session: AsyncSession, member_ids: Collection[int], windows: dict[int, Window]
) -> dict[tuple[int, int, datetime], datetime]:
    """completedAt by (challenge id, member id, period start), for the given challenges' windows."""
    starts = sorted({w.stored_start for w in windows.values()})
    rows = await session.execute(
        select(
            ChallengeCompletion.challenge_id,
            ChallengeCompletion.member_id,
            ChallengeCompletion.period_start,
            ChallengeCompletion.completed_at,
        ).where(
            ChallengeCompletion.member_id.in_(sorted(member_ids)),
            ChallengeCompletion.challenge_id.in_(sorted(windows)),
            ChallengeCompletion.period_start.in_(starts),
        )
    )
    return {
        (challenge_id, member_id, start): at
        for challenge_id, member_id, start, at in rows
        if windows[challenge_id].stored_start == start
    }


@dataclass(frozen=True)
class BadgeView:
    """A completion: which challenge (as it is defined now), its period, the points paid and when."""

    challenge_key: str
    name: str
    period: ChallengePeriod
    period_start: datetime | None
    points: int
    completed_at: datetime


async def badges_of(
    session: AsyncSession, member_ids: Sequence[int], first: int
) -> dict[int, list[BadgeView]]:
    """Per member, its newest `first` completions (of active and deleted challenges), newest first."""
    found: dict[int, list[BadgeView]] = defaultdict(list)
    if not member_ids or first == 0:
        return found
    completion = ChallengeCompletion
    newest = (
        func.row_number()
        .over(
            partition_by=completion.member_id,
            order_by=(
                completion.completed_at.desc(),
                completion.challenge_id.desc(),
                completion.period_start.desc(),
            ),
        )
        .label("position")
    )
    ranked = (
        select(
            completion.member_id,
            completion.challenge_id,
            completion.period_start,
            completion.points,
            completion.completed_at,
            newest,
        )
        .where(completion.member_id.in_(sorted(set(member_ids))))
        .subquery()
    )
    rows = await session.execute(
        select(
            ranked.c.member_id,
            Challenge.key,
            Challenge.name,
            Challenge.period,
            ranked.c.period_start,
            ranked.c.points,
            ranked.c.completed_at,
        )
        .join(Challenge, Challenge.id == ranked.c.challenge_id)
        .where(ranked.c.position <= first)
        .order_by(ranked.c.member_id, ranked.c.position)
    )
    for member_id, key, name, period, start, points, completed_at in rows:
        found[member_id].append(
            BadgeView(
                key,
                name,
                ChallengePeriod(period),
                None if start == ALL_TIME_START else start,
                points,
                completed_at,
            )
        )
    return found
