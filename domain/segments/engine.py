"""Keeps membership current: per member after each change (in memory), per segment in batch (SQL).

`members_changed` (the message bus's handler of `MembersChanged`) runs inside the
transaction of the change that caused it, so a membership flip commits with its
cause: it re-evaluates, in dependency order, only the DYNAMIC segments that read
what changed, for the members it changed. `recompute` refreshes whole segments
with one compiled statement each. What either wrote is collected as one
`SegmentsChanged` for the bus (triggers, segment-scoped boards, metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import (
    LoggedChange,
    MembersChanged,
    ProgramCalendarChanged,
    SegmentsChanged,
    SegmentWatcher,
)
from domain.db.engine import announce, collect
from domain.members.service import lock_members
from domain.models import Program, Segment, SegmentMembership
from domain.ops.metrics import SEGMENT_CHANGES as CHANGES_COUNTED
from domain.ops.metrics import SEGMENT_EVALUATIONS
from domain.programs.calendar import program_timezone
from domain.segments.closures import Context, predicate
from domain.segments.compile import Compilation
from domain.segments.conditions import Node
from domain.segments.due import DueTimes, mark_program_due, stored_due_times, write_due_times
from domain.segments.evaluate import Evaluation, MemberFacts
from domain.segments.facts import Needs, load_facts
from domain.segments.fanout import merged, org_fan_out
from domain.segments.horizon import earliest_change, reads_local_dates
from domain.segments.index import Definition, SegmentIndex, definition_from_row
from domain.segments.lifecycle import LifecycleThresholds
from domain.segments.membership import Flip, Recomputed, apply_flips, replace_members
from domain.tiers.keeping import TierPass
from domain.tiers.ladder import Ladder
from domain.tiers.store import load_ladder, load_states, write_states

Progress = Callable[[str, Recomputed], None]

#: Announced by every transaction that logs a membership change (the live relay wakes on it).
SEGMENT_CHANGES = "segment_changes"
#: session.info: the fan-out `reach` found, for the `members_changed` of the same batch to take
#: (once) instead of asking again: (program id, index, the events' types, the fan-out).
FAN_OUT_FOUND = "loyalty.org_fan_out"
#: The evaluation counters, bound once: the accrual pipeline adds to them once per pass.
_EVALUATED_IN_MEMORY = SEGMENT_EVALUATIONS.labels("memory")
_RECOMPUTED_IN_SQL = SEGMENT_EVALUATIONS.labels("sql")


@dataclass(frozen=True)
class ProgramView:
    """What evaluation needs of a program: its segments in dependency order, its thresholds, its ladder."""

    index: SegmentIndex
    lifecycle: LifecycleThresholds
    ladder: Ladder | None = None
    #: Version 2: the program's timezone (settings.timezone), whose dates local-day conditions count.
    zone: tzinfo = UTC

    def tier_segment_ids(self) -> tuple[int, ...]:
        """The TIER segments' ids, by tier index (the ladder's segments exist whenever it does)."""
        assert self.ladder is not None
        by_key = self.index.by_key()
        return tuple(by_key[t.segment_key].id for t in self.ladder.tiers)

    def compilation(self, dialect: str, program_id: int, now: datetime) -> Compilation:
        """The SQL compiler for this program's conditions as of `now`."""
        segment_ids = {d.key: d.id for d in self.index.ordered}
        return Compilation(dialect, program_id, now, segment_ids, self.lifecycle, zone=self.zone)


