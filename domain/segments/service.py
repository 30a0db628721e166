"""Segment definitions and their membership: create, update, delete, import, recompute, read.

Every write is one unit of work: the definition and the membership it implies
commit together, or nothing is stored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.segments import daily_sizes, segment_size
from domain.clock import Clock
from domain.db.engine import Database
from domain.enums import SegmentKind
from domain.errors import Conflict, InvalidInput, NotFound
from domain.events.validation import Rejection, validate_external_id
from domain.governance.audit_log import record_change
from domain.members.service import check_page_size, member_ids_by_external_id
from domain.models import (
    EventAggregate,
    Member,
    MemberTag,
    Program,
    Reward,
    RewardSegment,
    Segment,
    SegmentChange,
    SegmentMembership,
)
from domain.programs.service import record_program_setting, validate_key
from domain.segments.conditions import AttrCompare, Node, condition_to_json, parse_condition, walk
from domain.segments.engine import Progress, SegmentEngine
from domain.segments.index import Definition, dependency_order
from domain.segments.lifecycle import LifecycleThresholds, lifecycle_stage
from domain.segments.membership import Flip
from domain.segments.rules import parse_rule, render_rule
from domain.segments.scores import refresh_scores
from domain.segments.warnings import condition_warnings
from domain.tiers.ladder import is_tier_segment_key

MAX_IMPORT_ROWS = 100_000
MAX_LISTED = 1000
MAX_HISTORY_DAYS = 366


@dataclass(frozen=True)
class SegmentDraft:
    key: str
    name: str
    kind: str
    condition: Any = None
    rule: str | None = None
    applies_tag: str | None = None


#: How many of its members a preview shows.
PREVIEW_SAMPLE = 10


@dataclass(frozen=True)
class Preview:
    """What a condition would select now (`SegmentService.preview`)."""

    node: Node
    size: int
    #: The first PREVIEW_SAMPLE members it selects, by id.
    sample: list[Member]
    #: (segment key, members in both) for each segment sharing members with it, most first.
    overlaps: list[tuple[str, int]]


@dataclass(frozen=True)
class ImportResult:
    imported: int
    rejected_rows: list[str]


@dataclass(frozen=True)
class ChangeView:
    id: int
    segment_key: str
    member_external_id: str
    change: str
    at: datetime


@dataclass(frozen=True)
class SizePoint:
    at: datetime
    size: int
    entered: int
    left: int


def rule_of(row: Segment) -> str | None:
    return None if row.condition is None else render_rule(parse_condition(row.condition))


def audited(row: Segment) -> dict[str, Any]:
    """A segment's definition as the API shows it: what the audit log keeps before and after."""
    return {
        "key": row.key,
        "name": row.name,
        "kind": row.kind,
        "rule": rule_of(row),
        "condition": row.condition,
        "appliesTag": row.applies_tag,
    }


def _condition(draft: SegmentDraft) -> Node | None:
    if draft.kind == SegmentKind.STATIC:
        if draft.condition is not None or draft.rule is not None:
            raise InvalidInput("condition: a STATIC segment has no condition or rule; its members are listed")
        return None
    if (draft.condition is None) == (draft.rule is None):
        raise InvalidInput(f"condition: a {draft.kind} segment needs exactly one of condition or rule")
    return parse_rule(draft.rule) if draft.rule is not None else parse_condition(draft.condition)


def _refuse_tier_key(key: str) -> None:
    """`tier-` keys are the tier ladder's TIER segments: only setTierLadder makes or removes them."""
    if is_tier_segment_key(key):
        raise InvalidInput(
            f"key: {key[:70]!r}: keys starting with 'tier-' belong to the tier ladder (setTierLadder)"
        )


def _validate(draft: SegmentDraft) -> Node | None:
    validate_key(draft.key, "key")
    _refuse_tier_key(draft.key)
    if draft.kind == SegmentKind.TIER:
        raise InvalidInput("kind: TIER segments are made by setTierLadder, one per tier")
    if not draft.name.strip() or len(draft.name) > 200:
        raise InvalidInput("name: must be 1 to 200 characters")
    if draft.kind not in SegmentKind.__members__:
        raise InvalidInput(f"kind: {draft.kind!r} is not one of STATIC, DYNAMIC, COMPUTED, TIER")
    if draft.applies_tag is not None:
        validate_key(draft.applies_tag, "appliesTag")
    return _condition(draft)


