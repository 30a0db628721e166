"""The points ledger: append-only entries and the member balances they add up to.

Invariants (tested as a state machine in tests/test_ledger_properties.py):
- members.points_balance == sum(points of POSTED entries), and never below zero;
- members.pending_points == sum(points of PENDING_REVIEW entries);
- an idempotency key names one request: replaying it returns the first entry,
  reusing it for different content is a CONFLICT.
Balances move with a conditional UPDATE (`... WHERE points_balance >= n`), so
concurrent redemptions serialise on the member row and cannot overdraw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import ChangeListener, MembersChanged, NoListener
from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.enums import AccrualStatus, EntryKind
from domain.errors import Conflict, DomainError, InvalidInput, NotFound
from domain.members.service import check_page_size, members_by_external_id
from domain.models import Event, LedgerEntry, Member
from domain.standings import mark_standings

MAX_REASON = 500
MAX_IDEMPOTENCY_KEY = 200
MAX_POINTS = 10**12
#: Ledger idempotency keys of reward redemptions (gamification/rewards) start with it.
REWARD_KEY_PREFIX = "reward:"
#: Idempotency keys the system writes itself: a client's key may not start with these.
RESERVED_KEY_PREFIXES = {
    "event:": "event accruals",
    "trigger:": "trigger bonuses",
    REWARD_KEY_PREFIX: "reward redemptions",
    "challenge:": "challenge bonuses",
    "experiment:": "experiment bonuses",
    "refund:": "refunds",
}
T = TypeVar("T")


@dataclass(frozen=True)
class LedgerPage:
    entries: list[LedgerEntry]
    has_next: bool


def request_hash(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


class LedgerService:
    def __init__(self, db: Database, clock: Clock, listener: ChangeListener | None = None) -> None:
        self.db = db
        self.clock = clock
        self.listener = listener or NoListener()

    async def _balance_moved(self, session: AsyncSession, program_id: int, member_id: int) -> None:
        change = MembersChanged(program_id, balances=frozenset({member_id}))
        await self.listener.members_changed(session, change, self.clock.now())

    async def redeem(
        self, program_id: int, member_external_id: str, points: int, reason: str, idempotency_key: str
    ) -> LedgerEntry:
        """Spend posted points; beyond the balance is BAD_USER_INPUT."""
        if not 0 < points <= MAX_POINTS:
            raise InvalidInput(f"points: must be a positive whole number of points, got {points}")
        _check_text(reason, idempotency_key)
        fingerprint = request_hash(EntryKind.REDEMPTION, member_external_id, points, reason)

        async def attempt(session: AsyncSession) -> LedgerEntry:
            member = (await members_by_external_id(session, program_id, [member_external_id])).get(
                member_external_id
            )
            if member is None:
                raise NotFound(f"memberExternalId: no member {member_external_id!r} in this program")
            return await self.spend(
                session, program_id, member.id, points, reason, idempotency_key, fingerprint
            )

        return await self._idempotent(program_id, idempotency_key, fingerprint, attempt)

    async def spend(
        self,
        session: AsyncSession,
        program_id: int,
        member_id: int,
        points: int,
        reason: str,
        idempotency_key: str,
        fingerprint: str,
    ) -> LedgerEntry:
        """Debit posted points inside the caller's transaction (a POSTED REDEMPTION entry, not flushed).

        Beyond the balance is BAD_USER_INPUT. For callers that spend points as part of
        a larger change (a reward redemption) under `once`.
        """
        await move_balance(session, member_id, -points, what="redemption")
        await self._balance_moved(session, program_id, member_id)
        return self._entry(
            session,
            program_id,
            member_id,
            -points,
            EntryKind.REDEMPTION,
            reason,
            idempotency_key,
            fingerprint,
        )

    async def reverse(self, program_id: int, entry_id: int, reason: str, idempotency_key: str) -> LedgerEntry:
        """A correction: a new POSTED entry with the opposite points of a POSTED entry."""
        _check_text(reason, idempotency_key)
        fingerprint = request_hash(EntryKind.REVERSAL, entry_id, reason)

        async def attempt(session: AsyncSession) -> LedgerEntry:
            # the row lock makes a racing reversal wait, then see this one and get CONFLICT
            original = await session.get(LedgerEntry, entry_id, with_for_update=True)
            if original is None or original.program_id != program_id:
                raise NotFound(f"id: no ledger entry {entry_id} in this program")
            if original.status != AccrualStatus.POSTED or original.kind == EntryKind.REVERSAL:
                raise InvalidInput(
                    f"id: entry {entry_id} is {original.status} {original.kind}; only posted "
                    "accruals, redemptions and adjustments can be reversed"
                )
            already = await session.execute(
                select(LedgerEntry.id).where(LedgerEntry.reverses_entry_id == entry_id)
            )
            if already.first() is not None:
                raise Conflict(f"id: entry {entry_id} has already been reversed")
            await move_balance(session, original.member_id, -original.points, what="reversal")
            await self._balance_moved(session, program_id, original.member_id)
            entry = self._entry(
                session,
                program_id,
                original.member_id,
                -original.points,
                EntryKind.REVERSAL,
                reason,
                idempotency_key,
                fingerprint,
            )
            entry.reverses_entry_id = original.id
            entry.event_id = original.event_id
            counts_at = await session.scalar(select(Event.occurred_at).where(Event.id == original.event_id))
            await mark_standings(
                session, program_id, [(original.member_id, counts_at or original.created_at)]
            )
            return entry

        return await self._idempotent(program_id, idempotency_key, fingerprint, attempt)

    async def page(self, member_id: int, first: int, after_id: int | None) -> LedgerPage:
        """A member's entries, newest first."""
        check_page_size(first)
        async with self.db.read() as session:
            query = select(LedgerEntry).where(LedgerEntry.member_id == member_id)
            if after_id is not None:
                query = query.where(LedgerEntry.id < after_id)
            rows = list(
                (await session.execute(query.order_by(LedgerEntry.id.desc()).limit(first + 1))).scalars()
            )
        return LedgerPage(rows[:first], len(rows) > first)

    def _entry(
        self,
        session: AsyncSession,
        program_id: int,
        member_id: int,
        points: int,
        kind: EntryKind,
        reason: str,
        idempotency_key: str,
        fingerprint: str,
    ) -> LedgerEntry:
        entry = LedgerEntry(
            program_id=program_id,
            member_id=member_id,
            points=points,
            status=AccrualStatus.POSTED.value,
            kind=kind.value,
            reason=reason,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            created_at=self.clock.now(),
        )
        session.add(entry)
        return entry

    async def _idempotent(
        self,
        program_id: int,
        key: str,
        fingerprint: str,
        attempt: Callable[[AsyncSession], Awaitable[LedgerEntry]],
    ) -> LedgerEntry:
        return await self.once(program_id, key, fingerprint, attempt, _the_entry)

    async def once(
        self,
        program_id: int,
        key: str,
        fingerprint: str,
        attempt: Callable[[AsyncSession], Awaitable[T]],
        replay: Callable[[AsyncSession, LedgerEntry], Awaitable[T]],
        *,
        shown_key: str | None = None,
    ) -> T:
        """Run `attempt` (one unit of work that writes a ledger entry under `key`) once per key.

        A replay, or a concurrent twin, gets `replay` of the entry already recorded
        under `key` (read in its own session). A twin loses either the insert race on
        the key's unique index or, when the balance covers the request once but not
        twice, the balance check. Either way it looks the key up again before
        reporting anything. Reusing the key for a different `fingerprint` is CONFLICT.
        Errors name `shown_key` (the caller's key, when `key` is derived from it).
        """
        shown = key if shown_key is None else shown_key
        for _ in range(2):
            existing = await self._replay(program_id, key, fingerprint, replay, shown)
            if existing is not None:
                return existing
            try:
                async with self.db.unit_of_work() as uow:
                    result = await attempt(uow.session)
                    await uow.session.flush()
                return result
            except IntegrityError:
                continue  # the key was taken by a concurrent request: look again
            except DomainError:
                winner = await self._replay(program_id, key, fingerprint, replay, shown)
                if winner is not None:
                    return winner
                raise
        raise Conflict(f"idempotencyKey: {shown!r} is being used by a concurrent request; retry")

    async def _replay(
        self,
        program_id: int,
        key: str,
        fingerprint: str,
        replay: Callable[[AsyncSession, LedgerEntry], Awaitable[T]],
        shown_key: str,
    ) -> T | None:
        """What was already recorded under `key`, if anything; CONFLICT when it was for other content."""
        async with self.db.read() as session:
            existing = await _entry_by_key(session, program_id, key)
            if existing is None:
                return None
            if existing.request_hash != fingerprint:
                raise Conflict(f"idempotencyKey: {shown_key!r} was already used for a different request")
            return await replay(session, existing)


