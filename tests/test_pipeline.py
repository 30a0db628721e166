"""The pipeline's audit step and its domain events after commit, with a stand-in auditor.

Until fraud/ has rules the API allows everything; these tests drive the
REVIEW and BLOCK paths through the same `EventService` the API uses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from api.runtime import Services
from domain.changes import MembersChanged
from domain.enums import EventStatus
from domain.events.service import EventOutcome, EventService
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import EventAggregate, LedgerEntry, Member
from tests.support.audit import VerdictFromProperties
from tests.support.graphql import ProgramFixture


async def test_held_and_blocked_accruals_move_nothing_but_pending(
    services: Services, program: ProgramFixture
) -> None:
    # given a pipeline whose audit holds or blocks on request, and an after-commit handler of the
    # member changes that reads committed state
    seen: list[tuple[MembersChanged, dict[int, int]]] = []

    async def handler(change: MembersChanged) -> None:
        async with services.db.read() as session:
            balances = await session.execute(
                select(Member.id, Member.points_balance).where(Member.id.in_(change.member_ids))
            )
            seen.append((change, {member_id: balance for member_id, balance in balances}))  # noqa: C416

    pipeline = EventService(services.db, services.clock, VerdictFromProperties())
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    services.db.bus.after_commit(MembersChanged, handler)
    at = datetime.now(UTC) - timedelta(hours=1)

    # when three purchases are recorded: allowed, held and blocked
    outcomes = await pipeline.record_events(
        program.id,
        [
            EventDraft("ok", "m1", "purchase", at, Decimal(10)),
            EventDraft("held", "m1", "purchase", at, Decimal(20), {"verdict": "REVIEW"}),
            EventDraft("blocked", "m1", "purchase", at, Decimal(30), {"verdict": "BLOCK"}),
        ],
    )

    # then only the allowed one posts points and fills aggregates; the held one is pending
    assert outcomes == [
        EventOutcome("ok", EventStatus.ACCEPTED, 10, None),
        EventOutcome("held", EventStatus.HELD_FOR_REVIEW, 0, "test_rule: REVIEW on request"),
        EventOutcome("blocked", EventStatus.BLOCKED, 0, "test_rule: BLOCK on request"),
    ]
    member = await services.members.get(program.id, "m1")
    assert member is not None
    assert (member.points_balance, member.pending_points) == (10, 20)
    async with services.db.read() as session:
        entries = (
            await session.execute(
                select(LedgerEntry.idempotency_key, LedgerEntry.status, LedgerEntry.points)
                .where(LedgerEntry.member_id == member.id)
                .order_by(LedgerEntry.points)
            )
        ).all()
        buckets = (
            await session.execute(
                select(EventAggregate.count, EventAggregate.amount_sum).where(
                    EventAggregate.member_id == member.id
                )
            )
        ).all()
    assert [tuple(e) for e in entries] == [
        ("event:ok", "POSTED", 10),
        ("event:held", "PENDING_REVIEW", 20),
        ("event:blocked", "REJECTED", 30),
    ]
    assert [tuple(b) for b in buckets] == [(1, 100_000)]

    # and the handler heard of the accepted purchase only (the balance it moved), after it was committed
    assert len(seen) == 1
    change, committed = seen[0]
    assert (change.program_id, dict(change.event_types), change.balances) == (
        program.id,
        {member.id: frozenset({"purchase"})},
        frozenset({member.id}),
    )
    assert dict(change.occurred) == {(member.id, "purchase"): frozenset({at})}
    assert committed == {member.id: 10}


async def test_a_batch_with_nothing_accepted_notifies_no_one(
    services: Services, program: ProgramFixture
) -> None:
    calls: list[MembersChanged] = []

    async def handler(change: MembersChanged) -> None:
        calls.append(change)

    pipeline = EventService(services.db, services.clock, VerdictFromProperties())
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    services.db.bus.after_commit(MembersChanged, handler)
    at = datetime.now(UTC) - timedelta(hours=1)
    await pipeline.record_events(
        program.id,
        [
            EventDraft("held", "m1", "purchase", at, Decimal(20), {"verdict": "REVIEW"}),
            EventDraft("blocked", "m1", "purchase", at, Decimal(30), {"verdict": "BLOCK"}),
            EventDraft("bad", "nobody", "visit", at),
        ],
    )
    assert calls == []


async def test_a_failing_after_commit_handler_does_not_fail_the_acknowledged_batch(
    services: Services, program: ProgramFixture
) -> None:
    async def broken(_: MembersChanged) -> None:
        raise ConnectionError("redis is down")

    pipeline = EventService(services.db, services.clock, VerdictFromProperties())
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    services.db.bus.after_commit(MembersChanged, broken)
    at = datetime.now(UTC) - timedelta(hours=1)
    outcomes = await pipeline.record_events(program.id, [EventDraft("v1", "m1", "visit", at)])
    assert outcomes == [EventOutcome("v1", EventStatus.ACCEPTED, 10, None)]
    member = await services.members.get(program.id, "m1")
    assert member is not None
    assert member.points_balance == 10
