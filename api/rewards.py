"""Queries and mutations on the rewards catalogue: stock, priority windows, redemptions."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.context import Info
from api.points import redeeming_program
from api.types.leaderboards import LeaderboardPeriod
from api.types.rewards import Reward, RewardRedemption
from domain.auth.principal import PrincipalKind
from gamification.periods import PeriodKind
from gamification.rewards.catalogue import RewardDraft
from gamification.rewards.windows import WindowSpec


@strawberry.input(description="setReward creates the reward or replaces it by key")
class RewardInput:
    key: str = strawberry.field(description="[A-Za-z0-9_-]{1,64}")
    name: str
    cost_points: int = strawberry.field(description="1 to 10^9 points per redemption")
    stock: int = strawberry.field(description="0 to 10^9 units; set as given (restockReward adds)")
    description: str = ""
    active: bool = True
    coupon_pool_key: str | None = strawberry.field(
        default=None,
        description="A coupon reward: each redemption also issues one code of this pool, returned as "
        "`coupon` (none left: COUPON_POOL_EXHAUSTED, nothing spent)",
    )
    segment_keys: list[str] | None = strawberry.field(
        default=None,
        description='Only members of one of these segments (tiers included, e.g. "tier-gold") may redeem; '
        "null or empty: everyone. Others get FORBIDDEN with reason NOT_ELIGIBLE",
    )

    def draft(self) -> RewardDraft:
        return RewardDraft(
            self.key,
            self.name,
            self.description,
            self.cost_points,
            self.stock,
            self.active,
            tuple(self.segment_keys or ()),
            self.coupon_pool_key,
        )


def _reader(info: Info) -> tuple[int, bool]:
    """The program read from, and whether the caller sees only active rewards (a member token)."""
    principal = info.context.principal
    return principal.program_id, principal.kind == PrincipalKind.MEMBER


@strawberry.type
class RewardQueries:
    @strawberry.field(description="The catalogue by key; a member token sees active rewards only")
    async def rewards(self, info: Info, active_only: bool = False) -> list[Reward]:
        program_id, member = _reader(info)
        items = await info.context.services.rewards.list_rewards(
            program_id, active_only=active_only or member
        )
        return [Reward(item=item) for item in items]

    @strawberry.field(description="One reward; null for a member token when it is not active")
    async def reward(self, info: Info, key: str) -> Reward | None:
        program_id, member = _reader(info)
        item = await info.context.services.rewards.get(program_id, key, active_only=member)
        return None if item is None else Reward(item=item)


@strawberry.type
class RewardMutations:
    @strawberry.mutation(description="Create or replace a reward by key")
    async def set_reward(self, info: Info, input: RewardInput) -> Reward:
        program_id = info.context.principal.program_id
        return Reward(
            item=await info.context.services.rewards.set_reward(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="Add units (negative: remove them) atomically, whatever redemptions run meanwhile"
    )
    async def restock_reward(self, info: Info, key: str, add: int) -> Reward:
        program_id = info.context.principal.program_id
        return Reward(
            item=await info.context.services.rewards.restock(
                program_id, key, add, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="During [startsAt, endsAt) only the top topN (1 to 10000) of the board, ranked as of "
        "startsAt, may redeem. Replaces the reward's window with the same startsAt; windows may not overlap"
    )
    async def set_reward_window(
        self,
        info: Info,
        reward_key: str,
        board_key: str,
        period: LeaderboardPeriod,
        top_n: int,
        starts_at: datetime,
        ends_at: datetime,
    ) -> Reward:
        program_id = info.context.principal.program_id
        spec = WindowSpec(board_key, PeriodKind(LeaderboardPeriod(period).value), top_n, starts_at, ends_at)
        return Reward(
            item=await info.context.services.rewards.set_window(
                program_id, reward_key, spec, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Remove the reward's window that starts at startsAt")
    async def remove_reward_window(self, info: Info, reward_key: str, starts_at: datetime) -> Reward:
        program_id = info.context.principal.program_id
        item = await info.context.services.rewards.remove_window(
            program_id, reward_key, starts_at, actor=info.context.principal.operator
        )
        return Reward(item=item)

    @strawberry.mutation(
        description="Spend the reward's cost and take one unit, once per idempotencyKey. Out of stock: "
        "CONFLICT; beyond the balance: BAD_USER_INPUT; not in a segment the reward is for: FORBIDDEN "
        "(reason NOT_ELIGIBLE); outside the top N in a priority window: FORBIDDEN "
        "(extensions reason PRIORITY_WINDOW, retryAt). A member token redeems only for itself"
    )
    async def redeem_reward(
        self, info: Info, member_external_id: str, reward_key: str, idempotency_key: str
    ) -> RewardRedemption:
        program_id = await redeeming_program(info, member_external_id, "rewards for its own member")
        view = await info.context.services.rewards.redeem(
            program_id, member_external_id, reward_key, idempotency_key
        )
        return RewardRedemption(view=view)