class SegmentEngine:
    def __init__(self) -> None:
        #: The handlers of `SegmentsChanged` that act on named segments; set when services are wired.
        self.watchers: Sequence[SegmentWatcher] = ()
        self._parsed: dict[tuple[int, datetime], Definition] = {}
        #: program id -> ((segment count, newest updated_at), index, ladder): reloaded when the stamp
        #: moves (a ladder's every change rewrites its TIER segments' updated_at)
        self._indexes: dict[int, tuple[tuple[int, datetime | None], SegmentIndex, Ladder | None]] = {}

    async def view(self, session: AsyncSession, program_id: int) -> ProgramView:
        """The program's segments and thresholds; one small query while no definition has changed."""
        of_program = Segment.program_id == program_id
        count = select(func.count(Segment.id)).where(of_program).scalar_subquery()
        newest = select(func.max(Segment.updated_at)).where(of_program).scalar_subquery()
        settings, count, newest = (
            await session.execute(select(Program.settings, count, newest).where(Program.id == program_id))
        ).one()
        cached = self._indexes.get(program_id)
        if cached is None or cached[0] != (count, newest):
            index = await self._load_index(session, program_id)
            ladder = (
                await load_ladder(session, program_id)
                if any(d.kind == "TIER" for d in index.ordered)
                else None
            )
            cached = ((count, newest), index, ladder)
            self._indexes[program_id] = cached
        lifecycle = LifecycleThresholds.from_settings(settings or {})
        return ProgramView(cached[1], lifecycle, cached[2], program_timezone(settings))

    async def index(self, session: AsyncSession, program_id: int) -> SegmentIndex:
        return (await self.view(session, program_id)).index

    async def _load_index(self, session: AsyncSession, program_id: int) -> SegmentIndex:
        rows = (
            (await session.execute(select(Segment).where(Segment.program_id == program_id))).scalars().all()
        )
        definitions = []
        for row in rows:
            key = (row.id, row.updated_at)
            if key not in self._parsed:  # new, or updated: its earlier parse goes
                self._parsed = {k: d for k, d in self._parsed.items() if k[0] != row.id}
                self._parsed[key] = definition_from_row(row)
            definitions.append(self._parsed[key])
        return SegmentIndex.build(definitions)

    async def members_changed(self, session: AsyncSession, change: MembersChanged, now: datetime) -> None:
        """Re-evaluate the segments that read what changed, for the members it changed."""
        if not change.member_ids:
            return
        view = await self.view(session, change.program_id)
        index = view.index
        if not index.ordered:
            return
        ladder = view.ladder
        tier_keys = frozenset(t.segment_key for t in ladder.tiers) if ladder is not None else frozenset()
        plans: dict[int, list[Definition]] = {}
        tiered: set[int] = set()
        for member_id in sorted(change.member_ids):
            types = change.event_types.get(member_id, ())
            if ladder is not None and (member_id in change.created or ladder.metric.event in types):
                tiered.add(member_id)  # its qualifier may have moved: its tier first, then its readers
            affected = index.affected(
                types,
                profile=member_id in change.profiles,
                balance=member_id in change.balances,
                tags=change.tags.get(member_id, ()),
                everything=member_id in change.created,
                segments=tier_keys if member_id in tiered else (),
            )
            if affected:
                plans[member_id] = affected
        rolled_up: dict[int, list[Definition]] = {}  # members only the org.AGG fan-out reaches
        if change.event_types and any(d.org_event_types for d in index.ordered):
            fanned = _found_by_reach(session, change.program_id, index, change.event_types)
            if fanned is None:
                fanned = await org_fan_out(session, change.program_id, index, change.event_types)
            for member_id, plan in fanned.items():
                if member_id in plans or member_id in tiered:
                    plans[member_id] = merged(index, plans.get(member_id, []), plan)
                else:
                    rolled_up[member_id] = plan
        await self.reevaluate(session, change.program_id, plans, now, tiered=tiered)
        if rolled_up:  # a pass of its own: their facts are the roll-ups' needs, not the batch's
            await self.reevaluate(session, change.program_id, rolled_up, now)

    async def reach(
        self, session: AsyncSession, program_id: int, event_types: Mapping[int, frozenset[str]]
    ) -> set[int]:
        """The members whose `org.AGG` roll-ups these events move (`events.service.LockScope`).

        The batch's `members_changed` takes this fan-out over (`FAN_OUT_FOUND`) when its events'
        types are among these: nothing between them (the events' insertion) moves a member."""
        index = (await self.view(session, program_id)).index
        if not any(d.org_event_types for d in index.ordered):
            return set()
        fanned = await org_fan_out(session, program_id, index, event_types)
        session.info[FAN_OUT_FOUND] = (program_id, index, dict(event_types), fanned)
        return set(fanned)

    async def handle(self, session: AsyncSession, change: MembersChanged) -> None:
        """The message bus's handler: evaluate at the instant of the change."""
        assert change.at is not None, "a collected MembersChanged says when it happened"
        await self.members_changed(session, change, change.at)

    async def calendar_changed(self, session: AsyncSession, change: ProgramCalendarChanged) -> None:
        """The message bus's handler of a timezone change: recompute what counts local dates.

        The segments whose conditions read local dates (`horizon.reads_local_dates`) and
        those reading them are recomputed in the new zone; recomputing a time-dependent
        one makes every member due now, so the scheduler recomputes their due times too.
        """
        index = (await self.view(session, change.program_id)).index
        keys = [
            d.key
            for d in index.ordered
            if d.kind == "DYNAMIC" and d.condition is not None and reads_local_dates(d.condition)
        ]
        if keys:
            await self.recompute(session, change.program_id, keys, change.at)

    async def watched(self, session: AsyncSession, program_id: int) -> frozenset[int]:
        found: frozenset[int] = frozenset()
        for watcher in self.watchers:
            found |= await watcher.watched(session, program_id)
        return found

    async def reevaluate(
        self,
        session: AsyncSession,
        program_id: int,
        plans: dict[int, list[Definition]],
        now: datetime,
        *,
        due: DueTimes = DueTimes.EARLIER,
        tiered: set[int] | frozenset[int] = frozenset(),
    ) -> list[Flip]:
        """Evaluate each member's planned segments in memory, write the flips and the members' due times.

        The members in `tiered` have their tier decided first (the program has a ladder), in
        the same context, so the planned segments read the new tier; their due times include
        the next instant time alone may move the tier and the end of a running grace.

        A member's due time is the earliest instant time alone flips one of its
        planned time-dependent segments (`horizon.next_change`). EARLIER (the plan
        is part of the member's segments) only looks for instants before the
        stored one and moves it earlier; EXACT (the plan is all of them: the
        scheduler) replaces it, NULL included.
        """
        view = await self.view(session, program_id)
        tiers = None if view.ladder is None or not tiered else view.ladder
        if not plans and tiers is None:
            return []
        member_ids = sorted(set(plans) | (set(tiered) if tiers is not None else set()))
        await lock_members(session, member_ids)  # one evaluation of a member at a time
        needed = {d.key: d for plan in plans.values() for d in plan}
        conditions = [d.condition for d in needed.values() if d.condition is not None]
        if tiers is not None:
            conditions.append(tiers.reaches(0))
        facts = await load_facts(session, program_id, member_ids, Needs.of(conditions, view.zone), now)
        lifecycle = view.lifecycle
        evaluation = Evaluation(now, lifecycle, view.zone)
        keeper = None
        if tiers is not None:
            states = await load_states(session, tiers, sorted(tiered))
            keeper = TierPass(tiers, view.tier_segment_ids(), states)
        flips: list[Flip] = []
        exact = due == DueTimes.EXACT
        timed = {member_id: _time_dependent(plans.get(member_id, ())) for member_id in member_ids}
        looks = any(timed.values()) or keeper is not None
        stored = {} if exact or not looks else await stored_due_times(session, member_ids)
        due_at: dict[int, datetime | None] = dict.fromkeys(member_ids) if exact else {}
        evaluated = 0
        for member_id in member_ids:
            member = facts.get(member_id)
            if member is None:
                continue
            context = Context(member, evaluation)  # each metric measured once, the qualifier included
            conditions = timed[member_id]
            kept_until = None
            if keeper is not None and member_id in tiered:
                flips.extend(keeper.evaluate(member, context, now))
                conditions = [*conditions, *keeper.due_conditions(member_id)]
                kept_until = keeper.kept_until(member_id)
            plan = plans.get(member_id, ())
            flips.extend(_evaluate_plan(context, plan, member))
            evaluated += len(plan)
            if conditions or kept_until is not None:  # only an instant earlier than the stored one matters
                bound = stored.get(member_id)
                if kept_until is not None and (bound is None or kept_until < bound):
                    bound = kept_until
                found = earliest_change(conditions, member, now, lifecycle, bound, view.zone)
                due_at[member_id] = found if found is not None else kept_until
        _EVALUATED_IN_MEMORY.inc(evaluated)
        await self.apply(session, program_id, flips, now)
        if keeper is not None:
            await write_states(session, program_id, keeper.ladder, keeper.changed)
        await write_due_times(session, due_at, due)
        return flips

    async def apply(
        self, session: AsyncSession, program_id: int, flips: Sequence[Flip], now: datetime
    ) -> None:
        """Write flips (membership, log, applied tags) and collect what was logged."""
        logged = await apply_flips(session, program_id, flips, now)
        entered = sum(change.entered for change in logged)
        changed(session, program_id, logged, entered, len(logged) - entered, now)

    async def leave_all(self, session: AsyncSession, program_id: int, member_id: int, now: datetime) -> int:
        """Take the member out of every segment it is in (erasure), as LEFT changes: sizes, history
        and live subscribers follow the log. The changes are counted but not listed in the collected
        `SegmentsChanged`, so no trigger acts on them: an erased member is owed no message, points or
        webhook. Returns how many segments it left."""
        rows = await session.execute(
            select(Segment.id, Segment.key, Segment.applies_tag)
            .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
            .where(Segment.program_id == program_id, SegmentMembership.member_id == member_id)
            .order_by(Segment.id)
        )
        flips = [Flip(segment_id, key, member_id, False, tag) for segment_id, key, tag in rows]
        logged = await apply_flips(session, program_id, flips, now)
        changed(session, program_id, (), 0, len(logged), now)
        return len(logged)

    async def recompute(
        self,
        session: AsyncSession,
        program_id: int,
        keys: Sequence[str] | None,
        now: datetime,
        progress: Progress | None = None,
    ) -> dict[str, Recomputed]:
        """Recompute whole segments (all non-STATIC when `keys` is None), references first.

        The members' due times are unknown after a time-dependent definition is
        recomputed: they all become due now, and the scheduler computes them.
        """
        view = await self.view(session, program_id)
        index = view.index
        wanted = None if keys is None else set(keys)
        done: dict[str, Recomputed] = {}
        chosen = [d for d in index.ordered if d.condition is not None and (wanted is None or d.key in wanted)]
        if wanted is not None:  # what reads a recomputed segment must follow it
            for definition in list(chosen):
                chosen.extend(d for d in index.dependents(definition.key) if d not in chosen)
            order = {d.key: i for i, d in enumerate(index.ordered)}
            chosen.sort(key=lambda d: order[d.key])
        if any(d.kind == "DYNAMIC" and d.time_dependent for d in chosen):
            await mark_program_due(session, program_id, now)
        compilation = view.compilation(session.get_bind().dialect.name, program_id, now)
        watched = await self.watched(session, program_id)
        for definition in chosen:
            assert definition.condition is not None
            done[definition.key] = await replace_members(
                session,
                program_id,
                definition.id,
                definition.key,
                definition.applies_tag,
                compilation.members_where(definition.condition),
                now,
                log_rows=definition.id in watched,
            )
            _RECOMPUTED_IN_SQL.inc()
            result = done[definition.key]
            changed(session, program_id, result.changes, result.entered, result.left, now)
            if progress is not None:
                progress(definition.key, done[definition.key])
        return done


