"""Catalogue items: what a reward costs and how many are left.

Stock only moves by conditional UPDATEs (`stock = stock - 1 WHERE stock > 0`,
`stock = stock + n WHERE stock + n BETWEEN 0 AND MAX_STOCK`), so concurrent
redemptions and restocks never lose a unit or take stock below zero; the table's
CHECK constraint backs that up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict, InvalidInput, NotFound
from domain.models import CouponPool, Reward, RewardWindow
from domain.programs.service import validate_key
from gamification.rewards.eligibility import checked_keys, listed_segments, store_segments

MAX_COST = 10**9
MAX_STOCK = 10**9
MAX_NAME = 200
MAX_DESCRIPTION = 2000


@dataclass(frozen=True)
class RewardDraft:
    key: str
    name: str
    description: str
    cost_points: int
    stock: int
    active: bool
    #: Segments (tiers included) whose members alone may redeem it; empty: everyone.
    segment_keys: tuple[str, ...] = ()
    #: A coupon reward: each redemption also issues one code of this pool
    coupon_pool_key: str | None = None


@dataclass(frozen=True)
class CatalogueItem:
    """A reward with its priority windows, earliest first, and the segments it is for."""

    reward: Reward
    windows: list[RewardWindow]
    segment_keys: list[str]
    coupon_pool_key: str | None = None


def audited_reward(item: CatalogueItem) -> dict[str, Any]:
    """A reward as the API shows it (stock, windows and segments included): what the audit log keeps."""
    reward = item.reward
    return {
        "key": reward.key,
        "name": reward.name,
        "description": reward.description,
        "costPoints": reward.cost_points,
        "stock": reward.stock,
        "active": reward.active,
        "segmentKeys": list(item.segment_keys),
        "couponPoolKey": item.coupon_pool_key,
        "windows": [
            {
                "boardKey": w.board_key,
                "period": w.period,
                "topN": w.top_n,
                "startsAt": w.starts_at.isoformat(),
                "endsAt": w.ends_at.isoformat(),
            }
            for w in item.windows
        ],
    }


def validate_draft(draft: RewardDraft) -> RewardDraft:
    """The draft with its text trimmed; BAD_USER_INPUT naming the faulty field."""
    validate_key(draft.key, "key")
    name = draft.name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name: must be 1 to {MAX_NAME} characters")
    if len(draft.description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description: longer than {MAX_DESCRIPTION} characters")
    if not 1 <= draft.cost_points <= MAX_COST:
        raise InvalidInput(f"costPoints: must be between 1 and {MAX_COST}, got {draft.cost_points}")
    if not 0 <= draft.stock <= MAX_STOCK:
        raise InvalidInput(f"stock: must be between 0 and {MAX_STOCK}, got {draft.stock}")
    return RewardDraft(
        draft.key,
        name,
        draft.description.strip(),
        draft.cost_points,
        draft.stock,
        draft.active,
        checked_keys(draft.segment_keys),
        None if draft.coupon_pool_key is None else validate_key(draft.coupon_pool_key, "couponPoolKey"),
    )


async def store_reward(session: AsyncSession, program_id: int, draft: RewardDraft, now: datetime) -> Reward:
    """Create the reward or replace its definition (stock included) inside the caller's transaction."""
    draft = validate_draft(draft)
    reward = await session.scalar(
        select(Reward).where(Reward.program_id == program_id, Reward.key == draft.key).with_for_update()
    )
    if reward is None:
        reward = Reward(program_id=program_id, key=draft.key, created_at=now)
        session.add(reward)
    reward.name = draft.name
    reward.description = draft.description
    reward.cost_points = draft.cost_points
    reward.stock = draft.stock
    reward.active = draft.active
    reward.updated_at = now
    reward.coupon_pool_id = await _pool_id(session, program_id, draft.coupon_pool_key)
    await session.flush()
    await store_segments(session, program_id, reward, draft.segment_keys)
    return reward


