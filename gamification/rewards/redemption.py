"""Redeeming a reward: one transaction spends its cost on the ledger and takes one unit of stock.

Idempotency rides on the ledger: the REDEMPTION entry's key is derived from the
member and the caller's key (`reward:` + a hash), so a replay finds the entry and
returns the redemption written beside it, and one caller's keys never collide
with another member's. Locks are taken member row first (the balance), reward
row last (the stock), the order every writer uses, and the hot reward row is held
only from the stock update to the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.coupons.issuing import IssueRequest, issue_codes, pool_exhausted
from domain.coupons.reads import CouponView, coupon_view
from domain.enums import EntryKind
from domain.errors import InvalidInput, NotFound
from domain.ledger.posting import MAX_REASON, request_hash
from domain.ledger.service import MAX_IDEMPOTENCY_KEY, REWARD_KEY_PREFIX
from domain.models import CouponCode, CouponPool, LedgerEntry, Member, Reward, RewardRedemption
from gamification.rewards.catalogue import CatalogueItem, catalogue, out_of_stock
from gamification.rewards.eligibility import check_eligible, listed_segments


@dataclass(frozen=True)
class RedemptionView:
    redemption: RewardRedemption
    item: CatalogueItem
    member_external_id: str
    entry: LedgerEntry
    #: The code a coupon reward issued with this redemption
    coupon: CouponView | None = None


def coupon_issue_key(redemption: RewardRedemption) -> str:
    """What names the code a redemption issued (a replay finds it by this)."""
    return f"reward:{redemption.id}"


@dataclass(frozen=True)
class RedemptionRequest:
    program_id: int
    member_external_id: str
    reward_key: str
    idempotency_key: str

    def check(self) -> None:
        if not self.idempotency_key.strip():
            raise InvalidInput("idempotencyKey: must not be empty")
        if len(self.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidInput(f"idempotencyKey: longer than {MAX_IDEMPOTENCY_KEY} characters")

    @property
    def ledger_key(self) -> str:
        """The ledger entry's idempotency key: per member, fixed length, under the reserved prefix."""
        return REWARD_KEY_PREFIX + request_hash(self.member_external_id, self.idempotency_key)

    @property
    def fingerprint(self) -> str:
        """What the key names: this member redeeming this reward (a later price change is no conflict)."""
        return request_hash(EntryKind.REDEMPTION, "reward", self.member_external_id, self.reward_key)


async def redeemable(session: AsyncSession, request: RedemptionRequest) -> tuple[Member, Reward]:
    """The member and the reward, if the reward can be redeemed at all by this member (priority windows
    aside): NOT_FOUND, inactive, not for the member's segments (FORBIDDEN NOT_ELIGIBLE), out of stock."""
    member = await session.scalar(
        select(Member).where(
            Member.program_id == request.program_id,
            Member.external_id == request.member_external_id,
            Member.erased_at.is_(None),
        )
    )
    if member is None:
        raise NotFound(f"memberExternalId: no member {request.member_external_id[:70]!r} in this program")
    reward = await session.scalar(
        select(Reward).where(Reward.program_id == request.program_id, Reward.key == request.reward_key)
    )
    if reward is None:
        raise NotFound(f"rewardKey: no reward {request.reward_key[:70]!r} in this program")
    if not reward.active:
        raise InvalidInput(f"rewardKey: reward {reward.key!r} is not active")
    listed = (await listed_segments(session, [reward.id]))[reward.id]
    await check_eligible(session, reward, listed, member)
    if reward.stock <= 0:
        raise out_of_stock(reward.key)  # a cheap early answer; take_one decides under the row lock
    return member, reward


def ledger_reason(reward: Reward) -> str:
    return f"reward {reward.key}: {reward.name}"[:MAX_REASON]


async def record(
    session: AsyncSession,
    request: RedemptionRequest,
    member: Member,
    reward: Reward,
    entry: LedgerEntry,
    now: datetime,
) -> RedemptionView:
    """Write the redemption beside its ledger entry and read the reward back as it now is."""
    await session.flush()  # the entry's id
    redemption = RewardRedemption(
        program_id=request.program_id,
        reward_id=reward.id,
        member_id=member.id,
        ledger_entry_id=entry.id,
        idempotency_key=request.idempotency_key,
        points=reward.cost_points,
        created_at=now,
    )
    session.add(redemption)
    await session.flush()
    coupon = await _issue_coupon(session, request.program_id, reward, redemption, member.id, now)
    await session.refresh(reward)
    (item,) = await catalogue(session, request.program_id, active_only=False, keys=[reward.key])
    return RedemptionView(redemption, item, member.external_id, entry, coupon)


async def _issue_coupon(
    session: AsyncSession,
    program_id: int,
    reward: Reward,
    redemption: RewardRedemption,
    member_id: int,
    now: datetime,
) -> CouponView | None:
    """A coupon reward's code; COUPON_POOL_EXHAUSTED (the whole redemption rolls back) when none is left."""
    if reward.coupon_pool_id is None:
        return None
    pool = await session.get(CouponPool, reward.coupon_pool_id)
    assert pool is not None
    key = coupon_issue_key(redemption)
    code = (await issue_codes(session, program_id, [IssueRequest(key, pool.key, member_id)], now))[key]
    if code is None:
        raise pool_exhausted(pool.key)
    return coupon_view(code, pool, now)


async def _issued_coupon(
    session: AsyncSession, redemption: RewardRedemption, now: datetime
) -> CouponView | None:
    found = (
        await session.execute(
            select(CouponCode, CouponPool)
            .join(CouponPool, CouponPool.id == CouponCode.pool_id)
            .where(
                CouponCode.program_id == redemption.program_id,
                CouponCode.issue_key == coupon_issue_key(redemption),
            )
        )
    ).first()
    return None if found is None else coupon_view(found[0], found[1], now)


async def recorded(
    session: AsyncSession, program_id: int, entry: LedgerEntry, now: datetime
) -> RedemptionView:
    """The redemption written beside `entry` (a replay)."""
    redemption, reward_key, member_external_id = (
        await session.execute(
            select(RewardRedemption, Reward.key, Member.external_id)
            .join(Reward, Reward.id == RewardRedemption.reward_id)
            .join(Member, Member.id == RewardRedemption.member_id)
            .where(RewardRedemption.ledger_entry_id == entry.id)
        )
    ).one()
    (item,) = await catalogue(session, program_id, active_only=False, keys=[reward_key])
    return RedemptionView(
        redemption, item, member_external_id, entry, await _issued_coupon(session, redemption, now)
    )