@dataclass(frozen=True)
class Bonus:
    """Points a trigger grants a member; `idempotency_key` makes a replay a no-op."""

    member_id: int
    points: int
    reason: str
    idempotency_key: str


async def post_bonuses(
    session: AsyncSession, program_id: int, bonuses: Sequence[Bonus], now: datetime
) -> list[Bonus]:
    """Post bonuses as POSTED ADJUSTMENT entries inside the caller's transaction.

    An idempotency key already in the ledger is skipped (`ON CONFLICT DO NOTHING`),
    so replaying a bonus never pays twice. Returns the bonuses actually posted; the
    caller tells the segment engine that those members' balances moved.
    """
    wanted = [b for b in bonuses if b.points > 0]
    if not wanted:
        return []
    table = LedgerEntry.__table__
    statement = insert_for(session, table).on_conflict_do_nothing().returning(table.c.idempotency_key)
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
    posted_keys = set((await session.scalars(statement, rows)).all())
    posted = [b for b in wanted if b.idempotency_key in posted_keys]
    for bonus in sorted(posted, key=lambda b: b.member_id):  # member-id order: see lock_members
        await move_balance(session, bonus.member_id, bonus.points, what="bonus")
    await mark_standings(session, program_id, ((b.member_id, now) for b in posted))
    return posted


