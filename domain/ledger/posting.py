"""Posting: the one place that turns approved points into ledger rows and everything that follows.

An event accrual (posted, held or rejected by the audit), the approval or rejection of a held
one, a refund, a bonus (triggers, challenges, experiments), a redemption and a reversal all
go through here, inside the caller's unit of work. Posting writes:
- the ledger rows (append-only; idempotency keys make replays no-ops where the caller asks);
- the cached balances (`points_balance`, `pending_points`), in member-id order;
- the daily aggregate buckets of accepted events (a refund rebuilds its event's bucket);
- the leaderboard feed (`mark_standings`);
- the expiry lots (`domain.ledger.lots`): every POSTED credit while the program has
  `points_expiry_days` forms a lot, every debit spends lots (soonest expiry first; a reversal
  its own lot first), and `post_expiries` turns what is left of due lots into EXPIRY entries;
and collects one `MembersChanged` per call for the message bus: the segment engine
re-evaluates those members before the commit (and challenges count accepted events).

Batch calls (`post_accruals`, `post_bonuses`) are a fixed number of statements whatever their
size. Single-entry calls (refunds, redemptions, reversals) move the balance with a
conditional UPDATE, so they never overdraw under concurrency (BAD_USER_INPUT instead).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import MembersChanged
from domain.db.dialect import insert_for
from domain.db.engine import collect
from domain.enums import AccrualStatus, EntryKind
from domain.events.validation import ValidEvent
from domain.ledger.lots import Credit, add_lots, expiry_days, spend_lots, take_due_lots
from domain.ledger.rows import (
    REFUND_KEY_PREFIX,
    Occurrence,
    add_to_aggregates,
    add_to_balances,
    add_to_locked_balances,
    day_of,
    insert_ledger_entries,
    move_balance,
    rebuild_bucket,
    utc,
)
from domain.models import Event, LedgerEntry
from domain.standings import mark_standings

MAX_REASON = 500


def request_hash(*parts: object) -> str:
    """The fingerprint of a request stored with its entry: the same key for other content is CONFLICT."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True)
class Accrual:
    """An event's accrual as the audit decided it: POSTED (the event is accepted), PENDING_REVIEW or
    REJECTED. An accepted event that earns 0 points writes no entry but still counts."""

    member_id: int
    event: ValidEvent
    event_id: int
    points: int
    status: AccrualStatus
    #: The promotions in `points` (docs/promotions.md): (key, points) in the order they applied.
    promotions: tuple[tuple[str, int], ...] = ()

    @property
    def reason(self) -> str:
        """`purchase e1`, plus ` + promotions: weekend-double +10` when promotions applied."""
        text = f"{self.event.type} {self.event.external_id}"
        if self.promotions:
            text += " + promotions: " + ", ".join(f"{key} +{points}" for key, points in self.promotions)
        return text[:MAX_REASON]


async def post_accruals(
    session: AsyncSession, program_id: int, accruals: Sequence[Accrual], now: datetime
) -> dict[int, int]:
    """The batch's event accruals: entries, balances, buckets and feed of the accepted ones.
    Returns the entry id of each event that earned points, by event id."""
    entries: list[dict[str, object]] = []
    posted: dict[int, int] = defaultdict(int)
    pending: dict[int, int] = defaultdict(int)
    accepted: list[tuple[int, ValidEvent]] = []
    for accrual in accruals:
        event = accrual.event
        if accrual.status == AccrualStatus.POSTED:
            accepted.append((accrual.member_id, event))
        if accrual.points == 0:
            continue
        entries.append(
            {
                "program_id": program_id,
                "member_id": accrual.member_id,
                "points": accrual.points,
                "status": accrual.status.value,
                "kind": EntryKind.ACCRUAL.value,
                "reason": accrual.reason,
                "event_id": accrual.event_id,
                "idempotency_key": f"event:{event.external_id}",
                "request_hash": request_hash(EntryKind.ACCRUAL, event.content_hash),
                "created_at": now,
            }
        )
        if accrual.status == AccrualStatus.POSTED:
            posted[accrual.member_id] += accrual.points
        elif accrual.status == AccrualStatus.PENDING_REVIEW:
            pending[accrual.member_id] += accrual.points
    ids = await insert_ledger_entries(session, entries)
    await _mark_promotions(session, [(ids[a.event_id], a.promotions) for a in accruals if a.promotions])
    await add_to_balances(session, posted, pending)
    days = await expiry_days(session, program_id) if posted else None
    if days is not None:
        credits = [
            Credit(a.member_id, ids[a.event_id], a.points, a.event.occurred_at)
            for a in accruals
            if a.status == AccrualStatus.POSTED and a.points > 0
        ]
        await add_lots(session, program_id, credits, days)
    await _count_accepted(session, program_id, accepted, set(posted), now)
    return ids


