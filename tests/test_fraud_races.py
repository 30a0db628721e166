"""The fraud audit under parallel requests: caps and receipts hold, not only sequentially.

Per-member figures are read under the member's row lock; receipts are claimed by
primary key (see docs/fraud.md, Concurrency). Runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from api.runtime import Services
from domain.enums import AccrualStatus, EntryKind
from domain.models import Event, LedgerEntry, Member
from tests.support.fraud import (
    ACCEPTED,
    BLOCKED,
    DAY,
    HELD,
    at,
    configure,
    enrol,
    points,
    purchase,
    record_drafts,
    stored_findings,
)
from tests.support.graphql import ProgramFixture


async def test_parallel_batches_cannot_overshoot_the_daily_cap(
    services: Services, program: ProgramFixture
) -> None:
    # given a daily cap of 1000
    await configure(services, program, "daily_points_cap", maxPoints=1000)
    await enrol(services, program, "m1")

    # when 20 batches of one 100-point purchase each race (5 minutes apart: velocity stays quiet)
    results = await asyncio.gather(
        *(record_drafts(services, program, purchase(f"p{i}", "m1", at(10, 5 * i), 100)) for i in range(20))
    )

    # then exactly 1000 points were posted that day and the other ten are held
    outcomes = [o for batch in results for o in batch]
    assert sorted(o.status for o in outcomes) == sorted([ACCEPTED] * 10 + [HELD] * 10)
    assert all(o.message and o.message.startswith("daily_points_cap: ") for o in outcomes if o.status == HELD)
    async with services.db.read() as session:
        posted = await session.scalar(
            select(func.sum(LedgerEntry.points))
            .join(Event, Event.id == LedgerEntry.event_id)
            .join(Member, Member.id == LedgerEntry.member_id)
            .where(
                Member.program_id == program.id,
                Member.external_id == "m1",
                LedgerEntry.kind == EntryKind.ACCRUAL.value,
                LedgerEntry.status == AccrualStatus.POSTED.value,
                Event.occurred_at >= DAY,
                Event.occurred_at < DAY + timedelta(days=1),
            )
        )
    assert posted == 1000
    assert await points(services, program, "m1") == (1000, 1000)
    assert len(await stored_findings(services, program)) == 10


async def test_parallel_batches_with_one_receipt_accept_it_once(
    services: Services, program: ProgramFixture
) -> None:
    # given five members
    members = [f"m{i}" for i in range(5)]
    await enrol(services, program, *members)

    # when each sends receipt R-1 in its own batch, all at once
    results = await asyncio.gather(
        *(
            record_drafts(services, program, purchase(f"p-{m}", m, at(10), 30, {"receiptId": "R-1"}))
            for m in members
        )
    )

    # then exactly one is accepted and the others are blocked as its duplicates
    outcomes = [o for batch in results for o in batch]
    [winner] = [o for o in outcomes if o.status == ACCEPTED]
    assert sorted(o.external_id for o in outcomes if o.status == BLOCKED) == sorted(
        f"p-{m}" for m in members if f"p-{m}" != winner.external_id
    )
    for o in outcomes:
        if o.status == BLOCKED:
            assert (
                o.message
                == f"duplicate_receipt: receiptId R-1 was already used by event {winner.external_id}"
            )
    totals = [await points(services, program, m) for m in members]
    assert sorted(totals) == [(0, 0)] * 4 + [(30, 0)]
    assert sorted(f[0] for f in await stored_findings(services, program)) == sorted(
        o.external_id for o in outcomes if o.status == BLOCKED
    )