async def _pool_id(session: AsyncSession, program_id: int, key: str | None) -> int | None:
    if key is None:
        return None
    pool_id = await session.scalar(
        select(CouponPool.id).where(CouponPool.program_id == program_id, CouponPool.key == key)
    )
    if pool_id is None:
        raise NotFound(f"couponPoolKey: no coupon pool {key!r} in this program")
    return int(pool_id)


async def add_stock(session: AsyncSession, program_id: int, key: str, add: int, now: datetime) -> Reward:
    """Add (or, negative, remove) units atomically, however many redemptions run meanwhile."""
    if add == 0 or abs(add) > MAX_STOCK:
        raise InvalidInput(f"add: must be a non-zero number of units between -{MAX_STOCK} and {MAX_STOCK}")
    reward = await reward_by_key(session, program_id, key)
    result = await session.execute(
        update(Reward)
        .where(Reward.id == reward.id, Reward.stock + add >= 0, Reward.stock + add <= MAX_STOCK)
        .values(stock=Reward.stock + add, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    await session.refresh(reward)
    if result.rowcount == 0:
        raise InvalidInput(
            f"add: reward {key!r} has {reward.stock} in stock; adding {add} would leave it "
            f"outside 0 to {MAX_STOCK}"
        )
    return reward


async def take_one(session: AsyncSession, reward: Reward) -> None:
    """Take one unit of stock; CONFLICT when none is left (the caller's transaction then rolls back).

    A concurrent taker waits on the row lock and re-reads the stock, so the last
    unit goes to exactly one of them.
    """
    result = await session.execute(
        update(Reward)
        .where(Reward.id == reward.id, Reward.stock > 0)
        .values(stock=Reward.stock - 1)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount == 0:
        raise out_of_stock(reward.key)


def out_of_stock(key: str) -> Conflict:
    return Conflict(f"rewardKey: reward {key!r} is out of stock", reason="OUT_OF_STOCK")


async def reward_by_key(session: AsyncSession, program_id: int, key: str, *, field: str = "key") -> Reward:
    reward = await session.scalar(select(Reward).where(Reward.program_id == program_id, Reward.key == key))
    if reward is None:
        raise NotFound(f"{field}: no reward {key[:70]!r} in this program")
    return reward


async def catalogue(
    session: AsyncSession, program_id: int, *, active_only: bool, keys: Sequence[str] | None = None
) -> list[CatalogueItem]:
    """The program's rewards by key (only `keys` when given), each with its windows: two queries."""
    query = select(Reward).where(Reward.program_id == program_id)
    if active_only:
        query = query.where(Reward.active.is_(True))
    if keys is not None:
        query = query.where(Reward.key.in_(sorted(set(keys))))
    rewards = list((await session.scalars(query.order_by(Reward.key))).all())
    windows: dict[int, list[RewardWindow]] = defaultdict(list)
    if rewards:
        rows = await session.scalars(
            select(RewardWindow)
            .where(RewardWindow.reward_id.in_([r.id for r in rewards]))
            .order_by(RewardWindow.reward_id, RewardWindow.starts_at)
        )
        for window in rows:
            windows[window.reward_id].append(window)
    segments = await listed_segments(session, [r.id for r in rewards])
    pool_ids = sorted({r.coupon_pool_id for r in rewards if r.coupon_pool_id is not None})
    pools: dict[int, str] = {}
    if pool_ids:
        found = await session.execute(
            select(CouponPool.id, CouponPool.key).where(CouponPool.id.in_(pool_ids))
        )
        pools = {pool_id: key for pool_id, key in found}  # noqa: C416 - Row objects
    return [
        CatalogueItem(
            reward,
            windows[reward.id],
            segments[reward.id],
            None if reward.coupon_pool_id is None else pools[reward.coupon_pool_id],
        )
        for reward in rewards
    ]
