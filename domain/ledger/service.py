"""The points ledger: append-only entries and the member balances they add up to.

Invariants (tested as a state machine in tests/test_ledger_properties.py):
- members.points_balance == sum(points of POSTED entries), and never below zero;
- members.pending_points == sum(points of PENDING_REVIEW entries);
- an idempotency key names one request: replaying it returns the first entry,
  reusing it for different content is a CONFLICT.
Entries are written by `domain.ledger.posting` (balances move with a conditional
UPDATE, `... WHERE points_balance >= n`, so concurrent redemptions serialise on the
member row and cannot overdraw); this service adds idempotency and the reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth.principal import Principal, PrincipalKind
from domain.auth.stepup import require_step_up
from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork
from domain.enums import AccrualStatus, EntryKind
from domain.errors import Conflict, DomainError, InvalidInput, NotFound
from domain.governance.audit_log import record_change
from domain.ledger.posting import EXPIRY_KEY_PREFIX, MAX_REASON, post_entry, request_hash
from domain.members.service import check_page_size, members_by_external_id
from domain.models import LedgerEntry, Member, PointsLot, Program
from domain.programs.service import ProgramSettings

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
    EXPIRY_KEY_PREFIX: "expiries",
}
#: Member.expiringPoints looks at most this many days ahead (about 100 years).
MAX_WITHIN_DAYS = 36_500
T = TypeVar("T")


@dataclass(frozen=True)
class ExpiringPoints:
    """What is left of a member's lots that expire at one instant."""

    points: int
    expires_at: datetime


@dataclass(frozen=True)
class LedgerPage:
    entries: list[LedgerEntry]
    has_next: bool


class LedgerService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def redeem(
        self,
        program_id: int,
        member_external_id: str,
        points: int,
        reason: str,
        idempotency_key: str,
        actor: str | None = None,
    ) -> LedgerEntry:
        """Spend posted points (soonest-expiring lots first); beyond the balance is BAD_USER_INPUT."""
        if not 0 < points <= MAX_POINTS:
            raise InvalidInput(f"points: must be a positive whole number of points, got {points}")
        _check_text(reason, idempotency_key)
        fingerprint = request_hash(EntryKind.REDEMPTION, member_external_id, points, reason)

        async def attempt(session: AsyncSession) -> LedgerEntry:
            member = await _member(session, program_id, member_external_id)
            return await self.spend(
                session, program_id, member.id, points, reason, idempotency_key, fingerprint, actor=actor
            )

        return await self._idempotent(program_id, idempotency_key, fingerprint, attempt)

    async def adjust(
        self,
        program_id: int,
        member_external_id: str,
        points: int,
        reason: str,
        idempotency_key: str,
        principal: Principal,
    ) -> LedgerEntry:
        """A manual ADJUSTMENT: a goodwill credit (+, forms a lot) or a correction (-, spends lots).

        Below a zero balance is BAD_USER_INPUT. An admin's adjustment of more than the program's
        threshold (default 1,000 points, absolute) needs a TOTP step-up; API keys holding
        points:adjust do not (they have no TOTP). Idempotent like `redeem`.
        """
        if points == 0 or abs(points) > MAX_POINTS:
            raise InvalidInput(
                f"points: must be a non-zero whole number of points up to {MAX_POINTS}, got {points}"
            )
        _check_text(reason, idempotency_key)
        actor = principal.operator
        if principal.kind == PrincipalKind.ADMIN:
            program = await self._program(program_id)
            threshold = ProgramSettings.from_json(program.settings).adjustment_step_up_points
            if abs(points) > threshold:
                require_step_up(principal, self.clock.now(), f"an adjustment of more than {threshold} points")
        fingerprint = request_hash(EntryKind.ADJUSTMENT, member_external_id, points, reason)

        async def attempt(session: AsyncSession) -> LedgerEntry:
            member = await _member(session, program_id, member_external_id)
            entry = await post_entry(
                session,
                program_id,
                member.id,
                points,
                EntryKind.ADJUSTMENT,
                reason,
                idempotency_key,
                fingerprint,
                self.clock.now(),
                actor=actor,
            )
            await _audit(session, entry, member.external_id, "adjustPoints", actor)
            return entry

        return await self._idempotent(program_id, idempotency_key, fingerprint, attempt)

    async def expiring(self, member_ids: Sequence[int], within_days: int) -> dict[int, list[ExpiringPoints]]:
        """Each member's unexpired lots expiring within the days, summed per instant, soonest first."""
        check_within_days(within_days)
        now = self.clock.now()
        found: dict[int, list[ExpiringPoints]] = {m: [] for m in member_ids}
        if not member_ids:
            return found
        async with self.db.read() as session:
            rows = await session.execute(
                select(PointsLot.member_id, PointsLot.expires_at, func.sum(PointsLot.remaining))
                .where(
                    PointsLot.member_id.in_(sorted(set(member_ids))),
                    PointsLot.remaining > 0,
                    PointsLot.expires_at > now,
                    PointsLot.expires_at <= now + timedelta(days=within_days),
                )
                .group_by(PointsLot.member_id, PointsLot.expires_at)
                .order_by(PointsLot.member_id, PointsLot.expires_at)
            )
            for member_id, expires_at, points in rows:
                found[member_id].append(ExpiringPoints(int(points), expires_at))
        return found

    async def _program(self, program_id: int) -> Program:
        async with self.db.read() as session:
            program = await session.get(Program, program_id)
        if program is None:
            raise NotFound(f"program {program_id} does not exist")
        return program

    async def spend(
        self,
        session: AsyncSession,
        program_id: int,
        member_id: int,
        points: int,
        reason: str,
        idempotency_key: str,
        fingerprint: str,
        *,
        actor: str | None = None,
    ) -> LedgerEntry:
        """Debit posted points inside the caller's transaction (a POSTED REDEMPTION entry, not flushed).

        Beyond the balance is BAD_USER_INPUT. For callers that spend points as part of
        a larger change (a reward redemption) under `once`.
        """
        return await post_entry(
            session,
            program_id,
            member_id,
            -points,
            EntryKind.REDEMPTION,
            reason,
            idempotency_key,
            fingerprint,
            self.clock.now(),
            actor=actor,
        )

    async def reverse(
        self, program_id: int, entry_id: int, reason: str, idempotency_key: str, *, actor: str
    ) -> LedgerEntry:
        """A correction: a new POSTED entry with the opposite points of a POSTED entry.

        Reversing a credit takes its own lot first; reversing a debit (a redemption, an expiry)
        credits the points back, as a new lot dated now when the program has an expiry."""
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
            entry = await post_entry(
                session,
                program_id,
                original.member_id,
                -original.points,
                EntryKind.REVERSAL,
                reason,
                idempotency_key,
                fingerprint,
                self.clock.now(),
                reverses=original,
                actor=actor,
            )
            external_id = await session.scalar(
                select(Member.external_id).where(Member.id == original.member_id)
            )
            await _audit(session, entry, str(external_id), "reverseLedgerEntry", actor)
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


