"""Promotion and PromotionSimulation (docs/promotions.md)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

from domain import models
from domain.promotions.simulation import SimulationReport
from domain.promotions.stacking import CapPeriod, Stacking

strawberry.enum(
    Stacking,
    name="PromotionStacking",
    description="STACK: applies with the other stackable ones; EXCLUSIVE: only the highest-priority "
    "applicable exclusive promotion applies (ties: the smaller key), and no stackable one",
)
strawberry.enum(
    CapPeriod,
    name="PromotionCapPeriod",
    description="A member cap's period in the program's timezone (weeks start on Monday); TOTAL: ever",
)


@strawberry.type(description="A conditional earning rule on top of the event type's base rule")
class Promotion:
    row: strawberry.Private[models.Promotion]

    @strawberry.field
    def key(self) -> str:
        return self.row.key

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def event_type(self) -> str:
        return self.row.event_type

    @strawberry.field(description="In the rule language, normalised; may read the event (`event.amount`)")
    def condition(self) -> str:
        return self.row.rule

    @strawberry.field(description="null: 1. Adds floor(base x (multiplier - 1)) points")
    def multiplier(self) -> Decimal | None:
        return self.row.multiplier

    @strawberry.field
    def bonus_points(self) -> int:
        return self.row.bonus_points

    @strawberry.field(description="Local time in the program's timezone (YYYY-MM-DDTHH:MM:SS); null: open")
    def starts_at(self) -> str | None:
        return self.row.starts_local

    @strawberry.field(description="Exclusive local end in the program's timezone; null: open")
    def ends_at(self) -> str | None:
        return self.row.ends_local

    @strawberry.field(description="At most this many points per member per capPeriod")
    def cap_points(self) -> int | None:
        return self.row.cap_points

    @strawberry.field
    def cap_period(self) -> CapPeriod | None:
        return None if self.row.cap_period is None else CapPeriod(self.row.cap_period)

    @strawberry.field(description="The most points it pays in all; null: no budget")
    def budget_points(self) -> int | None:
        return self.row.budget_points

    @strawberry.field(description="Points paid against the budget (counted for budgeted promotions only)")
    def spent_points(self) -> int:
        return self.row.spent_points

    @strawberry.field
    def priority(self) -> int:
        return self.row.priority

    @strawberry.field
    def stacking(self) -> Stacking:
        return Stacking(self.row.stacking)

    @strawberry.field
    def active(self) -> bool:
        return self.row.active

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.row.updated_at


@strawberry.type(description="simulatePromotion: what the promotion would have paid over the last N days")
class PromotionSimulation:
    report: strawberry.Private[SimulationReport]

    @strawberry.field
    def days(self) -> int:
        return self.report.days

    @strawberry.field
    def since(self) -> datetime:
        return self.report.since

    @strawberry.field(description="Recorded events of its type in the window, not BLOCKED")
    def events_replayed(self) -> int:
        return self.report.events_replayed

    @strawberry.field(description="Events it would have added points to")
    def events(self) -> int:
        return self.report.events

    @strawberry.field(description="Distinct members it would have paid")
    def members(self) -> int:
        return self.report.members

    @strawberry.field
    def points(self) -> int:
        return self.report.points

    @strawberry.field(description="points x the program's point value when it has one; else the points")
    def cost(self) -> Decimal:
        return self.report.cost
