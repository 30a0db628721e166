"""Queries and mutations on the caller's program and its earning rules."""

from __future__ import annotations

from decimal import Decimal

import strawberry

from api.context import Info
from api.types.members import Program
from domain.ledger.earning import EarningRuleSpec
from domain.programs.service import DEFAULT_MAX_EVENT_AGE_DAYS, MAX_EVENT_AGE_DAYS
from domain.segments.lifecycle import LifecycleThresholds


@strawberry.type
class EarningRule:
    event_type: str
    points_per_unit: Decimal | None
    fixed_points: int | None


@strawberry.input
class EarningRuleInput:
    event_type: str
    points_per_unit: Decimal | None = strawberry.field(
        default=None, description='Points per unit of amount, floored: "1" = 1 point per currency unit'
    )
    fixed_points: int | None = strawberry.field(
        default=None, description="Points per event regardless of amount"
    )


def _rule(spec: EarningRuleSpec) -> EarningRule:
    return EarningRule(
        event_type=spec.event_type, points_per_unit=spec.points_per_unit, fixed_points=spec.fixed_points
    )


@strawberry.type
class ProgramQueries:
    @strawberry.field
    async def program(self, info: Info) -> Program:
        program_id = info.context.principal.program_id
        return Program(row=await info.context.services.programs.get(program_id))

    @strawberry.field
    async def earning_rules(self, info: Info) -> list[EarningRule]:
        program_id = info.context.principal.program_id
        return [_rule(r) for r in await info.context.services.programs.earning_rules(program_id)]


@strawberry.input(description="Lifecycle stage thresholds in days (DESIGN.md); defaults 30, 30, 90")
class LifecycleThresholdsInput:
    new_days: int
    at_risk_days: int
    lost_days: int


@strawberry.type
class ProgramMutations:
    @strawberry.mutation(description="Segments that read lifecycle are recomputed (beyond the contract)")
    async def set_lifecycle_thresholds(self, info: Info, input: LifecycleThresholdsInput) -> Program:
        program_id = info.context.principal.program_id
        thresholds = LifecycleThresholds(input.new_days, input.at_risk_days, input.lost_days)
        return Program(
            row=await info.context.services.segments.set_lifecycle_thresholds(
                program_id, thresholds, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="Beyond the contract: recordEvents REJECTS events whose occurredAt is more than "
        f"`days` before now (1 to {MAX_EVENT_AGE_DAYS}; default {DEFAULT_MAX_EVENT_AGE_DAYS}, "
        f"about {round(DEFAULT_MAX_EVENT_AGE_DAYS / 365.25)} years)"
    )
    async def set_max_event_age(self, info: Info, days: int) -> Program:
        program_id = info.context.principal.program_id
        return Program(
            row=await info.context.services.programs.set_max_event_age(
                program_id, days, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="null: never; applies to points earned from now on (existing lots keep their "
        "expiry, also when turned off); afterDays 1 to 36500"
    )
    async def set_points_expiry(self, info: Info, after_days: int | None) -> Program:
        program_id = info.context.principal.program_id
        return Program(
            row=await info.context.services.programs.set_points_expiry(
                program_id, after_days, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="Beyond the contract: an admin's adjustPoints of more than `points` (absolute) "
        "needs a TOTP step-up (default 1000)"
    )
    async def set_adjustment_step_up(self, info: Info, points: int) -> Program:
        program_id = info.context.principal.program_id
        return Program(
            row=await info.context.services.programs.set_adjustment_step_up(
                program_id, points, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation
    async def set_earning_rule(self, info: Info, input: EarningRuleInput) -> EarningRule:
        program_id = info.context.principal.program_id
        spec = await info.context.services.programs.set_earning_rule(
            program_id,
            input.event_type,
            input.points_per_unit,
            input.fixed_points,
            actor=info.context.principal.operator,
        )
        return _rule(spec)
