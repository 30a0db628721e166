"""Tier ladders: set (replace), delete, read; members' tiers as of now; the set-based recompute.

Every write is one unit of work: the ladder, its TIER segments (`tier-<key>`) and
every member's placement commit together, or nothing is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import ProgramCalendarChanged
from domain.clock import Clock
from domain.db.engine import Database
from domain.enums import SegmentKind
from domain.errors import Conflict, NotFound
from domain.governance.audit_log import record_change
from domain.models import Member, MemberTier, Program, Segment
from domain.models import TierLadder as LadderRow
from domain.programs.calendar import program_timezone
from domain.segments.closures import Context
from domain.segments.due import mark_program_due
from domain.segments.engine import SegmentEngine, changed
from domain.segments.evaluate import Evaluation
from domain.segments.facts import Needs, load_facts
from domain.segments.horizon import is_time_dependent, reads_local_dates
from domain.segments.lifecycle import LifecycleThresholds
from domain.segments.service import next_stamp
from domain.tiers.keeping import measure_qualifier
from domain.tiers.ladder import Ladder, LadderDraft, Tier, is_tier_segment_key, validate_ladder
from domain.tiers.placement import PlacementProgress, place_members
from domain.tiers.store import load_ladder, load_states

_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class MemberTierView:
    """Member.tier: the tier held, since when, the qualifier now, the next tier and the way to it."""

    tier: Tier
    since: datetime
    qualifying_value: Decimal
    next: Tier | None
    to_next: Decimal | None
    kept_until: datetime | None


def as_decimal(value: Fraction) -> Decimal:
    """A measure as a decimal: exact when it terminates within 4 places, else rounded half-even."""
    if value.denominator == 1:
        return Decimal(value.numerator)
    exact = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(_PLACES, ROUND_HALF_EVEN)
    return exact.normalize() if exact != exact.to_integral_value() else Decimal(int(exact))


class TierService:
    def __init__(self, db: Database, clock: Clock, engine: SegmentEngine) -> None:
        self.db = db
        self.clock = clock
        self.engine = engine

    async def set_ladder(
        self,
        program_id: int,
        draft: LadderDraft,
        progress: PlacementProgress | None = None,
        *,
        actor: str,
    ) -> Ladder:
        """Replace the program's ladder (and its TIER segments) and place every member at once."""
        ladder = validate_ladder(draft)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            program = await _lock_program(session, program_id)
            rows = await _tier_segments(session, program_id)
            wanted = {t.segment_key: t for t in ladder.tiers}
            taken = (
                (
                    await session.execute(
                        select(Segment.key).where(
                            Segment.program_id == program_id,
                            Segment.key.in_(sorted(wanted)),
                            Segment.kind != SegmentKind.TIER.value,
                        )
                    )
                )
                .scalars()
                .first()
            )
            if taken is not None:
                raise Conflict(f"tiers: segment key {taken!r} is taken by a segment that is not a tier")
            removed = [row for key, row in rows.items() if key not in wanted]
            await self._refuse_read(session, program_id, [row.key for row in removed])
            stamp = await next_stamp(session, program_id, now)
            for offset, tier in enumerate(ladder.tiers):
                row = rows.get(tier.segment_key)
                if row is None:
                    row = Segment(
                        program_id=program_id,
                        key=tier.segment_key,
                        kind=SegmentKind.TIER.value,
                        condition=None,
                        applies_tag=None,
                        created_at=now,
                    )
                    session.add(row)
                    rows[tier.segment_key] = row
                row.name = tier.name
                row.updated_at = stamp + timedelta(microseconds=offset)
            stored = await session.get(LadderRow, program_id)
            before = None if stored is None else audited_ladder(stored)
            if stored is None:
                stored = LadderRow(program_id=program_id)
                session.add(stored)
            stored.qualifier = ladder.qualifier
            stored.downgrade = ladder.downgrade.value
            stored.grace_days = ladder.grace_days
            stored.tiers = ladder.tiers_json()
            stored.updated_at = now
            for row in removed:
                await session.delete(row)
            await session.flush()
            await place_program(session, self.engine, program_id, ladder, now, progress)
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="setTierLadder",
                at=now,
                target=program.key,
                before=before,
                after=audited_ladder(stored),
            )
        return ladder

    async def recompute(self, program_id: int, progress: PlacementProgress | None = None) -> int:
        """Place every member at the tier its value reaches now (grace cleared); members placed."""
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            await _lock_program(uow.session, program_id)
            ladder = await load_ladder(uow.session, program_id)
            if ladder is None:
                raise NotFound("program: this program has no tier ladder")
            await place_program(uow.session, self.engine, program_id, ladder, now, progress)
            count = select(func.count()).select_from(Member).where(Member.program_id == program_id)
            return int((await uow.session.execute(count)).scalar_one())

    async def delete_ladder(self, program_id: int, *, actor: str) -> bool:
        """Remove the ladder, its TIER segments (with their history) and the states; False when none."""
        async with self.db.unit_of_work() as uow:
            session = uow.session
            program = await _lock_program(session, program_id)
            stored = await session.get(LadderRow, program_id)
            if stored is None:
                return False
            rows = await _tier_segments(session, program_id)
            await self._refuse_read(session, program_id, sorted(rows))
            await session.execute(delete(MemberTier).where(MemberTier.program_id == program_id))
            for row in rows.values():
                await session.delete(row)
            before = audited_ladder(stored)
            await session.delete(stored)
            await session.flush()
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="deleteTierLadder",
                at=self.clock.now(),
                target=program.key,
                before=before,
            )
        return True

    async def _refuse_read(self, session: AsyncSession, program_id: int, keys: Sequence[str]) -> None:
        index = await self.engine.index(session, program_id)
        for key in keys:
            readers = sorted(d.key for d in index.ordered if key in d.segments)
            if readers:
                raise Conflict(f"tiers: segment {key!r} is read by {', '.join(readers)}; change those first")

    # ---------- reads ----------

    async def programs_with_ladders(self) -> list[int]:
        async with self.db.read() as session:
            return list(
                (await session.execute(select(LadderRow.program_id).order_by(LadderRow.program_id))).scalars()
            )

    async def ladder(self, program_id: int) -> Ladder | None:
        async with self.db.read() as session:
            return await load_ladder(session, program_id)

    async def member_tiers(self, program_id: int, member_ids: Sequence[int]) -> dict[int, MemberTierView]:
        """The members' tiers with their qualifier measured now (a fixed number of queries)."""
        now = self.clock.now()
        async with self.db.read() as session:
            ladder = await load_ladder(session, program_id)
            if ladder is None:
                return {}
            states = await load_states(session, ladder, member_ids)
            settings = (
                await session.execute(select(Program.settings).where(Program.id == program_id))
            ).scalar()
            zone = program_timezone(settings)  # local-day qualifiers count the program's dates
            needs = Needs.of([ladder.reaches(0)], zone)
            facts = await load_facts(session, program_id, sorted(states), needs, now)
        evaluation = Evaluation(now, LifecycleThresholds.from_settings(settings or {}), zone)
        views: dict[int, MemberTierView] = {}
        for member_id, state in states.items():
            member = facts.get(member_id)
            if member is None:
                continue
            value = measure_qualifier(ladder, Context(member, evaluation)) or Fraction(0)
            above = ladder.tiers[state.tier + 1] if state.tier + 1 < len(ladder.tiers) else None
            to_next = None if above is None else max(Fraction(0), Fraction(above.threshold) - value)
            views[member_id] = MemberTierView(
                ladder.tiers[state.tier],
                state.since,
                as_decimal(value),
                above,
                None if to_next is None else as_decimal(to_next),
                state.kept_until,
            )
        return views


