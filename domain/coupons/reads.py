"""Reading codes: a member's latest codes (for `Member.coupons`) and a pool's counts. All queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.coupons.status import CouponStatus, status_at
from domain.models import CouponCode, CouponPool


@dataclass(frozen=True)
class CouponView:
    """A code as its member (or an admin reading the member) sees it, status as of the read."""

    code: str
    pool_key: str
    pool_name: str
    status: CouponStatus
    issued_at: datetime | None
    expires_at: datetime | None
    redeemed_at: datetime | None


def coupon_view(code: CouponCode, pool: CouponPool, now: datetime) -> CouponView:
    return CouponView(
        code.code,
        pool.key,
        pool.name,
        status_at(code, now),
        code.issued_at,
        code.expires_at,
        code.redeemed_at,
    )


async def recent_coupons(
    session: AsyncSession, member_ids: Sequence[int], first: int, now: datetime
) -> dict[int, list[CouponView]]:
    """For each member, its `first` latest issued codes, newest first (voided ones left out)."""
    ranked = (
        select(
            CouponCode.id,
            func.row_number()
            .over(partition_by=CouponCode.member_id, order_by=CouponCode.id.desc())
            .label("rn"),
        )
        .where(CouponCode.member_id.in_(set(member_ids)), CouponCode.status != CouponStatus.VOID.value)
        .subquery()
    )
    rows = await session.execute(
        select(CouponCode, CouponPool)
        .join(ranked, ranked.c.id == CouponCode.id)
        .join(CouponPool, CouponPool.id == CouponCode.pool_id)
        .where(ranked.c.rn <= first)
        .order_by(CouponCode.member_id, CouponCode.id.desc())
    )
    found: dict[int, list[CouponView]] = {member_id: [] for member_id in member_ids}
    for code, pool in rows:
        assert code.member_id is not None
        found[code.member_id].append(coupon_view(code, pool, now))
    return found


@dataclass(frozen=True)
class PoolCounts:
    available: int = 0
    issued: int = 0
    redeemed: int = 0


async def pool_counts(session: AsyncSession, pool_ids: Sequence[int]) -> dict[int, PoolCounts]:
    """Per pool: codes left to issue (expired ones included), issued and unused, redeemed."""
    rows = await session.execute(
        select(CouponCode.pool_id, CouponCode.status, func.count())
        .where(CouponCode.pool_id.in_(sorted(set(pool_ids))))
        .group_by(CouponCode.pool_id, CouponCode.status)
    )
    counts: dict[int, dict[str, int]] = {pool_id: {} for pool_id in pool_ids}
    for pool_id, status, count in rows:
        counts[pool_id][status] = int(count)
    return {
        pool_id: PoolCounts(
            c.get(CouponStatus.AVAILABLE.value, 0),
            c.get(CouponStatus.ISSUED.value, 0),
            c.get(CouponStatus.REDEEMED.value, 0),
        )
        for pool_id, c in counts.items()
    }
