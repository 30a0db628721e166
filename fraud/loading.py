"""Fill a `History` for one batch from the database, inside the batch's transaction.

Concurrency: the pipeline holds the batch's member rows locked (`lock_members`)
before the audit, so every per-member figure (velocity, daily points, cashier
credits, amounts) is read while no other transaction can add to it, and the daily
cap cannot be overshot by parallel requests. The two cross-member facts are made
atomic here: a receipt is claimed by inserting its primary key (a concurrent claim
waits for ours and then conflicts), and a device's uses are read under a
transaction-scoped advisory lock per device (PostgreSQL; SQLite has one writer).
Locks are taken in sorted order, after the member locks and before any event
insert, so batches cannot deadlock on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, cast, func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.dialect import insert_for
from domain.db.types import AMOUNT_SCALE
from domain.enums import AccrualStatus, EntryKind, EventStatus, Verdict
from domain.events.refunds import not_refunded
from domain.models import EarningRule, Event, FraudDevice, FraudReceipt, LedgerEntry, Member
from fraud.config import FraudConfig
from fraud.history import Candidate, Earned, History, identity_of

AMOUNT_UNITS = 10.0**AMOUNT_SCALE

VERDICT_OF_STATUS = {
    AccrualStatus.POSTED.value: Verdict.ALLOW,
    AccrualStatus.REVERSED.value: Verdict.ALLOW,
    AccrualStatus.PENDING_REVIEW.value: Verdict.REVIEW,
    AccrualStatus.REJECTED.value: Verdict.BLOCK,
}


async def load_history(
    session: AsyncSession,
    program_id: int,
    candidates: Sequence[Candidate],
    config: FraudConfig,
) -> History:
    """Everything the enabled rules need to judge `candidates` (in shadow mode too)."""
    history = History(config.zone)
    accruals = [c for c in candidates if c.points > 0]
    if not candidates:
        return history
    on = {name for name, settings in config.rules.items() if settings.enabled}
    await _claim_receipts(session, program_id, candidates, history)
    if accruals and on & {"velocity", "daily_points_cap", "cashier_collusion"}:
        await _load_earned(session, program_id, accruals, config, history)
    if accruals and "amount_outlier" in on:
        await _load_amounts(session, accruals, int(config["amount_outlier"]["days"]), history)
    if "shared_device" in on:
        await _load_device_uses(session, program_id, candidates, config, history)
    if accruals and "self_referral" in on:
        await _load_identities(session, program_id, accruals, history)
    return history


async def record_device_uses(session: AsyncSession, program_id: int, candidates: Sequence[Candidate]) -> None:
    rows = [
        {
            "program_id": program_id,
            "device_id": c.device,
            "member_id": c.member_id,
            "occurred_at": c.occurred_at,
        }
        for c in candidates
        if c.device is not None
    ]
    if rows:
        await session.execute(insert(FraudDevice), rows)


async def _claim_receipts(
    session: AsyncSession, program_id: int, candidates: Sequence[Candidate], history: History
) -> None:
    """Insert each new receipt with its first event; read who holds the ones already claimed."""
    first: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.receipt is not None:
            first.setdefault(candidate.receipt, candidate)
    if not first:
        return
    table = FraudReceipt.__table__
    claimed = await session.execute(
        insert_for(session, table).on_conflict_do_nothing().returning(table.c.receipt_id),
        [
            {
                "program_id": program_id,
                "receipt_id": receipt,
                "event_external_id": c.external_id,
                "member_id": c.member_id,
                "occurred_at": c.occurred_at,
            }
            for receipt, c in sorted(first.items())  # one lock order for every batch
        ],
    )
    taken = set(first) - set(claimed.scalars())
    for receipt in set(first) - taken:
        history.claim_receipt(receipt, first[receipt].external_id)
    if not taken:
        return
    rows = await session.execute(
        select(FraudReceipt.receipt_id, FraudReceipt.event_external_id).where(
            FraudReceipt.program_id == program_id, FraudReceipt.receipt_id.in_(sorted(taken))
        )
    )
    for receipt, holder in rows:
        history.claim_receipt(receipt, holder)


def _span(
    accruals: Sequence[Candidate], history: History, before: timedelta, after: timedelta
) -> tuple[datetime, datetime]:
    """From the first candidate's day start (or `before` earlier) to the last one's day end (or `after`)."""
    first = min(c.occurred_at for c in accruals)
    last = max(c.occurred_at for c in accruals)
    day_start = datetime.combine(history.day(first), datetime.min.time(), history.zone)
    day_end = datetime.combine(history.day(last) + timedelta(days=1), datetime.min.time(), history.zone)
    return min(first - before, day_start), max(last + after, day_end)


async def _load_earned(
    session: AsyncSession,
    program_id: int,
    accruals: Sequence[Candidate],
    config: FraudConfig,
    history: History,
) -> None:
    width = timedelta(minutes=config["velocity"]["windowMinutes"])
    lo, hi = _span(accruals, history, width, width)
    earning_types = select(EarningRule.event_type).where(EarningRule.program_id == program_id)
    rows = await session.execute(
        select(
            Event.member_id,
            Event.occurred_at,
            LedgerEntry.points,
            LedgerEntry.status,
            Event.properties["cashierId"].label("cashier"),
            not_refunded(Event).label("live"),
        )
        .join(
            LedgerEntry, and_(LedgerEntry.event_id == Event.id, LedgerEntry.kind == EntryKind.ACCRUAL.value)
        )
        .where(
            Event.member_id.in_(sorted({c.member_id for c in accruals})),
            Event.type.in_(earning_types.scalar_subquery()),
            Event.occurred_at >= lo,
            Event.occurred_at < hi,
        )
    )
    for member_id, occurred_at, points, status, cashier_value, live in rows:
        cashier = Candidate(
            member_id, "", "", occurred_at, None, points, {"cashierId": cashier_value}
        ).cashier
        history.add_earned(
            member_id, Earned(occurred_at, points, VERDICT_OF_STATUS[status], cashier, refunded=not live)
        )


async def _load_amounts(
    session: AsyncSession, accruals: Sequence[Candidate], days: int, history: History
) -> None:
    with_amounts = [c for c in accruals if c.amount is not None]
    if not with_amounts:
        return
    first = min(c.occurred_at for c in with_amounts)
    last = max(c.occurred_at for c in with_amounts)
    width = timedelta(days=days)
    accepted = (
        Event.member_id.in_(sorted({c.member_id for c in with_amounts})),
        Event.type.in_(sorted({c.type for c in with_amounts})),
        Event.status == EventStatus.ACCEPTED.value,
        Event.amount.is_not(None),
        not_refunded(Event),
    )
    # [last - width, first) lies in every candidate's window [t - width, t): summed in SQL.
    # The edges before and after it differ per candidate: read row by row.
    common = (last - width, first) if last - width < first else None
    if common is not None:
        units = cast(Event.amount, Float)  # the stored integer units; squares overflow BIGINT
        sums = await session.execute(
            select(Event.member_id, Event.type, func.count(), func.sum(units), func.sum(units * units))
            .where(*accepted, Event.occurred_at >= common[0], Event.occurred_at < common[1])
            .group_by(Event.member_id, Event.type)
        )
        for member_id, event_type, n, total, squares in sums:
            history.add_amount_sums(member_id, event_type, n, total / AMOUNT_UNITS, squares / AMOUNT_UNITS**2)
    edges = (
        Event.occurred_at >= first - width
        if common is None
        else or_(
            and_(Event.occurred_at >= first - width, Event.occurred_at < common[0]),
            Event.occurred_at >= common[1],
        )
    )
    rows = await session.execute(
        select(Event.member_id, Event.type, Event.occurred_at, Event.amount).where(
            *accepted, edges, Event.occurred_at < last
        )
    )
    for member_id, event_type, occurred_at, amount in rows:
        if amount is not None:
            history.add_amount(member_id, event_type, occurred_at, amount)


async def _load_device_uses(
    session: AsyncSession,
    program_id: int,
    candidates: Sequence[Candidate],
    config: FraudConfig,
    history: History,
) -> None:
    on_devices = [c for c in candidates if c.device is not None]
    if not on_devices:
        return
    devices = sorted({c.device for c in on_devices if c.device is not None})
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            _LOCK_DEVICES, {"keys": [f"loyalty:fraud:device:{program_id}:{d}" for d in devices]}
        )
    width = timedelta(hours=config["shared_device"]["hours"])
    rows = await session.execute(
        select(FraudDevice.device_id, FraudDevice.occurred_at, FraudDevice.member_id).where(
            FraudDevice.program_id == program_id,
            FraudDevice.device_id.in_(devices),
            FraudDevice.occurred_at > min(c.occurred_at for c in on_devices) - width,
            FraudDevice.occurred_at < max(c.occurred_at for c in on_devices) + width,
        )
    )
    for device, occurred_at, member_id in rows:
        history.add_device_use(device, occurred_at, member_id)


#: One statement takes every device's lock, in key order (one lock order for every batch).
_LOCK_DEVICES = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(key, 0))) "
    "FROM (SELECT key FROM unnest(CAST(:keys AS text[])) AS key ORDER BY key) AS ordered"
)


async def _load_identities(
    session: AsyncSession, program_id: int, accruals: Sequence[Candidate], history: History
) -> None:
    referrals = [c for c in accruals if c.referee is not None]
    if not referrals:
        return
    referees = sorted({c.referee for c in referrals if c.referee is not None})
    members = await session.execute(
        select(Member.id, Member.external_id, Member.attributes).where(
            Member.program_id == program_id,
            (Member.id.in_(sorted({c.member_id for c in referrals}))) | (Member.external_id.in_(referees)),
        )
    )
    found: dict[int, tuple[str, dict[str, Any]]] = {
        member_id: (external_id, attributes or {}) for member_id, external_id, attributes in members
    }
    devices: dict[int, set[str]] = {member_id: set() for member_id in found}
    rows = await session.execute(
        select(FraudDevice.member_id, FraudDevice.device_id)
        .where(FraudDevice.member_id.in_(sorted(found)))
        .group_by(FraudDevice.member_id, FraudDevice.device_id)
    )
    for member_id, device in rows:
        devices[member_id].add(device)
    for member_id, (external_id, attributes) in found.items():
        history.member_ids[external_id] = member_id
        history.identities[member_id] = identity_of(external_id, attributes, devices[member_id])
