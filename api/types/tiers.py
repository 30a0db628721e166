"""Tier ladders and members' tiers (DESIGN.md, Tiers)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

from domain.enums import TierDowngrade
from domain.tiers import ladder as domain
from domain.tiers.service import MemberTierView

strawberry.enum(TierDowngrade, description="What ends a grace period below the tier's threshold")


@strawberry.type
class Tier:
    key: str = strawberry.field(description='Matches [a-z0-9_]{1,32}; its segment is "tier-<key>"')
    name: str
    threshold: Decimal = strawberry.field(description="Qualifying value needed to hold the tier; 0 first")
    earn_multiplier: Decimal = strawberry.field(description="Multiplies points from earning rules")

    @classmethod
    def of(cls, tier: domain.Tier) -> Tier:
        return cls(
            key=tier.key, name=tier.name, threshold=tier.threshold, earn_multiplier=tier.earn_multiplier
        )


@strawberry.type
class TierLadder:
    qualifier: str = strawberry.field(description='An aggregate operand, e.g. "sum(purchase.amount, 365d)"')
    tiers: list[Tier] = strawberry.field(description="Ascending thresholds")
    downgrade: TierDowngrade
    grace_days: int = strawberry.field(description="Days a member keeps its tier below its threshold")

    @classmethod
    def of(cls, ladder: domain.Ladder) -> TierLadder:
        return cls(
            qualifier=ladder.qualifier,
            tiers=[Tier.of(t) for t in ladder.tiers],
            downgrade=ladder.downgrade,
            grace_days=ladder.grace_days,
        )


@strawberry.type
class MemberTier:
    tier: Tier
    since: datetime
    qualifying_value: Decimal = strawberry.field(description="The qualifier's value for the member now")
    next: Tier | None = strawberry.field(description="The tier above; null at the top")
    to_next: Decimal | None = strawberry.field(description="next.threshold - qualifyingValue, at least 0")
    kept_until: datetime | None = strawberry.field(
        description="End of the grace period while below; else null"
    )

    @classmethod
    def of(cls, view: MemberTierView) -> MemberTier:
        return cls(
            tier=Tier.of(view.tier),
            since=view.since,
            qualifying_value=view.qualifying_value,
            next=None if view.next is None else Tier.of(view.next),
            to_next=view.to_next,
            kept_until=view.kept_until,
        )


@strawberry.input
class TierInput:
    key: str
    name: str
    threshold: Decimal
    earn_multiplier: Decimal | None = Decimal(1)

    def draft(self) -> domain.TierDraft:
        multiplier = Decimal(1) if self.earn_multiplier is None else self.earn_multiplier
        return domain.TierDraft(self.key, self.name, self.threshold, multiplier)


@strawberry.input
class TierLadderInput:
    qualifier: str
    tiers: list[TierInput]
    downgrade: TierDowngrade | None = TierDowngrade.RECALCULATE
    grace_days: int | None = 0

    def draft(self) -> domain.LadderDraft:
        """An explicit null takes the default."""
        downgrade = TierDowngrade(self.downgrade or TierDowngrade.RECALCULATE).value
        grace_days = 0 if self.grace_days is None else self.grace_days
        return domain.LadderDraft(self.qualifier, [t.draft() for t in self.tiers], downgrade, grace_days)