async def _mark_promotions(
    session: AsyncSession, promoted: Sequence[tuple[int, tuple[tuple[str, int], ...]]]
) -> None:
    """The `promotions` column of the entries promotions added to (only those: one executemany)."""
    if not promoted:
        return
    table = cast(Table, LedgerEntry.__table__)
    await session.execute(
        update(table).where(table.c.id == bindparam("entry_id")).values(promotions=bindparam("applied")),
        [
            {"entry_id": entry_id, "applied": [{"key": key, "points": points} for key, points in applied]}
            for entry_id, applied in promoted
        ],
    )


async def approve_held(
    session: AsyncSession, program_id: int, entry: LedgerEntry, event: Event, now: datetime
) -> None:
    """A reviewer approved a PENDING_REVIEW accrual: it posts as of now (the entry row is locked).
    Its lot, if the program has an expiry, is dated by the event's occurredAt, like any accrual."""
    entry.status = AccrualStatus.POSTED.value
    await session.flush()
    member_id = entry.member_id
    await add_to_balances(session, {member_id: entry.points}, {member_id: -entry.points})
    days = await expiry_days(session, program_id)
    if days is not None:
        await add_lots(
            session, program_id, [Credit(member_id, entry.id, entry.points, event.occurred_at)], days
        )
    await _count_accepted(session, program_id, [(member_id, event)], {member_id}, now)


async def release_held(session: AsyncSession, entry: LedgerEntry) -> None:
    """A reviewer rejected a PENDING_REVIEW accrual: its points leave `pending_points`, nothing else."""
    entry.status = AccrualStatus.REJECTED.value
    await session.flush()
    await add_to_balances(session, {}, {entry.member_id: -entry.points})


async def _count_accepted(
    session: AsyncSession,
    program_id: int,
    accepted: Sequence[tuple[int, Occurrence]],
    balances: set[int],
    now: datetime,
) -> None:
    """Accepted events count: day buckets, the leaderboard feed, and the segment engine's change."""
    await add_to_aggregates(session, program_id, accepted)
    await mark_standings(session, program_id, ((m, e.occurred_at) for m, e in accepted))
    types: dict[int, set[str]] = defaultdict(set)
    occurred: dict[tuple[int, str], set[datetime]] = defaultdict(set)
    for member_id, event in accepted:
        types[member_id].add(event.type)
        occurred[(member_id, event.type)].add(event.occurred_at)
    if types or balances:
        collect(
            session,
            MembersChanged(
                program_id,
                {m: frozenset(t) for m, t in types.items()},
                {key: frozenset(times) for key, times in occurred.items()},
                balances=frozenset(balances),
                at=now,
            ),
        )


@dataclass(frozen=True)
class Refund:
    """A checked refund: the POSTED accrual it reverses and the event that accrual belongs to."""

    member_id: int
    points: int
    accrual_id: int
    event_id: int
    event_type: str
    occurred_at: datetime
    #: The refunded event's externalId: the reversal's key is `refund:<it>`.
    refunded: str
    reason: str


async def post_refund(session: AsyncSession, program_id: int, refund: Refund, now: datetime) -> None:
    """A REVERSAL of the refunded accrual; its event leaves its day bucket and its board period.
    The points come out of the accrual's own lot first."""
    await move_balance(session, refund.member_id, -refund.points, what="refund")
    await spend_lots(session, refund.member_id, refund.points, own_entry_id=refund.accrual_id)
    await session.execute(
        insert(LedgerEntry).values(
            program_id=program_id,
            member_id=refund.member_id,
            points=-refund.points,
            status=AccrualStatus.POSTED.value,
            kind=EntryKind.REVERSAL.value,
            reason=refund.reason[:MAX_REASON],
            event_id=refund.event_id,
            reverses_entry_id=refund.accrual_id,
            idempotency_key=f"{REFUND_KEY_PREFIX}{refund.refunded}"[:200],
            request_hash=request_hash(EntryKind.REVERSAL, refund.accrual_id, refund.reason[:MAX_REASON]),
            created_at=now,
        )
    )
    occurred_at = utc(refund.occurred_at)
    await rebuild_bucket(session, program_id, refund.member_id, refund.event_type, day_of(occurred_at))
    await mark_standings(session, program_id, [(refund.member_id, occurred_at)])
    collect(
        session,
        MembersChanged(
            program_id,
            {refund.member_id: frozenset({refund.event_type})},
            {(refund.member_id, refund.event_type): frozenset({occurred_at})},
            balances=frozenset({refund.member_id}),
            at=now,
        ),
    )


@dataclass(frozen=True)
class Bonus:
    """Points the system grants (a trigger, a challenge, an experiment); its key makes a replay a no-op."""

    member_id: int
    points: int
    reason: str
    idempotency_key: str