class SegmentService:
    def __init__(self, db: Database, clock: Clock, engine: SegmentEngine) -> None:
        self.db = db
        self.clock = clock
        self.engine = engine

    # ---------- definitions ----------

    async def create(self, program_id: int, draft: SegmentDraft, *, actor: str) -> Segment:
        condition = _validate(draft)
        now = self.clock.now()
        try:
            async with self.db.unit_of_work() as uow:
                row = Segment(
                    program_id=program_id,
                    key=draft.key,
                    name=draft.name.strip(),
                    kind=draft.kind,
                    condition=None if condition is None else condition_to_json(condition),
                    applies_tag=draft.applies_tag,
                    created_at=now,
                    updated_at=await next_stamp(uow.session, program_id, now),
                )
                uow.session.add(row)
                await uow.session.flush()
                await self._check_references(uow.session, program_id)
                if condition is not None:
                    await self.engine.recompute(uow.session, program_id, [draft.key], now)
                await record_change(
                    uow,
                    program_id=program_id,
                    actor=actor,
                    action="createSegment",
                    at=now,
                    target=draft.key,
                    after=audited(row),
                )
        except IntegrityError:
            raise Conflict(f"key: a segment {draft.key!r} already exists") from None
        return row

    async def update(self, program_id: int, draft: SegmentDraft, *, actor: str) -> Segment:
        condition = _validate(draft)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            row = await _segment(uow.session, program_id, draft.key)
            if (row.kind == SegmentKind.STATIC) != (draft.kind == SegmentKind.STATIC):
                raise InvalidInput("kind: a STATIC segment stays STATIC (and a rule-driven one rule-driven)")
            before = audited(row)
            old_tag = row.applies_tag
            row.name = draft.name.strip()
            row.kind = draft.kind
            row.condition = None if condition is None else condition_to_json(condition)
            row.applies_tag = draft.applies_tag
            row.updated_at = await next_stamp(uow.session, program_id, now)
            await uow.session.flush()
            await self._check_references(uow.session, program_id)
            if old_tag != draft.applies_tag:
                await _retag(uow.session, program_id, row, old_tag, now)
            if condition is not None:
                await self.engine.recompute(uow.session, program_id, [draft.key], now)
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="updateSegment",
                at=now,
                target=draft.key,
                before=before,
                after=audited(row),
            )
        return row

    async def delete(self, program_id: int, key: str, *, actor: str) -> bool:
        _refuse_tier_key(key)
        async with self.db.unit_of_work() as uow:
            row = await _segment(uow.session, program_id, key)
            index = await self.engine.index(uow.session, program_id)
            readers = sorted(d.key for d in index.ordered if key in d.segments)
            if readers:
                raise Conflict(f"key: segment {key!r} is read by {', '.join(readers)}; change those first")
            rewards = await _rewards_for(uow.session, program_id, key)
            if rewards:
                raise Conflict(
                    f"key: segment {key!r} is what rewards {', '.join(rewards)} are for; change those first"
                )
            dependents = [d.key for d in index.dependents(key)]
            before = audited(row)
            if row.applies_tag:
                await _retag(uow.session, program_id, row, row.applies_tag, self.clock.now(), keep=False)
            await uow.session.delete(row)
            await uow.session.flush()
            if dependents:
                await self.engine.recompute(uow.session, program_id, dependents, self.clock.now())
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="deleteSegment",
                at=self.clock.now(),
                target=key,
                before=before,
            )
        return True

    async def _check_references(self, session: AsyncSession, program_id: int) -> None:
        """Refuse missing references and cycles: building the engine's index orders the definitions."""
        await self.engine.index(session, program_id)

    async def preview(self, program_id: int, condition: Any, rule: str | None) -> Preview:
        """The normalised condition, how many members it selects now, the first of them and its
        overlap with the existing segments; nothing is stored."""
        draft = SegmentDraft("preview", "preview", SegmentKind.DYNAMIC, condition, rule)
        node = _condition(draft)
        assert node is not None
        async with self.db.read() as session:
            view = await self.engine.view(session, program_id)
            dependency_order([*view.index.ordered, Definition.of(0, "\x00preview", "DYNAMIC", node, None)])
            compilation = view.compilation(session.get_bind().dialect.name, program_id, self.clock.now())
            chosen = select(compilation.members_where(node).subquery().c.id)
            size = (await session.execute(select(func.count()).select_from(chosen.subquery()))).scalar_one()
            sample = await session.scalars(
                select(Member).where(Member.id.in_(chosen)).order_by(Member.id).limit(PREVIEW_SAMPLE)
            )
            both = func.count().label("both")
            overlaps = await session.execute(
                select(Segment.key, both)
                .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
                .where(Segment.program_id == program_id, SegmentMembership.member_id.in_(chosen))
                .group_by(Segment.key)
                .order_by(both.desc(), Segment.key)
            )
            return Preview(node, int(size), list(sample), [(key, int(count)) for key, count in overlaps])

    async def warnings(self, program_id: int, node: Node | None) -> list[str]:
        """What looks wrong in a valid condition: event types never recorded, paths no member has."""
        if node is None:
            return []
        async with self.db.read() as session:
            return await condition_warnings(session, program_id, node)

    # ---------- static membership ----------

    async def import_static(self, program_id: int, key: str, text: str, *, actor: str) -> ImportResult:
        validate_key(key, "key")
        _refuse_tier_key(key)
        wanted, rejected = _read_csv(text)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            existing = await _find_segment(session, program_id, key)
            before = None if existing is None else await _with_size(session, existing)
            row = await _static_segment(session, program_id, key, now)
            found = await member_ids_by_external_id(session, program_id, sorted(set(wanted.values())))
            for line, external_id in wanted.items():
                if external_id not in found:
                    rejected.append((line, f"no member {external_id!r} in this program"))
            ids = {found[e] for e in wanted.values() if e in found}
            await self._set_static(session, program_id, row, ids, set(), now)
            imported = sum(1 for e in wanted.values() if e in found)
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="importStaticSegment",
                at=now,
                target=key,
                before=before,
                after={**await _with_size(session, row), "imported": imported},
            )
        rejected.sort()
        return ImportResult(imported, [f"line {line}: {reason}" for line, reason in rejected])

    async def change_static(
        self, program_id: int, key: str, add: Sequence[str], remove: Sequence[str], *, actor: str
    ) -> Segment:
        if len(add) + len(remove) > MAX_LISTED:
            raise InvalidInput(f"memberExternalIds: at most {MAX_LISTED} per call")
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            row = await _segment(uow.session, program_id, key)
            if row.kind != SegmentKind.STATIC:
                raise InvalidInput(f"key: {key!r} is {row.kind}; only STATIC segments take listed members")
            found = await member_ids_by_external_id(uow.session, program_id, sorted({*add, *remove}))
            missing = sorted({*add, *remove} - set(found))
            if missing:
                raise NotFound(f"memberExternalIds: no member {missing[0]!r} in this program")
            before = await _with_size(uow.session, row)
            await self._set_static(
                uow.session, program_id, row, {found[e] for e in add}, {found[e] for e in remove}, now
            )
            await record_change(  # sizes, not externalIds: the log keeps no member's identity
                uow,
                program_id=program_id,
                actor=actor,
                action="changeStaticSegment",
                at=now,
                target=key,
                before=before,
                after=await _with_size(uow.session, row),
            )
        return row

    async def _set_static(
        self,
        session: AsyncSession,
        program_id: int,
        row: Segment,
        add: set[int],
        remove: set[int],
        now: datetime,
    ) -> None:
        current = set(
            (
                await session.execute(
                    select(SegmentMembership.member_id).where(
                        SegmentMembership.segment_id == row.id,
                        SegmentMembership.member_id.in_(sorted(add | remove)),
                    )
                )
            ).scalars()
        )
        flips = [Flip(row.id, row.key, m, True, row.applies_tag) for m in sorted(add - current)]
        flips += [Flip(row.id, row.key, m, False, row.applies_tag) for m in sorted((remove & current) - add)]
        await self.engine.apply(session, program_id, flips, now)
        index = await self.engine.index(session, program_id)
        plans = {f.member_id: index.dependents(row.key) for f in flips}
        await self.engine.reevaluate(session, program_id, {m: p for m, p in plans.items() if p}, now)

    # ---------- lifecycle thresholds ----------

    async def set_lifecycle_thresholds(
        self, program_id: int, thresholds: LifecycleThresholds, *, actor: str
    ) -> Program:
        """Store the program's thresholds and recompute the segments that read `lifecycle`."""
        LifecycleThresholds.from_settings(thresholds.to_settings())  # the same validation as reading
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            program = await uow.session.get(Program, program_id, with_for_update=True)
            if program is None:
                raise NotFound(f"program {program_id} does not exist")
            before = LifecycleThresholds.from_settings(program.settings or {})
            program.settings = {**program.settings, **thresholds.to_settings()}
            await record_program_setting(
                uow,
                program,
                actor=actor,
                action="setLifecycleThresholds",
                at=now,
                before=before.to_settings(),
                after=thresholds.to_settings(),
            )
            await uow.session.flush()
            index = await self.engine.index(uow.session, program_id)
            readers = [d.key for d in index.ordered if d.kind != SegmentKind.STATIC and _reads_lifecycle(d)]
            if readers:
                await self.engine.recompute(uow.session, program_id, readers, now)
        return program

    # ---------- recompute ----------

    async def recompute(
        self, program_id: int, keys: Sequence[str] | None = None, progress: Progress | None = None
    ) -> int:
        """Refresh RFM and ABC, then the segments; returns the number of members evaluated."""
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            if keys is not None:
                for key in keys:
                    await _segment(uow.session, program_id, key)
            await refresh_scores(uow.session, program_id, now)
            await self.engine.recompute(uow.session, program_id, keys, now, progress)
            count = select(func.count()).select_from(Member).where(Member.program_id == program_id)
            return int((await uow.session.execute(count)).scalar_one())

    # ---------- reads ----------

    async def lifecycle_stages(
        self, program_id: int, members: Sequence[tuple[int, datetime]]
    ) -> dict[int, str]:
        """Lifecycle stages as of now (live, from purchase buckets) of members given as (id, joinedAt)."""
        now = self.clock.now()
        async with self.db.read() as session:
            settings = (
                await session.execute(select(Program.settings).where(Program.id == program_id))
            ).scalar_one()
            rows = await session.execute(
                select(
                    EventAggregate.member_id, func.sum(EventAggregate.count), func.max(EventAggregate.last_at)
                )
                .where(
                    EventAggregate.member_id.in_([member_id for member_id, _ in members]),
                    EventAggregate.event_type == "purchase",
                )
                .group_by(EventAggregate.member_id)
            )
            purchases = {member_id: (int(count), last) for member_id, count, last in rows}
        thresholds = LifecycleThresholds.from_settings(settings or {})
        stages: dict[int, str] = {}
        for member_id, joined_at in members:
            count, last = purchases.get(member_id, (0, None))
            stages[member_id] = lifecycle_stage(joined_at, count, last, now, thresholds)
        return stages

    async def get(self, program_id: int, key: str) -> Segment | None:
        async with self.db.read() as session:
            return await _find_segment(session, program_id, key)

    async def list_segments(self, program_id: int) -> list[Segment]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(Segment).where(Segment.program_id == program_id).order_by(Segment.key)
            )
            return list(rows.scalars())

    async def changes(self, segment: Segment, since: datetime | None, first: int) -> list[ChangeView]:
        """The change log of a segment, oldest first, from `since` on (at most `first` entries)."""
        check_page_size(first)
        query = (
            select(SegmentChange.id, Member.external_id, SegmentChange.change, SegmentChange.at)
            .join(Member, Member.id == SegmentChange.member_id)
            .where(SegmentChange.segment_id == segment.id)
        )
        if since is not None:
            query = query.where(SegmentChange.at >= since)
        async with self.db.read() as session:
            rows = await session.execute(query.order_by(SegmentChange.id).limit(first))
            return [ChangeView(i, segment.key, member, change, at) for i, member, change, at in rows]

    async def history(
        self, segment_id: int, since: datetime | None, until: datetime | None
    ) -> list[SizePoint]:
        """Daily points (UTC days): size at the day's end, entered and left that day.

        Sizes are walked back from the current size over the change log since `since`
        (`daily_sizes`), so change-log rows older than the first day are never read.
        """
        now = self.clock.now()
        last = (until or now).astimezone(UTC).date()
        first = since.astimezone(UTC).date() if since is not None else last - timedelta(days=29)
        if first > last:
            raise InvalidInput("since: must not be after until")
        if (last - first).days >= MAX_HISTORY_DAYS:
            raise InvalidInput(f"since: at most {MAX_HISTORY_DAYS} days of history per request")
        async with self.db.read() as session:
            size = await segment_size(session, segment_id)
            days = await daily_sizes(session, segment_id, first, last, size, now.astimezone(UTC))
        points = [SizePoint(_day_start(d.day), d.size, d.entered, d.left) for d in days]
        later = max(first, now.astimezone(UTC).date() + timedelta(days=1))
        points += [  # days still to come: today's size, nothing moved yet
            SizePoint(_day_start(later + timedelta(days=n)), size, 0, 0)
            for n in range((last - later).days + 1)
        ]
        return points


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


