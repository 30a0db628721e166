"""Queries and mutations on promotions (docs/promotions.md)."""

from __future__ import annotations

from decimal import Decimal

import strawberry

from api.context import Info
from api.types.promotions import Promotion, PromotionSimulation
from domain.promotions.definitions import PromotionDraft
from domain.promotions.stacking import CapPeriod, Stacking


@strawberry.input(
    description="A promotion's definition (createPromotion, updatePromotion, simulatePromotion)"
)
class PromotionInput:
    key: str = strawberry.field(description="[A-Za-z0-9_-]{1,64}")
    name: str
    event_type: str = strawberry.field(description="The event type it adds to (not refund)")
    condition: str = strawberry.field(
        default="true",
        description="The rule language; may read the event: event.amount, event.type, event.weekday "
        "(1 Monday .. 7 Sunday, program timezone), event.hour, event.<property>. e.g. "
        'in_segment("tier-gold") and event.category = "coffee"',
    )
    multiplier: Decimal | None = strawberry.field(
        default=None, description="1 to 100 (4 decimals): adds floor(base x (multiplier - 1))"
    )
    bonus_points: int | None = strawberry.field(default=None, description="0 to 10^6 points added")
    starts_at: str | None = strawberry.field(
        default=None, description="Local date-time in the program's timezone (2026-12-12T00:00); null: open"
    )
    ends_at: str | None = strawberry.field(default=None, description="Exclusive local end; null: open")
    cap_points: int | None = strawberry.field(default=None, description="Per member per capPeriod")
    cap_period: CapPeriod | None = None
    budget_points: int | None = strawberry.field(default=None, description="The most it pays in all")
    priority: int = 0
    stacking: Stacking = Stacking.STACK
    active: bool = True

    def draft(self) -> PromotionDraft:
        return PromotionDraft(
            key=self.key,
            name=self.name,
            event_type=self.event_type,
            condition=self.condition,
            multiplier=self.multiplier,
            bonus_points=self.bonus_points,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            cap_points=self.cap_points,
            cap_period=None if self.cap_period is None else CapPeriod(self.cap_period),
            budget_points=self.budget_points,
            priority=self.priority,
            stacking=Stacking(self.stacking),
            active=self.active,
        )


@strawberry.type
class PromotionQueries:
    @strawberry.field(description="The program's promotions, highest priority first, then by key")
    async def promotions(self, info: Info, active_only: bool = False) -> list[Promotion]:
        rows = await info.context.services.promotions.list_promotions(
            info.context.principal.program_id, active_only=active_only
        )
        return [Promotion(row=row) for row in rows]

    @strawberry.field(
        description="Replay the last `days` (1 to 366) days of recorded events through the promotion "
        "(as if it had run then, on its own) and report what it would have paid; nothing is written"
    )
    async def simulate_promotion(self, info: Info, input: PromotionInput, days: int) -> PromotionSimulation:
        report = await info.context.services.promotions.simulate(
            info.context.principal.program_id, input.draft(), days
        )
        return PromotionSimulation(report=report)


@strawberry.type
class PromotionMutations:
    @strawberry.mutation(description="A new promotion (CONFLICT when the key exists)")
    async def create_promotion(self, info: Info, input: PromotionInput) -> Promotion:
        principal = info.context.principal
        row = await info.context.services.promotions.create(
            principal.program_id, input.draft(), actor=principal.operator
        )
        return Promotion(row=row)

    @strawberry.mutation(description="Replace the definition of the promotion input.key names")
    async def update_promotion(self, info: Info, input: PromotionInput) -> Promotion:
        principal = info.context.principal
        row = await info.context.services.promotions.update(
            principal.program_id, input.draft(), actor=principal.operator
        )
        return Promotion(row=row)

    @strawberry.mutation(description="Turn a promotion on or off")
    async def set_promotion_active(self, info: Info, key: str, active: bool) -> Promotion:
        principal = info.context.principal
        row = await info.context.services.promotions.set_active(
            principal.program_id, key, active, actor=principal.operator
        )
        return Promotion(row=row)