async def post_bonuses(
    session: AsyncSession, program_id: int, bonuses: Sequence[Bonus], now: datetime
) -> list[Bonus]:
    """POSTED ADJUSTMENT entries; a key already in the ledger is skipped (`ON CONFLICT DO NOTHING`),
    so replaying a bonus never pays twice. Returns the bonuses actually posted."""
    wanted = [b for b in bonuses if b.points > 0]
    if not wanted:
        return []
    table = LedgerEntry.__table__
    statement = (
        insert_for(session, table).on_conflict_do_nothing().returning(table.c.idempotency_key, table.c.id)
    )
    rows = [
        {
            "program_id": program_id,
            "member_id": b.member_id,
            "points": b.points,
            "status": AccrualStatus.POSTED.value,
            "kind": EntryKind.ADJUSTMENT.value,
            "reason": b.reason[:MAX_REASON],
            "idempotency_key": b.idempotency_key,
            "request_hash": request_hash(EntryKind.ADJUSTMENT, b.member_id, b.points, b.reason),
            "created_at": now,
        }
        for b in wanted
    ]
    result = await session.execute(statement, rows)
    posted_keys: dict[str, int] = {key: entry_id for key, entry_id in result}  # noqa: C416 - Rows
    posted = [b for b in wanted if b.idempotency_key in posted_keys]
    credit: dict[int, int] = defaultdict(int)
    for bonus in posted:
        credit[bonus.member_id] += bonus.points
    await add_to_balances(session, credit, {})
    days = await expiry_days(session, program_id) if posted else None
    if days is not None:
        lots = [Credit(b.member_id, posted_keys[b.idempotency_key], b.points, now) for b in posted]
        await add_lots(session, program_id, lots, days)
    await mark_standings(session, program_id, ((b.member_id, now) for b in posted))
    if credit:
        collect(session, MembersChanged(program_id, balances=frozenset(credit), at=now))
    return posted


async def post_entry(
    session: AsyncSession,
    program_id: int,
    member_id: int,
    points: int,
    kind: EntryKind,
    reason: str,
    idempotency_key: str,
    fingerprint: str,
    now: datetime,
    *,
    reverses: LedgerEntry | None = None,
    actor: str | None = None,
) -> LedgerEntry:
    """One POSTED entry of an admin or member request (a redemption, an adjustment, a reversal).

    A debit beyond the balance is BAD_USER_INPUT; a debit spends lots (a reversal its original's
    lot first), a credit forms a lot dated now when the program has an expiry. A reversal takes
    the event of the entry it reverses, and its standings count when that event occurred.
    `actor` is who asked: an admin's e-mail or "key:<name>", None for a member or the system.
    """
    what = "reversal" if kind == EntryKind.REVERSAL else kind.value.lower()
    await move_balance(session, member_id, points, what=what)
    if points < 0:
        own = reverses.id if reverses is not None else None
        await spend_lots(session, member_id, -points, own_entry_id=own)
    entry = LedgerEntry(
        program_id=program_id,
        member_id=member_id,
        points=points,
        status=AccrualStatus.POSTED.value,
        kind=kind.value,
        reason=reason,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        created_at=now,
        actor=actor,
    )
    session.add(entry)
    collect(session, MembersChanged(program_id, balances=frozenset({member_id}), at=now))
    if reverses is not None:
        entry.reverses_entry_id = reverses.id
        entry.event_id = reverses.event_id
        counts_at = await session.scalar(select(Event.occurred_at).where(Event.id == reverses.event_id))
        await mark_standings(session, program_id, [(member_id, counts_at or reverses.created_at)])
    if points > 0:
        days = await expiry_days(session, program_id)
        if days is not None:
            await session.flush()  # the lot names the entry: insert it (complete) first
            await add_lots(session, program_id, [Credit(member_id, entry.id, points, now)], days)
    return entry


EXPIRY_KEY_PREFIX = "expiry:"
EXPIRY_REASON = "points expired"


async def post_expiries(
    session: AsyncSession, program_id: int, member_ids: Sequence[int], now: datetime
) -> int:
    """EXPIRY entries for what is left of the due lots of members the caller locked (`lots.due_members`).

    One POSTED entry per lot (key `expiry:<lot id>`, so a lot never expires twice), its lot
    emptied, balances moved down in member-id order. No standings mark: expiry never lowers a
    leaderboard (boards do not count EXPIRY). Returns how many lots expired.
    """
    lots = await take_due_lots(session, member_ids, now)
    if not lots:
        return 0
    entries = [
        {
            "program_id": program_id,
            "member_id": lot.member_id,
            "points": -lot.remaining,
            "status": AccrualStatus.POSTED.value,
            "kind": EntryKind.EXPIRY.value,
            "reason": EXPIRY_REASON,
            "event_id": None,
            "idempotency_key": f"{EXPIRY_KEY_PREFIX}{lot.id}",
            "request_hash": request_hash(EntryKind.EXPIRY, lot.id),
            "created_at": now,
        }
        for lot in lots
    ]
    await insert_ledger_entries(session, entries)
    debit: dict[int, int] = defaultdict(int)
    for lot in lots:
        debit[lot.member_id] -= lot.remaining
    await add_to_locked_balances(session, debit)
    collect(session, MembersChanged(program_id, balances=frozenset(debit), at=now))
    return len(lots)