async def _audit(
    session: AsyncSession, entry: LedgerEntry, member_external_id: str, action: str, actor: str
) -> None:
    """The audit log's record of a manual entry: the member's balance before, the entry and the
    balance after."""
    await session.flush()
    balance = int(
        await session.scalar(select(Member.points_balance).where(Member.id == entry.member_id)) or 0
    )
    await record_change(
        UnitOfWork.of(session),
        program_id=entry.program_id,
        actor=actor,
        action=action,
        at=entry.created_at,
        target=member_external_id,
        before={"balance": balance - entry.points},
        after={
            "entryId": str(entry.id),
            "kind": entry.kind,
            "points": entry.points,
            "reason": entry.reason,
            "reversesEntryId": None if entry.reverses_entry_id is None else str(entry.reverses_entry_id),
            "balance": balance,
        },
    )


async def _the_entry(_session: AsyncSession, entry: LedgerEntry) -> LedgerEntry:
    return entry


async def _entry_by_key(session: AsyncSession, program_id: int, key: str) -> LedgerEntry | None:
    result = await session.execute(
        select(LedgerEntry).where(LedgerEntry.program_id == program_id, LedgerEntry.idempotency_key == key)
    )
    return result.scalar_one_or_none()


def check_within_days(within_days: int) -> None:
    if not 1 <= within_days <= MAX_WITHIN_DAYS:
        raise InvalidInput(f"withinDays: must be between 1 and {MAX_WITHIN_DAYS}, got {within_days}")


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


async def _member(session: AsyncSession, program_id: int, external_id: str) -> Member:
    """The member a manual entry is for (NOT_FOUND naming memberExternalId when there is none)."""
    member = (await members_by_external_id(session, program_id, [external_id])).get(external_id)
    if member is None:
        raise NotFound(f"memberExternalId: no member {external_id!r} in this program")
    return member