def _found_by_reach(
    session: AsyncSession,
    program_id: int,
    index: SegmentIndex,
    event_types: Mapping[int, frozenset[str]],
) -> dict[int, list[Definition]] | None:
    """The fan-out `reach` found in this transaction for the same program and segments and events'
    types that include these (taken: it serves once), or None. The batch's held events are not in
    the change: the members their organizations reach are evaluated again, needlessly but rightly."""
    found = session.info.pop(FAN_OUT_FOUND, None)
    if found is None:
        return None
    known_program, known_index, known_types, fanned = found
    if known_program != program_id or known_index is not index:
        return None
    if any(not types <= known_types.get(member_id, frozenset()) for member_id, types in event_types.items()):
        return None
    return fanned  # type: ignore[no-any-return]


def changed(
    session: AsyncSession,
    program_id: int,
    logged: Sequence[LoggedChange],
    entered: int,
    left: int,
    now: datetime,
) -> None:
    """Announce and collect the changes written (nothing when there were none)."""
    if not entered and not left:
        return
    announce(session, SEGMENT_CHANGES)
    collect(session, SegmentsChanged(program_id, tuple(logged), now, entered, left))


async def count_changes(changes: SegmentsChanged) -> None:
    """After commit: the segment-change metrics (an after-commit handler of the bus)."""
    CHANGES_COUNTED.labels("ENTERED").inc(changes.entered)
    CHANGES_COUNTED.labels("LEFT").inc(changes.left)


def _time_dependent(plan: Sequence[Definition]) -> list[Node]:
    return [d.condition for d in plan if d.time_dependent and d.condition is not None]


def _evaluate_plan(context: Context, plan: Sequence[Definition], member: MemberFacts) -> list[Flip]:
    """The member's flips over `plan` (in dependency order); each updates the facts the next one reads."""
    flips: list[Flip] = []
    for definition in plan:
        assert definition.condition is not None
        holds = predicate(definition.condition)(context)
        if holds == (definition.key in member.segments):
            continue
        flips.append(Flip(definition.id, definition.key, member.member_id, holds, definition.applies_tag))
        if holds:
            member.segments.add(definition.key)
        else:
            member.segments.discard(definition.key)
        if definition.applies_tag:
            held = member.tag_sources.setdefault(definition.applies_tag, set())
            (held.add if holds else held.discard)(definition.key)
            member.tags = frozenset(tag for tag, by in member.tag_sources.items() if by)
    return flips