class LadderCalendar:
    """The message bus's handler of a timezone change (`setProgramTimezone`) for the tier ladder: a
    qualifier counting local dates (`distinct_days`, `streak`) is measured again in the new zone."""

    def __init__(self, engine: SegmentEngine) -> None:
        self.engine = engine

    async def calendar_changed(self, session: AsyncSession, change: ProgramCalendarChanged) -> None:
        """Place every member again (the `setTierLadder` pass: grace cleared, readers recomputed)."""
        ladder = (await self.engine.view(session, change.program_id)).ladder
        if ladder is not None and reads_local_dates(ladder.reaches(0)):
            await place_program(session, self.engine, change.program_id, ladder, change.at)


async def place_program(
    session: AsyncSession,
    engine: SegmentEngine,
    program_id: int,
    ladder: Ladder,
    now: datetime,
    progress: PlacementProgress | None = None,
) -> None:
    """Every member of the program at the tier its qualifier reaches now (`place_members`), then the
    segments reading the TIER segments recomputed; due times too when the qualifier moves with time."""
    view = await engine.view(session, program_id)
    by_key = view.index.by_key()
    segment_ids = [by_key[t.segment_key].id for t in ladder.tiers]
    if is_time_dependent(ladder.reaches(0)):  # unknown now: the scheduler computes them
        await mark_program_due(session, program_id, now)
    compilation = view.compilation(session.get_bind().dialect.name, program_id, now)
    watched = await engine.watched(session, program_id)
    moved = await place_members(
        session,
        program_id,
        ladder,
        segment_ids,
        compilation,
        now,
        watched=watched,
        progress=progress,
    )
    for result in moved:
        changed(session, program_id, result.changes, result.entered, result.left, now)
    readers: list[str] = []
    for tier in ladder.tiers:
        readers.extend(d.key for d in view.index.dependents(tier.segment_key) if d.key not in readers)
    if readers:
        await engine.recompute(session, program_id, readers, now)


async def _lock_program(session: AsyncSession, program_id: int) -> Program:
    """Ladder writes of one program take turns (the program row's lock)."""
    program = await session.get(Program, program_id, with_for_update=True)
    if program is None:
        raise NotFound(f"program {program_id} does not exist")
    return program


def audited_ladder(row: LadderRow) -> dict[str, Any]:
    """A ladder as the API shows it: what the audit log keeps before and after."""
    return {
        "qualifier": row.qualifier,
        "downgrade": row.downgrade,
        "graceDays": row.grace_days,
        "tiers": list(row.tiers),
    }


async def _tier_segments(session: AsyncSession, program_id: int) -> dict[str, Segment]:
    rows = await session.execute(
        select(Segment).where(Segment.program_id == program_id, Segment.kind == SegmentKind.TIER.value)
    )
    return {row.key: row for row in rows.scalars()}


__all__ = [
    "LadderCalendar",
    "MemberTierView",
    "TierService",
    "as_decimal",
    "is_tier_segment_key",
    "place_program",
]