async def next_stamp(session: AsyncSession, program_id: int, now: datetime) -> datetime:
    """An updated_at later than every other of the program's: the engine's index cache key moves on."""
    newest = (
        await session.execute(select(func.max(Segment.updated_at)).where(Segment.program_id == program_id))
    ).scalar_one_or_none()
    return now if newest is None or newest < now else newest + timedelta(microseconds=1)


def _reads_lifecycle(definition: Definition) -> bool:
    nodes = walk(definition.condition) if definition.condition is not None else []
    return any(isinstance(n, AttrCompare) and n.path == "lifecycle" for n in nodes)


async def _find_segment(session: AsyncSession, program_id: int, key: str) -> Segment | None:
    query = select(Segment).where(Segment.program_id == program_id, Segment.key == key)
    return (await session.execute(query)).scalar_one_or_none()


async def _segment(session: AsyncSession, program_id: int, key: str) -> Segment:
    row = await _find_segment(session, program_id, key)
    if row is None:
        raise NotFound(f"key: no segment {key!r} in this program")
    return row


async def _with_size(session: AsyncSession, row: Segment) -> dict[str, Any]:
    """A STATIC segment's definition and how many members it lists: its audited value."""
    return {**audited(row), "members": await segment_size(session, row.id)}


async def _static_segment(session: AsyncSession, program_id: int, key: str, now: datetime) -> Segment:
    row = await _find_segment(session, program_id, key)
    if row is None:
        row = Segment(
            program_id=program_id,
            key=key,
            name=key,
            kind=SegmentKind.STATIC.value,
            condition=None,
            applies_tag=None,
            created_at=now,
            updated_at=await next_stamp(session, program_id, now),
        )
        session.add(row)
        await session.flush()
    elif row.kind != SegmentKind.STATIC:
        raise InvalidInput(f"key: {key!r} is a {row.kind} segment; CSV imports go into STATIC segments")
    return row


