"""Paying referrers: a background loop (domain.background.Loop) like the expiry sweep.

A pass takes the WAITING referrals whose wait has passed (`ix_referrals_due`: it reads what is
due and nothing else), soonest first, and in one transaction per batch:
- locks their referrers' member rows first (`lock_members`, id order: the order every writer
  takes), then the referrals themselves, `FOR UPDATE SKIP LOCKED` on PostgreSQL, re-checking that
  each is still WAITING, so two workers never pay one referral;
- CANCELS a referral whose qualifying event was refunded or reversed (a REVERSAL entry of that
  event): the referrer is never paid for it, and a later purchase does not revive it;
- CANCELS a referral whose referrer was erased;
- otherwise pays the referrer (`referrerPoints`, a bonus through the posting path, key
  `referral:<id>`) and records `referral_completed` for the referrer through the event pipeline
  (`record_system_events`), so `count(referral_completed, 365d)` reads it; COMPLETED.
The clock is injected; `drain` runs it at once (tests, the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database
from domain.enums import EntryKind
from domain.events.system import REFERRAL_COMPLETED, SystemEvent, record_system_events
from domain.ledger.posting import Bonus, post_bonuses
from domain.members.service import lock_members
from domain.models import LedgerEntry, Member, Referral
from domain.referrals.program import load_referral_settings
from domain.referrals.status import ReferralStatus


@dataclass(frozen=True)
class PayoutPass:
    completed: int
    cancelled: int

    @property
    def settled(self) -> int:
        return self.completed + self.cancelled


class ReferralPayouts:
    """Drains due referrals in batches of `batch` per transaction."""

    name = "referral-payouts"
    topics: frozenset[str] = frozenset()

    def __init__(self, db: Database, clock: Clock, batch: int = 200, interval: float = 5.0) -> None:
        self.db = db
        self.clock = clock
        self.batch = batch
        self.interval = interval

    async def run_once(self) -> bool:
        done = await self.pass_once()
        return done.settled >= self.batch

    async def drain(self) -> PayoutPass:
        completed = cancelled = 0
        while True:
            done = await self.pass_once()
            completed, cancelled = completed + done.completed, cancelled + done.cancelled
            if done.settled < self.batch:
                return PayoutPass(completed, cancelled)

    async def pass_once(self) -> PayoutPass:
        now = self.clock.now()
        completed = cancelled = 0
        async with self.db.unit_of_work() as uow:
            session = uow.session
            due = (
                await session.execute(
                    select(Referral.id, Referral.referrer_id)
                    .where(Referral.status == ReferralStatus.WAITING.value, Referral.due_at <= now)
                    .order_by(Referral.due_at, Referral.id)
                    .limit(self.batch)
                )
            ).all()
            if not due:
                return PayoutPass(0, 0)
            live = await lock_members(session, {referrer for _, referrer in due})
            for referral in await _claim(session, [referral_id for referral_id, _ in due]):
                if referral.referrer_id not in live:
                    _settle(referral, ReferralStatus.CANCELLED, now, "the referrer was erased")
                    cancelled += 1
                elif await _reversed(session, referral):
                    _settle(
                        referral,
                        ReferralStatus.CANCELLED,
                        now,
                        "the qualifying event was refunded or reversed within the wait",
                    )
                    cancelled += 1
                else:
                    await _pay(session, referral, now)
                    completed += 1
        return PayoutPass(completed, cancelled)


async def _claim(session: AsyncSession, ids: list[int]) -> list[Referral]:
    query = (
        select(Referral)
        .where(Referral.id.in_(sorted(ids)), Referral.status == ReferralStatus.WAITING.value)
        .order_by(Referral.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list((await session.execute(query)).scalars())


async def _reversed(session: AsyncSession, referral: Referral) -> bool:
    found = await session.scalar(
        select(LedgerEntry.id)
        .where(
            LedgerEntry.event_id == referral.qualifying_event_id,
            LedgerEntry.kind == EntryKind.REVERSAL.value,
        )
        .limit(1)
    )
    return found is not None


def _settle(referral: Referral, status: ReferralStatus, now: datetime, note: str | None) -> None:
    referral.status = status.value
    referral.settled_at = now
    referral.note = note


async def _pay(session: AsyncSession, referral: Referral, now: datetime) -> None:
    settings = await load_referral_settings(session, referral.program_id)
    points = 0 if settings is None else settings.referrer_points
    referrer = await session.scalar(select(Member.external_id).where(Member.id == referral.referrer_id))
    assert referrer is not None
    await post_bonuses(
        session,
        referral.program_id,
        [
            Bonus(
                referral.referrer_id,
                points,
                "referral: a referred member's purchase stuck",
                f"referral:{referral.id}",
            )
        ],
        now,
    )
    await record_system_events(
        session,
        referral.program_id,
        [
            SystemEvent(
                referral.referrer_id,
                referrer,
                f"referral-{referral.id}-completed",
                REFERRAL_COMPLETED,
                now,
                {"referralId": str(referral.id), "points": points},
            )
        ],
        now,
    )
    referral.referrer_points = points
    _settle(referral, ReferralStatus.COMPLETED, now, None)
