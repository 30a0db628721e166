"""The expiry sweep racing redemptions of the same lots: points are taken once, never below zero.

Both take the member's row lock before they touch its lots (see domain/ledger/lots.py), so
whichever commits first wins and the other sees what is left. On PostgreSQL the racers run on
separate connections; on SQLite they serialise, and the outcome rules are the same.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from api.runtime import Services
from domain.enums import AccrualStatus, EntryKind
from domain.errors import InvalidInput
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import LedgerEntry, Member, PointsLot
from tests.support import ShiftableClock
from tests.support.graphql import ProgramFixture

MEMBERS = 12


async def test_an_expiry_racing_redemptions_of_the_same_lot_takes_each_point_once(
    services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given members whose only points are one 100-point lot that is due
    await services.programs.set_points_expiry(program.id, 30, actor="test")
    names = [f"race-{i}" for i in range(MEMBERS)]
    await services.members.upsert_members(program.id, [MemberUpsert(n) for n in names])
    now = clock.now()
    drafts = [EventDraft(f"e-{n}", n, "purchase", now - timedelta(minutes=1), "100") for n in names]
    await services.events.record_events(program.id, drafts)
    clock.shift(timedelta(days=30, minutes=1))

    # when each member redeems 60 (even members) or 100 (odd) while sweeps run
    wanted = {n: 60 if i % 2 == 0 else 100 for i, n in enumerate(names)}
    redemptions = [services.ledger.redeem(program.id, n, p, "race", f"k-{n}") for n, p in wanted.items()]
    sweeps = [services.expiry.pass_once(program.id) for _ in range(3)]
    results = await asyncio.gather(*redemptions, *sweeps, return_exceptions=True)
    await services.expiry.drain(program.id)  # what a sweep skipped (member locked) expires now

    # then every redemption either took its points from the lot or found them expired
    outcomes = dict(zip(names, results[:MEMBERS], strict=True))
    assert all(isinstance(r, (LedgerEntry, InvalidInput)) for r in results[:MEMBERS]), results
    assert all(not isinstance(r, BaseException) for r in results[MEMBERS:]), results
    async with services.db.read() as session:
        rows = await session.execute(
            select(Member.external_id, LedgerEntry.kind, func.sum(LedgerEntry.points), func.count())
            .join(Member, Member.id == LedgerEntry.member_id)
            .where(LedgerEntry.program_id == program.id, LedgerEntry.status == AccrualStatus.POSTED.value)
            .group_by(Member.external_id, LedgerEntry.kind)
        )
        sums: dict[tuple[str, str], tuple[int, int]] = {(m, k): (int(s), c) for m, k, s, c in rows}
        members = await session.execute(
            select(Member.external_id, Member.points_balance).where(Member.program_id == program.id)
        )
        balances = {name: balance for name, balance in members}  # noqa: C416 - Rows
        open_lots = await session.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(PointsLot.program_id == program.id)
        )
    assert open_lots == 0
    for name in names:
        redeemed = -sums.get((name, EntryKind.REDEMPTION.value), (0, 0))[0]
        expired, expiries = sums.get((name, EntryKind.EXPIRY.value), (0, 0))
        # at most one expiry entry per lot; the lot's 100 points left exactly once; balance 0, never below
        assert expiries <= 1
        assert redeemed - expired == 100, (name, redeemed, expired)
        assert balances[name] == 0
        if isinstance(outcomes[name], LedgerEntry):
            assert redeemed == wanted[name]
        else:
            assert redeemed == 0
            assert -expired == 100
