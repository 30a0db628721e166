"""Reward, RewardWindow and RewardRedemption."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.types.coupons import Coupon
from api.types.leaderboards import LeaderboardPeriod
from api.types.ledger import LedgerEntry, ledger_entry
from domain import models
from gamification.rewards.catalogue import CatalogueItem
from gamification.rewards.redemption import RedemptionView


@strawberry.type(
    description="During [startsAt, endsAt) only the top N of a board, ranked as of startsAt, may redeem"
)
class RewardWindow:
    row: strawberry.Private[models.RewardWindow]

    @strawberry.field
    def board_key(self) -> str:
        return self.row.board_key

    @strawberry.field
    def period(self) -> LeaderboardPeriod:
        return LeaderboardPeriod(self.row.period)

    @strawberry.field
    def top_n(self) -> int:
        return self.row.top_n

    @strawberry.field
    def starts_at(self) -> datetime:
        return self.row.starts_at

    @strawberry.field(description="Exclusive: from then on anyone may redeem again")
    def ends_at(self) -> datetime:
        return self.row.ends_at

    @strawberry.field(description="The ranking at startsAt has been frozen (on the window's first use)")
    def frozen(self) -> bool:
        return self.row.snapshot_id is not None


@strawberry.type(description="A catalogue item bought with points")
class Reward:
    item: strawberry.Private[CatalogueItem]

    @strawberry.field
    def key(self) -> str:
        return self.item.reward.key

    @strawberry.field
    def name(self) -> str:
        return self.item.reward.name

    @strawberry.field
    def description(self) -> str:
        return self.item.reward.description

    @strawberry.field(description="Points one redemption spends")
    def cost_points(self) -> int:
        return self.item.reward.cost_points

    @strawberry.field(description="Units left; never below zero")
    def stock(self) -> int:
        return self.item.reward.stock

    @strawberry.field(description="Only active rewards can be redeemed (and members see only those)")
    def active(self) -> bool:
        return self.item.reward.active

    @strawberry.field(description="Segments (tiers included) whose members alone may redeem; empty: everyone")
    def segment_keys(self) -> list[str]:
        return self.item.segment_keys

    @strawberry.field(description="A coupon reward: the pool each redemption issues a code of")
    def coupon_pool_key(self) -> str | None:
        return self.item.coupon_pool_key

    @strawberry.field(description="Priority windows, earliest first, past ones included")
    def windows(self) -> list[RewardWindow]:
        return [RewardWindow(row=w) for w in self.item.windows]

    @strawberry.field
    def created_at(self) -> datetime:
        return self.item.reward.created_at

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.item.reward.updated_at


@strawberry.type(description="A reward a member bought: its REDEMPTION ledger entry and one unit of stock")
class RewardRedemption:
    view: strawberry.Private[RedemptionView]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.view.redemption.id))

    @strawberry.field(description="The reward as it is now")
    def reward(self) -> Reward:
        return Reward(item=self.view.item)

    @strawberry.field
    def member_external_id(self) -> str:
        return self.view.member_external_id

    @strawberry.field(description="Points spent: the reward's cost when it was redeemed")
    def points(self) -> int:
        return self.view.redemption.points

    @strawberry.field
    def idempotency_key(self) -> str:
        return self.view.redemption.idempotency_key

    @strawberry.field
    def ledger_entry(self) -> LedgerEntry:
        return ledger_entry(self.view.entry)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.view.redemption.created_at

    @strawberry.field(
        description="A coupon reward's code, issued with this redemption (a retry shows the same)"
    )
    def coupon(self) -> Coupon | None:
        return None if self.view.coupon is None else Coupon(view=self.view.coupon)
