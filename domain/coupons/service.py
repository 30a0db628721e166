"""The coupons service: pools and their codes (admins), what a member holds, the till's validate
and redeem. One unit of work per operation (docs/promotions.md, "Coupons")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.coupons.codes import generate_codes, import_codes
from domain.coupons.imports import RejectedLine, parse_codes
from domain.coupons.patterns import check_pattern, normalize
from domain.coupons.pools import PoolDraft, audited_pool, validate_pool
from domain.coupons.reads import CouponView, PoolCounts, coupon_view, pool_counts, recent_coupons
from domain.coupons.redemption import RedeemRequest, code_hash, refusal
from domain.coupons.status import CouponStatus
from domain.db.engine import Database, UnitOfWork
from domain.enums import EventStatus
from domain.errors import Conflict, CouponRefused, InvalidInput, NotFound
from domain.events.service import EventService
from domain.events.system import COUPON_REDEEMED
from domain.events.validation import EventDraft
from domain.governance.audit_log import record_change
from domain.members.service import lock_members, members_by_external_id
from domain.models import CouponCode, CouponPool, Event, Member
from domain.programs.service import validate_key


@dataclass(frozen=True)
class PoolView:
    pool: CouponPool
    counts: PoolCounts


@dataclass(frozen=True)
class ImportReport:
    pool: PoolView
    imported: int
    rejected: list[RejectedLine]


@dataclass(frozen=True)
class Validation:
    """The till's read-only answer: valid, or the refusal's code and message."""

    valid: bool
    reason: str | None
    message: str | None
    #: The code, when it was issued to the member asking (never another member's)
    coupon: CouponView | None


@dataclass(frozen=True)
class Redemption:
    coupon: CouponView
    #: REDEEMED, or HELD_FOR_REVIEW when the fraud audit held its event (the code is used all the same)
    status: EventStatus
    event_external_id: str
    #: The answer to a retry of an earlier request with the same externalId
    replayed: bool


class CouponService:
    def __init__(self, db: Database, clock: Clock, events: EventService) -> None:
        self.db = db
        self.clock = clock
        #: Records each redemption's `coupon_redeemed` event through the accrual pipeline (fraud audit)
        self.events = events

    # ---------- pools (admins) ----------

    async def set_pool(self, program_id: int, draft: PoolDraft, *, actor: str) -> PoolView:
        """Create or replace a pool's definition by key; codes issued before keep their expiry."""
        draft = validate_pool(draft)
        now = self.clock.now()
        try:
            async with self.db.unit_of_work() as uow:
                pool = await _find(uow.session, program_id, draft.key, for_update=True)
                before = None if pool is None else audited_pool(pool)
                if pool is None:
                    pool = CouponPool(program_id=program_id, key=draft.key, created_at=now)
                    uow.session.add(pool)
                pool.name = draft.name
                pool.description = draft.description
                pool.discount_kind = draft.discount_kind
                pool.discount_value = draft.discount_value
                pool.expires_at = draft.expires_at
                pool.valid_days = draft.valid_days
                pool.updated_at = now
                await uow.session.flush()
                await uow.session.refresh(pool)  # the value as stored (an amount is kept to 4 decimals)
                await self._audit(uow, pool, actor, "setCouponPool", before, audited_pool(pool))
                return await _view(uow.session, pool)
        except IntegrityError:
            raise Conflict(
                f"key: coupon pool {draft.key!r} was created by a concurrent request; retry"
            ) from None

    async def generate(
        self, program_id: int, pool_key: str, pattern: str, count: int, *, actor: str
    ) -> PoolView:
        """`count` new codes of the pattern (`#` a digit, `?` a letter), unique in the program."""
        pattern = check_pattern(pattern, count)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            pool = await _get(uow.session, program_id, pool_key)
            await generate_codes(uow.session, pool, pattern, count, now)
            await self._audit(uow, pool, actor, "generateCoupons", None, {"pattern": pattern, "count": count})
            return await _view(uow.session, pool)

    async def import_codes(self, program_id: int, pool_key: str, csv: str, *, actor: str) -> ImportReport:
        """Store each good line's code; each bad line is reported (its line number and why)."""
        now = self.clock.now()
        good, bad = parse_codes(csv, now)
        async with self.db.unit_of_work() as uow:
            pool = await _get(uow.session, program_id, pool_key)
            imported, taken = await import_codes(uow.session, pool, good, now)
            rejected = sorted(bad + taken, key=lambda r: r.line)
            await self._audit(
                uow, pool, actor, "importCoupons", None, {"imported": imported, "rejected": len(rejected)}
            )
            return ImportReport(await _view(uow.session, pool), imported, rejected)

    async def pools(self, program_id: int) -> list[PoolView]:
        async with self.db.read() as session:
            rows = list(
                await session.scalars(
                    select(CouponPool).where(CouponPool.program_id == program_id).order_by(CouponPool.key)
                )
            )
            counts = await pool_counts(session, [p.id for p in rows])
        return [PoolView(pool, counts[pool.id]) for pool in rows]

    async def pool(self, program_id: int, key: str) -> PoolView | None:
        async with self.db.read() as session:
            pool = await _find(session, program_id, key)
            return None if pool is None else await _view(session, pool)

    async def _audit(
        self, uow: UnitOfWork, pool: CouponPool, actor: str, action: str, before: Any, after: Any
    ) -> None:
        await record_change(
            uow,
            program_id=pool.program_id,
            actor=actor,
            action=action,
            at=self.clock.now(),
            target=pool.key,
            before=before,
            after=after,
        )

    # ---------- members ----------

    async def recent(self, member_ids: Sequence[int], first: int) -> dict[int, list[CouponView]]:
        """For `Member.coupons`: each member's latest codes, newest first."""
        async with self.db.read() as session:
            return await recent_coupons(session, member_ids, first, self.clock.now())

    # ---------- the till ----------

    async def validate(self, program_id: int, code: str, member_external_id: str) -> Validation:
        """Whether the member may redeem the code now; changes nothing."""
        now = self.clock.now()
        async with self.db.read() as session:
            member = await _member(session, program_id, member_external_id)
            coupon, pool = await _coupon(session, program_id, normalize(code))
            refused = refusal(coupon, member.id, now, normalize(code))
            view = None  # never another member's code
            if coupon is not None and pool is not None and coupon.member_id == member.id:
                view = coupon_view(coupon, pool, now)
        if refused is not None:
            return Validation(False, refused.code, refused.message, view)
        return Validation(True, None, None, view)

    async def redeem(self, program_id: int, request: RedeemRequest) -> Redemption:
        """Use the code once. Its `coupon_redeemed` event goes through the accrual pipeline: ALLOW or
        REVIEW redeem it (REVIEW holds the event for an admin; the till has handed the discount over),
        BLOCK refuses with COUPON_BLOCKED and leaves the code ISSUED (the attempt and its findings
        are stored). A retry with the same externalId answers the first result."""
        request.check()
        async with self.db.unit_of_work() as uow:
            answer = await self._redeem_in(uow, program_id, request, self.clock.now())
        if isinstance(answer, CouponRefused):
            raise answer  # committed: the blocked attempt and its findings stay on record
        return answer

    async def _redeem_in(
        self, uow: UnitOfWork, program_id: int, request: RedeemRequest, now: datetime
    ) -> Redemption | CouponRefused:
        """The redemption, or COUPON_BLOCKED to raise once the blocked attempt is committed."""
        session = uow.session
        code = normalize(request.code)
        member = await _member(session, program_id, request.member_external_id)
        if not await lock_members(session, [member.id]):  # the member's row first, as every writer does
            raise NotFound(f"memberExternalId: no member {request.member_external_id[:70]!r} in this program")
        replay = await self._replay(session, program_id, request, code, member, now)
        if replay is not None:
            return replay
        coupon, pool = await _coupon(session, program_id, code, for_update=True)
        refused = refusal(coupon, member.id, now, code)
        if refused is not None:
            raise refused
        assert coupon is not None
        assert pool is not None
        draft = EventDraft(
            request.event_external_id,
            member.external_id,
            COUPON_REDEEMED,
            request.occurred_at or now,
            request.amount,
            {"pool": pool.key, "codeHash": code_hash(program_id, code)},
        )
        (outcome,) = await self.events.record_in(uow, program_id, [draft], now)
        if outcome.status in (EventStatus.REJECTED, EventStatus.DUPLICATE):
            raise InvalidInput(
                outcome.message or f"externalId: {request.external_id!r} was used by another request"
            )
        if outcome.status == EventStatus.BLOCKED:
            return _blocked(outcome.message)
        await _mark_redeemed(session, coupon, request.external_id, now)
        return Redemption(coupon_view(coupon, pool, now), outcome.status, request.event_external_id, False)

    async def _replay(
        self,
        session: AsyncSession,
        program_id: int,
        request: RedeemRequest,
        code: str,
        member: Member,
        now: datetime,
    ) -> Redemption | None:
        """The first answer to this externalId, if it was used before (CONFLICT for another code)."""
        event = await session.scalar(
            select(Event).where(
                Event.program_id == program_id, Event.external_id == request.event_external_id
            )
        )
        if event is None:
            return None
        coupon, pool = await _coupon(session, program_id, code)
        same = (
            event.member_id == member.id
            and event.type == COUPON_REDEEMED
            and event.properties.get("codeHash") == code_hash(program_id, code)
        )
        if not same or coupon is None or pool is None:
            raise Conflict(f"externalId: {request.external_id!r} was used for another coupon redemption")
        if event.status == EventStatus.BLOCKED.value:
            raise _blocked(event.message)
        return Redemption(coupon_view(coupon, pool, now), EventStatus(event.status), event.external_id, True)


