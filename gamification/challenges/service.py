"""Admin operations on challenges, and the reads the API's DataLoaders batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.errors import InvalidInput, NotFound
from domain.governance.audit_log import record_change
from domain.models import Challenge
from gamification.challenges.definitions import MAX_ACTIVE, ChallengeDraft, validate_challenge
from gamification.challenges.progress import (
    BadgeView,
    ProgressView,
    active_challenges,
    badges_of,
    member_progress,
)

#: (program id, member id)
MemberKey = tuple[int, int]
#: (member id, first)
BadgesKey = tuple[int, int]


def audited_challenge(row: Challenge) -> dict[str, Any]:
    """A challenge's definition as the API shows it: what the audit log keeps before and after."""
    return {
        "key": row.key,
        "name": row.name,
        "eventType": row.event_type,
        "target": row.target,
        "period": row.period,
        "points": row.points,
    }


class ChallengeService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def set_challenge(self, program_id: int, draft: ChallengeDraft, *, actor: str) -> Challenge:
        """Create the challenge, or update (and reactivate) the one with its key.

        A change applies from the next accepted event on: completions already
        recorded stay, and members already past a lowered target complete it with
        their next event of its type.
        """
        valid = validate_challenge(draft)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            others = (
                await session.execute(
                    select(func.count(Challenge.id)).where(
                        Challenge.program_id == program_id,
                        Challenge.active.is_(True),
                        Challenge.key != valid.key,
                    )
                )
            ).scalar_one()
            if others >= MAX_ACTIVE:
                raise InvalidInput(f"key: a program has at most {MAX_ACTIVE} active challenges")
            existing = await session.scalar(
                select(Challenge).where(Challenge.program_id == program_id, Challenge.key == valid.key)
            )
            before = None if existing is None or not existing.active else audited_challenge(existing)
            table = Challenge.__table__
            values = {
                "name": valid.name,
                "event_type": valid.event_type,
                "target": valid.target,
                "period": valid.period,
                "points": valid.points,
                "active": True,
                "updated_at": now,
            }
            statement = (
                insert_for(session, table)
                .values(program_id=program_id, key=valid.key, created_at=now, **values)
                .on_conflict_do_update(index_elements=[table.c.program_id, table.c.key], set_=values)
                .returning(table.c.id)
            )
            challenge_id = (await session.execute(statement)).scalar_one()
            row = await session.get(Challenge, challenge_id, populate_existing=True)
            assert row is not None
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="setChallenge",
                at=now,
                target=valid.key,
                before=before,
                after=audited_challenge(row),
            )
        return row

    async def delete_challenge(self, program_id: int, key: str, *, actor: str) -> bool:
        """Stop the challenge: no more progress or completions; badges already earned stay."""
        async with self.db.unit_of_work() as uow:
            row = await uow.session.scalar(
                select(Challenge)
                .where(Challenge.program_id == program_id, Challenge.key == key, Challenge.active.is_(True))
                .with_for_update()
            )
            if row is None:
                raise NotFound(f"key: no challenge {key[:70]!r} in this program")
            before = audited_challenge(row)
            row.active = False
            row.updated_at = self.clock.now()
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="deleteChallenge",
                at=self.clock.now(),
                target=key,
                before=before,
            )
        return True

    async def challenges(self, program_id: int) -> list[Challenge]:
        """The active challenges, by key."""
        async with self.db.read() as session:
            return await active_challenges(session, program_id)

    async def progress(self, keys: Sequence[MemberKey]) -> dict[MemberKey, list[ProgressView]]:
        """Current-period progress of each (program, member) on every active challenge of its program."""
        by_program: dict[int, list[int]] = defaultdict(list)
        for program_id, member_id in keys:
            by_program[program_id].append(member_id)
        now = self.clock.now()
        found: dict[MemberKey, list[ProgressView]] = {}
        async with self.db.read() as session:
            for program_id, member_ids in by_program.items():
                views = await member_progress(session, program_id, member_ids, now)
                found.update({(program_id, m): v for m, v in views.items()})
        return found

    async def badges(self, keys: Sequence[BadgesKey]) -> dict[BadgesKey, list[BadgeView]]:
        """Each member's newest `first` completions, newest first (`first` checked by the caller)."""
        by_first: dict[int, list[int]] = defaultdict(list)
        for member_id, first in keys:
            by_first[first].append(member_id)
        found: dict[BadgesKey, list[BadgeView]] = {}
        async with self.db.read() as session:
            for first, member_ids in by_first.items():
                views = await badges_of(session, member_ids, first)
                found.update({(m, first): views.get(m, []) for m in member_ids})
        return found