async def move_balance(session: AsyncSession, member_id: int, delta: int, *, what: str) -> None:
    """Add `delta` to the member's posted balance; refuse to go below zero."""
    statement = (
        update(Member).where(Member.id == member_id).values(points_balance=Member.points_balance + delta)
    )
    if delta < 0:
        statement = statement.where(Member.points_balance >= -delta)
    result = await session.execute(statement.execution_options(synchronize_session=False))
    assert isinstance(result, CursorResult)
    if result.rowcount == 0:
        balance = (
            await session.execute(select(Member.points_balance).where(Member.id == member_id))
        ).scalar()
        raise InvalidInput(f"points: the {what} of {-delta} exceeds the balance of {balance}")


async def _the_entry(_session: AsyncSession, entry: LedgerEntry) -> LedgerEntry:
    return entry


async def _entry_by_key(session: AsyncSession, program_id: int, key: str) -> LedgerEntry | None:
    result = await session.execute(
        select(LedgerEntry).where(LedgerEntry.program_id == program_id, LedgerEntry.idempotency_key == key)
    )
    return result.scalar_one_or_none()


def _check_text(reason: str, idempotency_key: str) -> None:
    if not reason.strip():
        raise InvalidInput("reason: must not be empty")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"reason: longer than {MAX_REASON} characters")
    if not idempotency_key.strip():
        raise InvalidInput("idempotencyKey: must not be empty")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(f"idempotencyKey: longer than {MAX_IDEMPOTENCY_KEY} characters")
    for prefix, owner in RESERVED_KEY_PREFIXES.items():
        if idempotency_key.startswith(prefix):
            raise InvalidInput(f"idempotencyKey: the prefix {prefix!r} is reserved for {owner}")
