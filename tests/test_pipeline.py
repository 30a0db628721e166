"""The pipeline's audit step and after-commit listeners, with a stand-in auditor.

Until fraud/ has rules the API allows everything; these tests drive the
REVIEW and BLOCK paths through the same `EventService` the API uses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from api.runtime import Services
from domain.enums import EventStatus
from domain.events.service import BatchPosted, EventOutcome, EventService
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import EventAggregate, LedgerEntry, Member
from tests.support.audit import VerdictFromProperties
from tests.support.graphql import ProgramFixture


async def test_held_and_blocked_accruals_move_nothing_but_pending(
    services: Services, program: ProgramFixture
) -> None:
    # given a pipeline whose audit holds or blocks on request, and a listener that reads committed state
    seen: list[tuple[BatchPosted, int]] = []

    async def listener(batch: BatchPosted) -> None:
        async with services.db.read() as session:
            balance = (
                await session.execute(
                    select(Member.points_balance).where(Member.id == batch.accruals[0].member_id)
                )
            ).scalar_one()
        seen.append((batch, balance))

    pipeline = EventService(services.db, services.clock, VerdictFromProperties(), [listener])
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
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

    # and the listener heard of the posted accrual only, after it was committed
    assert len(seen) == 1
    batch, committed_balance = seen[0]
    assert [(a.event_type, a.points) for a in batch.accruals] == [("purchase", 10)]
    assert committed_balance == 10


async def test_a_batch_with_nothing_posted_notifies_no_one(
    services: Services, program: ProgramFixture
) -> None:
    calls: list[BatchPosted] = []

    async def listener(batch: BatchPosted) -> None:
        calls.append(batch)

    pipeline = EventService(services.db, services.clock, VerdictFromProperties(), [listener])
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    at = datetime.now(UTC) - timedelta(hours=1)
    await pipeline.record_events(
        program.id, [EventDraft("l1", "m1", "login", at), EventDraft("bad", "nobody", "visit", at)]
    )
    assert calls == []


async def test_a_failing_listener_does_not_fail_the_acknowledged_batch(
    services: Services, program: ProgramFixture
) -> None:
    async def broken(_: BatchPosted) -> None:
        raise ConnectionError("redis is down")

    pipeline = EventService(services.db, services.clock, VerdictFromProperties(), [broken])
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    at = datetime.now(UTC) - timedelta(hours=1)
    outcomes = await pipeline.record_events(program.id, [EventDraft("v1", "m1", "visit", at)])
    assert outcomes == [EventOutcome("v1", EventStatus.ACCEPTED, 10, None)]
    member = await services.members.get(program.id, "m1")
    assert member is not None
    assert member.points_balance == 10
