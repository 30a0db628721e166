"""Issuing codes to members, inside the caller's transaction (a trigger, an exposure, a reward).

Each request takes one AVAILABLE, unexpired code of its pool: the rows are claimed with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent issuers never wait on each other or
take the same code (SQLite runs one writer at a time). A request is named by its
`issue_key` (what issued it): a replay of the same cause finds the code it issued before.
An exhausted (or unknown) pool answers None for the request: the caller decides what that
means (a trigger logs it and goes on, `redeemReward` refuses with COUPON_POOL_EXHAUSTED).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, cast, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.coupons.pools import expiry_at_issue
from domain.coupons.status import CouponStatus
from domain.errors import CouponRefused
from domain.models import CouponCode, CouponPool


@dataclass(frozen=True)
class IssueRequest:
    issue_key: str
    pool_key: str
    member_id: int


def pool_exhausted(pool_key: str) -> CouponRefused:
    return CouponRefused("COUPON_POOL_EXHAUSTED", f"coupon pool {pool_key!r} has no code left to issue")


async def issue_codes(
    session: AsyncSession, program_id: int, requests: Sequence[IssueRequest], now: datetime
) -> dict[str, CouponCode | None]:
    """The code issued for each request's issue_key (None: its pool is exhausted or unknown)."""
    if not requests:
        return {}
    keys = sorted({r.issue_key for r in requests})
    done: dict[str, CouponCode | None] = {
        code.issue_key: code
        for code in await session.scalars(
            select(CouponCode).where(CouponCode.program_id == program_id, CouponCode.issue_key.in_(keys))
        )
        if code.issue_key is not None
    }
    wanted: dict[str, list[IssueRequest]] = defaultdict(list)
    for request in requests:
        if request.issue_key not in done:
            done[request.issue_key] = None
            wanted[request.pool_key].append(request)
    if not wanted:
        return done
    pools = {
        pool.key: pool
        for pool in await session.scalars(
            select(CouponPool).where(CouponPool.program_id == program_id, CouponPool.key.in_(sorted(wanted)))
        )
    }
    for pool_key, asking in sorted(wanted.items()):
        pool = pools.get(pool_key)
        if pool is None:
            continue
        free = await session.scalars(
            select(CouponCode)
            .where(
                CouponCode.pool_id == pool.id,
                CouponCode.status == CouponStatus.AVAILABLE.value,
                or_(CouponCode.expires_at.is_(None), CouponCode.expires_at > now),
            )
            .order_by(CouponCode.id)
            .limit(len(asking))
            .with_for_update(skip_locked=True)
        )
        for request, code in zip(sorted(asking, key=lambda r: r.issue_key), free, strict=False):
            code.status = CouponStatus.ISSUED.value
            code.member_id = request.member_id
            code.issue_key = request.issue_key
            code.issued_at = now
            code.expires_at = expiry_at_issue(pool, code.expires_at, now)
            done[request.issue_key] = code
    await session.flush()
    return done


async def forget_member_codes(session: AsyncSession, member_id: int) -> None:
    """Erasure: the member's codes no longer read as what was printed or sent (`~erased-<id>`, which
    no till can type), and those not redeemed are VOID. Pools, times and counts stay exact."""
    await session.execute(
        update(CouponCode)
        .where(CouponCode.member_id == member_id, CouponCode.status == CouponStatus.ISSUED.value)
        .values(status=CouponStatus.VOID.value)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(CouponCode)
        .where(CouponCode.member_id == member_id)
        .values(code=literal("~erased-") + cast(CouponCode.id, String))
        .execution_options(synchronize_session=False)
    )
