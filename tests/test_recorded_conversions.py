"""The recorded conversions and reactions (domain/analytics/recording.py) equal the probes they replace.

A hypothesis test interleaves segment entries and messages (logged unknown, as the segment
engine and triggers write them), purchases (some held, then approved), refunds, reactions and
backfills on a fresh program, and after every step reads back: every recorded entry and message
answers as the probe of the daily buckets and events does (`goal_within`, the reaction EXISTS),
for several conversion windows. At the end the whole report equals the probe-only report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import ColumnElement, String, case, cast, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.conversion import goal_within
from domain.analytics.recording import CLICKED, OPENED, STORED_GOAL, fill_conversions, record_history
from domain.analytics.segments import Conversion, MessageStats, SegmentAnalytics, day_start
from domain.audit import AuditOutcome, Finding, ProposedAccrual
from domain.campaigns.messages import stored_channel
from domain.db.dialect import plus_days
from domain.db.engine import UnitOfWork
from domain.enums import AccrualStatus, EventStatus, Verdict
from domain.events.service import EventService
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import Event, LedgerEntry, Message, Segment, SegmentChange
from domain.settings import Settings
from fraud.review import ReviewService
from tests.support import Harness, private_services
from tests.support.examples import examples
from tests.support.fraud import reviewer

DAYS = (1, 2, 7, 90)
MEMBERS = ("m0", "m1")
#: Times on a coarse grid (hours, on or off the hour) so entries and events share days and instants.
HOURS = st.integers(min_value=0, max_value=20 * 24)
MINUTES = st.sampled_from([0, 0, 30])


class HoldOnRequest:
    """An auditor that holds an event for review when its properties say so."""

    async def audit(self, uow: UnitOfWork, accruals: Sequence[ProposedAccrual]) -> list[AuditOutcome]:
        return [
            AuditOutcome(Verdict.REVIEW, (Finding("test_rule", Verdict.REVIEW, "held on request"),))
            if accrual.event.properties.get("hold")
            else AuditOutcome(Verdict.ALLOW, ())
            for accrual in accruals
        ]


@dataclass
class World:
    harness: Harness
    events: EventService
    review: ReviewService
    program_id: int
    segment_id: int
    members: dict[str, int]
    base: datetime
    purchases: list[str]
    messages: list[int]


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings) as opened:
        yield opened


STEPS = st.one_of(
    st.tuples(st.just("enter"), st.sampled_from(MEMBERS), HOURS, MINUTES),
    st.tuples(st.just("purchase"), st.sampled_from(MEMBERS), HOURS, MINUTES, st.booleans()),
    st.tuples(st.just("refund"), st.integers(0, 9)),
    st.tuples(st.just("approve"), st.integers(0, 9)),
    st.tuples(st.just("react"), st.sampled_from([OPENED, CLICKED]), st.integers(0, 9), HOURS, st.booleans()),
    st.tuples(st.just("fill")),
)


# Each example builds its own program: the fixture's services are shared, never its rows.
@hypothesis_settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEPS, min_size=1, max_size=12))
@example(steps=[("enter", "m0", 0, 30), ("purchase", "m0", 5, 0, False), ("refund", 0)])  # a refund
@example(steps=[("enter", "m0", 0, 30), ("purchase", "m0", 5, 0, True), ("fill",), ("approve", 0)])
@example(steps=[("enter", "m0", 0, 30), ("purchase", "m0", 30, 0, False), ("purchase", "m0", 0, 0, False)])
@example(steps=[("enter", "m1", 24, 0), ("react", OPENED, 0, 30, True), ("react", CLICKED, 0, 23, False)])
def test_recorded_rows_answer_as_the_probes_do(harness: Harness, steps: list[tuple[Any, ...]]) -> None:
    world = harness.run(_world(harness))
    for step in steps:
        harness.run(_step(world, step))
        assert harness.run(_disagreements(world)) == [], step
    harness.run(_same_report(world))


async def _world(harness: Harness) -> World:
    services = harness.services
    clock = services.clock
    program = await services.programs.create_program(f"rc-{uuid.uuid4().hex[:16]}", "Recorded", "B2C")
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in MEMBERS])
    members = {}
    for name in MEMBERS:
        member = await services.members.get(program.id, name)
        assert member is not None
        members[name] = member.id
    now = clock.now()
    async with services.db.unit_of_work() as uow:
        segment = Segment(
            program_id=program.id, key="s", name="S", kind="STATIC", created_at=now, updated_at=now
        )
        uow.session.add(segment)
        await uow.session.flush()
        segment_id = segment.id
    events = EventService(services.db, clock, HoldOnRequest())
    base = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=21)
    return World(
        harness,
        events,
        ReviewService(services.db, clock),
        program.id,
        segment_id,
        members,
        base,
        [],
        [],
    )


async def _step(world: World, step: tuple[Any, ...]) -> None:
    kind = step[0]
    db = world.harness.services.db
    if kind == "enter":  # as the segment engine and a SEND_MESSAGE trigger log them: unknown
        _, member, hours, minutes = step
        at = world.base + timedelta(hours=hours, minutes=minutes)
        async with db.unit_of_work() as uow:
            uow.session.add(
                SegmentChange(
                    program_id=world.program_id,
                    segment_id=world.segment_id,
                    member_id=world.members[member],
                    change="ENTERED",
                    at=at,
                )
            )
            message = Message(
                program_id=world.program_id,
                member_id=world.members[member],
                segment_id=world.segment_id,
                segment_key="s",
                channel="IN_APP",
                template="welcome",
                status="SENT",
                created_at=at,
            )
            uow.session.add(message)
            await uow.session.flush()
            world.messages.append(message.id)
    elif kind == "purchase":
        _, member, hours, minutes, hold = step
        external_id = f"p{len(world.purchases)}"
        world.purchases.append(external_id)
        at = world.base + timedelta(hours=hours, minutes=minutes)
        await _record(world, external_id, member, "purchase", at, "10", {"hold": True} if hold else {})
    elif kind == "refund" and world.purchases:
        of = world.purchases[step[1] % len(world.purchases)]
        member = await _member_of(world, of)
        at = world.base + timedelta(days=20)
        await _record(world, f"r{uuid.uuid4().hex[:8]}", member, "refund", at, None, {"refundOf": of})
    elif kind == "approve" and world.purchases:
        of = world.purchases[step[1] % len(world.purchases)]
        async with db.read() as session:
            entry_id = await session.scalar(
                select(LedgerEntry.id).where(
                    LedgerEntry.program_id == world.program_id,
                    LedgerEntry.idempotency_key == f"event:{of}",
                    LedgerEntry.status == AccrualStatus.PENDING_REVIEW.value,
                )
            )
        if entry_id is not None:
            await world.review.approve(
                reviewer(world.program_id, world.harness.services.clock, "tester"), entry_id
            )
    elif kind == "react" and world.messages:
        _, reaction, pick, hours, as_text = step
        message_id = world.messages[pick % len(world.messages)]
        async with db.read() as session:
            owner = await session.scalar(select(Message.member_id).where(Message.id == message_id))
        member = next(name for name, id_ in world.members.items() if id_ == owner)
        at = world.base + timedelta(hours=hours)
        properties = {"messageId": str(message_id) if as_text else message_id}
        await _record(world, f"x{uuid.uuid4().hex[:8]}", member, reaction, at, None, properties)
    elif kind == "fill":
        async with db.unit_of_work() as uow:
            await fill_conversions(uow.session, world.program_id)


async def _record(
    world: World,
    external_id: str,
    member: str,
    event_type: str,
    at: datetime,
    amount: str | None,
    properties: dict[str, Any],
) -> None:
    draft = EventDraft(external_id, member, event_type, at, amount, properties)
    [outcome] = await world.events.record_events(world.program_id, [draft])
    assert event_type == "refund" or outcome.status != EventStatus.REJECTED, outcome


async def _member_of(world: World, external_id: str) -> str:
    async with world.harness.services.db.read() as session:
        member_id = await session.scalar(
            select(Event.member_id).where(
                Event.program_id == world.program_id, Event.external_id == external_id
            )
        )
    return next(name for name, id_ in world.members.items() if id_ == member_id)


def _flag(condition: Any) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


async def _disagreements(world: World) -> list[tuple[str, int, int]]:
    """Recorded rows whose stored answer differs from the probe's: (what, row id, days)."""
    found: list[tuple[str, int, int]] = []
    async with world.harness.services.db.read() as session:
        for days in DAYS:
            entry = SegmentChange
            stored = _flag(entry.first_goal_at <= plus_days(session, entry.at, days))
            probe = _flag(goal_within(session, entry.member_id, entry.at, STORED_GOAL, days))
            rows = await session.scalars(
                select(entry.id).where(
                    entry.program_id == world.program_id, entry.goal_known, stored != probe
                )
            )
            found += [("entry", row, days) for row in rows]
            stored = _flag(Message.first_goal_at <= plus_days(session, Message.created_at, days))
            probe = _flag(goal_within(session, Message.member_id, Message.created_at, STORED_GOAL, days))
            rows = await session.scalars(
                select(Message.id).where(
                    Message.program_id == world.program_id, Message.stats_known, stored != probe
                )
            )
            found += [("message", row, days) for row in rows]
        for reaction, column in ((OPENED, Message.opened), (CLICKED, Message.clicked)):
            rows = await session.scalars(
                select(Message.id).where(
                    Message.program_id == world.program_id,
                    Message.stats_known,
                    _flag(column) != _flag(_reacted(reaction)),
                )
            )
            found += [(reaction, row, 0) for row in rows]
    return found