async def _retag(
    session: AsyncSession,
    program_id: int,
    row: Segment,
    old_tag: str | None,
    now: datetime,
    keep: bool = True,
) -> None:
    """Move the tag the segment applies: drop the old one from its members, give them the new one."""
    if old_tag is not None:
        await session.execute(
            delete(MemberTag).where(
                MemberTag.program_id == program_id, MemberTag.key == old_tag, MemberTag.source == row.key
            )
        )
    if keep and row.applies_tag is not None:
        members = (
            await session.execute(
                select(SegmentMembership.member_id).where(SegmentMembership.segment_id == row.id)
            )
        ).scalars()
        session.add_all(
            MemberTag(member_id=m, key=row.applies_tag, source=row.key, program_id=program_id, since=now)
            for m in members
        )
        await session.flush()


def _read_csv(text: str) -> tuple[dict[int, str], list[tuple[int, str]]]:
    """Rows by line number, and the rejected ones with their reason; the header is `externalId`."""
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or [c.strip() for c in lines[0]] != ["externalId"]:
        raise InvalidInput('csv: the first line must be the header "externalId"')
    if len(lines) - 1 > MAX_IMPORT_ROWS:
        raise InvalidInput(f"csv: at most {MAX_IMPORT_ROWS} rows per import, got {len(lines) - 1}")
    wanted: dict[int, str] = {}
    rejected: list[tuple[int, str]] = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != 1:
            rejected.append((number, f"expected one column, got {len(cells)}"))
            continue
        try:
            wanted[number] = validate_external_id(cells[0].strip(), "externalId")
        except Rejection as rejection:
            rejected.append((number, str(rejection)))
    return wanted, rejected


async def _rewards_for(session: AsyncSession, program_id: int, key: str) -> list[str]:
    """The keys of the rewards that list the segment (rewards by segment), in key order."""
    rows = await session.scalars(
        select(Reward.key)
        .join(RewardSegment, RewardSegment.reward_id == Reward.id)
        .where(Reward.program_id == program_id, RewardSegment.segment_key == key)
        .order_by(Reward.key)
    )
    return list(rows.all())
