"""Completing challenges inside the transaction of the events that complete them.

`ChallengeAwarder` is a message-bus handler of `MembersChanged` (domain/changes.py),
registered after the segment engine. For each member and event type a batch accepted it
counts the periods those events fall in (backdated events count in their own
period), and for each period that reached the target it inserts the completion
(`ON CONFLICT DO NOTHING`) and posts the bonus under the idempotency key
`challenge:<challenge id>:<member id>:<period start>`: a replay, a re-send or a
concurrent batch pays once. Posting the bonuses collects the balance change for the
segment engine, whose balance conditions may now hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import MembersChanged
from domain.db.dialect import insert_for
from domain.ledger.posting import Bonus, post_bonuses
from domain.models import Challenge, ChallengeCompletion
from gamification.calendar import program_zone
from gamification.challenges.definitions import ChallengePeriod, Window, completion_key, window_of
from gamification.challenges.progress import active_challenges, count_events


@dataclass(frozen=True)
class Completed:
    challenge: Challenge
    member_id: int
    window: Window


class ChallengeAwarder:
    """Handles `MembersChanged` with accepted events; registered after the segment engine."""

    async def members_changed(self, session: AsyncSession, change: MembersChanged) -> None:
        if not change.event_types:
            return
        assert change.at is not None
        now = change.at
        types = set().union(*change.event_types.values())
        challenges = await active_challenges(session, change.program_id, types)
        if not challenges:
            return
        tz = await program_zone(session, change.program_id)
        candidates: set[tuple[int, Window]] = set()  # (member id, window) of each challenge
        by_window: dict[Window, dict[int, Challenge]] = defaultdict(dict)  # the challenges counting it
        for challenge in challenges:
            period = ChallengePeriod(challenge.period)
            for member_id, member_types in change.event_types.items():
                if challenge.event_type not in member_types:
                    continue
                # when the events occurred; else (an event accepted earlier, approved now) the current period
                times = change.occurred.get((member_id, challenge.event_type)) or {now}
                for at in times:
                    window = window_of(period, challenge.event_type, at, tz)
                    candidates.add((member_id, window))
                    by_window[window][challenge.id] = challenge
        members = {member_id for member_id, _ in candidates}
        counts = await count_events(session, change.program_id, members, {w for _, w in candidates})
        reached = [
            Completed(challenge, member_id, window)
            for member_id, window in sorted(candidates, key=_candidate_order)
            for challenge in by_window[window].values()
            if counts.get((member_id, window), 0) >= challenge.target
        ]
        await award(session, change.program_id, reached, now, tz)


def _candidate_order(candidate: tuple[int, Window]) -> tuple[int, str, datetime, datetime]:
    member_id, window = candidate
    return member_id, window.event_type, window.stored_start, window.end or window.stored_start


async def award(
    session: AsyncSession, program_id: int, reached: Collection[Completed], now: datetime, tz: ZoneInfo
) -> frozenset[int]:
    """Record completions not yet recorded and pay their points; returns the members credited."""
    if not reached:
        return frozenset()
    table = ChallengeCompletion.__table__
    statement = (
        insert_for(session, table)
        .on_conflict_do_nothing()
        .returning(table.c.challenge_id, table.c.member_id, table.c.period_start)
    )
    rows = [
        {
            "challenge_id": r.challenge.id,
            "member_id": r.member_id,
            "period_start": r.window.stored_start,
            "program_id": program_id,
            "points": r.challenge.points,
            "completed_at": now,
        }
        for r in reached
    ]
    new = {tuple(row) for row in await session.execute(statement, rows)}
    bonuses = [
        Bonus(
            r.member_id,
            r.challenge.points,
            f"challenge {r.challenge.key} completed ({_period_label(r, tz)})",
            completion_key(r.challenge.id, r.member_id, r.window),
        )
        for r in reached
        if (r.challenge.id, r.member_id, r.window.stored_start) in new
    ]
    posted = await post_bonuses(session, program_id, bonuses, now)
    return frozenset(b.member_id for b in posted)


def _period_label(completed: Completed, tz: ZoneInfo) -> str:
    """e.g. "MONTHLY from 2026-11-01" (the local date the period opens)."""
    period = ChallengePeriod(completed.challenge.period)
    start = completed.window.start
    return period.value if start is None else f"{period.value} from {start.astimezone(tz).date().isoformat()}"