def _reacted(event_type: str) -> ColumnElement[bool]:
    """The report's reaction probe before recording (domain/analytics/segments.py, issue 7)."""
    return exists().where(
        Event.member_id == Message.member_id,
        Event.type == event_type,
        Event.occurred_at >= Message.created_at,
        cast(Event.properties["messageId"].as_string(), String) == cast(Message.id, String),
    )


async def _same_report(world: World) -> None:
    services = world.harness.services
    analytics = SegmentAnalytics(services.db, services.clock)
    start, end = world.base.date(), services.clock.now().date()
    for days in DAYS:
        report = await analytics.report(world.program_id, "s", start, end, STORED_GOAL, days)
        async with services.db.read() as session:
            assert report.conversion == await _probed_conversion(session, world.segment_id, start, end, days)
            assert report.messages == await _probed_messages(session, world.segment_id, start, end, days)


async def _probed_conversion(
    session: AsyncSession, segment_id: int, start: date, end: date, days: int
) -> Conversion:
    first_entry = (
        select(SegmentChange.member_id, func.min(SegmentChange.at).label("at"))
        .where(
            SegmentChange.segment_id == segment_id,
            SegmentChange.change == "ENTERED",
            SegmentChange.at >= day_start(start),
            SegmentChange.at < day_start(end + timedelta(days=1)),
        )
        .group_by(SegmentChange.member_id)
        .subquery()
    )
    converted = goal_within(session, first_entry.c.member_id, first_entry.c.at, STORED_GOAL, days)
    entered, count = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(_flag(converted)), 0)).select_from(first_entry)
        )
    ).one()
    return Conversion(STORED_GOAL, days, entered, int(count))