def _blocked(message: str | None) -> CouponRefused:
    return CouponRefused("COUPON_BLOCKED", f"code: the redemption was blocked by the fraud audit ({message})")


async def _mark_redeemed(session: AsyncSession, coupon: CouponCode, external_id: str, now: datetime) -> None:
    """ISSUED -> REDEEMED, only from ISSUED (the row lock already serialized the tills)."""
    result = await session.execute(
        update(CouponCode)
        .where(CouponCode.id == coupon.id, CouponCode.status == CouponStatus.ISSUED.value)
        .values(status=CouponStatus.REDEEMED.value, redeemed_at=now, redemption_key=external_id)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount == 0:
        raise CouponRefused("COUPON_USED", f"code: coupon {coupon.code} was already redeemed")
    await session.refresh(coupon)


async def _find(
    session: AsyncSession, program_id: int, key: str, *, for_update: bool = False
) -> CouponPool | None:
    query = select(CouponPool).where(CouponPool.program_id == program_id, CouponPool.key == key)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def _get(session: AsyncSession, program_id: int, key: str) -> CouponPool:
    validate_key(key, "poolKey")
    pool = await _find(session, program_id, key, for_update=True)
    if pool is None:
        raise NotFound(f"poolKey: no coupon pool {key[:70]!r} in this program")
    return pool


async def _view(session: AsyncSession, pool: CouponPool) -> PoolView:
    return PoolView(pool, (await pool_counts(session, [pool.id]))[pool.id])


async def _member(session: AsyncSession, program_id: int, external_id: str) -> Member:
    member = (await members_by_external_id(session, program_id, [external_id])).get(external_id)
    if member is None:
        raise NotFound(f"memberExternalId: no member {external_id[:70]!r} in this program")
    return member


async def _coupon(
    session: AsyncSession, program_id: int, code: str, *, for_update: bool = False
) -> tuple[CouponCode | None, CouponPool | None]:
    query = (
        select(CouponCode, CouponPool)
        .join(CouponPool, CouponPool.id == CouponCode.pool_id)
        .where(CouponCode.program_id == program_id, CouponCode.code == code)
    )
    if for_update:
        query = query.with_for_update(of=CouponCode).execution_options(populate_existing=True)
    found = (await session.execute(query)).first()
    return (None, None) if found is None else (found[0], found[1])