async def _probed_messages(
    session: AsyncSession, segment_id: int, start: date, end: date, days: int
) -> list[MessageStats]:
    def counted(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(_flag(condition)), 0)

    converted = goal_within(session, Message.member_id, Message.created_at, STORED_GOAL, days)
    rows = await session.execute(
        select(
            Message.template,
            Message.channel,
            func.count(),
            counted(Message.status == "SENT"),
            counted(Message.status == "SUPPRESSED"),
            counted(_reacted(OPENED)),
            counted(_reacted(CLICKED)),
            counted(converted),
        )
        .where(
            Message.segment_id == segment_id,
            Message.created_at >= day_start(start),
            Message.created_at < day_start(end + timedelta(days=1)),
        )
        .group_by(Message.template, Message.channel)
    )
    return [
        MessageStats(t, stored_channel(c), n, int(s), int(x), int(o), int(k), int(v))
        for t, c, n, s, x, o, k, v in rows
    ]


def test_the_report_probes_other_goal_types(harness: Harness) -> None:
    """A goal other than the stored one is answered by the probe: here `visit`, never recorded."""
    world = harness.run(_world(harness))
    harness.run(_step(world, ("enter", "m0", 24, 0)))
    at = world.base + timedelta(hours=30)
    harness.run(_record(world, "v1", "m0", "visit", at, None, {}))
    services = world.harness.services
    report = harness.run(
        SegmentAnalytics(services.db, services.clock).report(
            world.program_id, "s", world.base.date(), services.clock.now().date(), "visit", 1
        )
    )
    assert (report.conversion.entered, report.conversion.converted) == (1, 1)
    assert [(m.created, m.converted) for m in report.messages] == [(1, 1)]


def test_record_history_records_unrecorded_rows_and_repairs_stale_ones(harness: Harness) -> None:
    # given m0's unrecorded entry and message, and m1's entry marked recorded but stale (no purchase
    # after it, though m1 bought 5 hours later: as when an older release wrote the purchase)
    world = harness.run(_world(harness))
    harness.run(_step(world, ("enter", "m0", 0, 0)))
    harness.run(_record(world, "p1", "m1", "purchase", world.base + timedelta(hours=5), "10", {}))

    async def log_stale_entry() -> None:
        async with world.harness.services.db.unit_of_work() as uow:
            uow.session.add(
                SegmentChange(
                    program_id=world.program_id,
                    segment_id=world.segment_id,
                    member_id=world.members["m1"],
                    change="ENTERED",
                    at=world.base,
                    first_goal_at=None,
                    goal_known=True,
                )
            )

    harness.run(log_stale_entry())
    db = world.harness.services.db

    async def recorded() -> list[bool]:
        async with db.read() as session:
            rows = await session.scalars(
                select(SegmentChange.goal_known)
                .where(SegmentChange.program_id == world.program_id)
                .order_by(SegmentChange.id)
            )
            return list(rows)

    # when the history is recorded, then the unrecorded entry is, but the stale one still disagrees
    assert harness.run(record_history(db, world.program_id)) == 1
    assert harness.run(recorded()) == [True, True]
    assert [what for what, _, _ in harness.run(_disagreements(world))] == ["entry"] * len(DAYS)
    # and recomputing everything repairs it
    assert harness.run(record_history(db, world.program_id, everything=True)) == 2
    assert harness.run(_disagreements(world)) == []
    harness.run(_same_report(world))
