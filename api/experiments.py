"""Queries and mutations on A/B tests (beyond the contract): docs/analytics.md, "A/B tests"."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.types.experiments import (
    Experiment,
    ExperimentExposure,
    ExperimentExposureSummary,
    ExperimentVariantResult,
)
from domain.auth.principal import PrincipalKind
from domain.enums import Channel
from domain.experiments.definitions import Action, ActionType, ExperimentDraft, Variant


@strawberry.input(description="Give only the fields the type reads")
class ExperimentActionInput:
    type: ActionType
    points: int | None = strawberry.field(default=None, description="BONUS_POINTS: 1..1000000000")
    template: str | None = strawberry.field(default=None, description="MESSAGE: [a-z][a-z0-9_.-]{0,63}")
    channel: Channel | None = strawberry.field(
        default=None,
        description="MESSAGE: the channel to prefer if the member accepted it; else the member's first "
        "accepted channel. A member who accepted none gets nothing (SUPPRESSED)",
    )
    reward_key: str | None = strawberry.field(default=None, description="REWARD_OFFER: an active reward")
    coupon_pool_key: str | None = strawberry.field(
        default=None, description="ISSUE_COUPON: the coupon pool one code is issued from at exposure"
    )

    def action(self) -> Action:
        channel = None if self.channel is None else Channel(self.channel).value
        return Action(
            ActionType(self.type).value,
            self.points,
            self.template,
            channel,
            self.reward_key,
            self.coupon_pool_key,
        )


@strawberry.input
class ExperimentVariantInput:
    key: str = strawberry.field(description='[A-Za-z0-9_-]{1,64}, unique, not "holdout"')
    weight: int = strawberry.field(description="1..1000, relative to the other variants")
    action: ExperimentActionInput


@strawberry.input
class ExperimentInput:
    key: str = strawberry.field(description="[A-Za-z0-9_-]{1,64}")
    name: str
    segment_key: str = strawberry.field(description="The target segment: its current members are exposed")
    goal_event_type: str = strawberry.field(description='e.g. "purchase"')
    conversion_days: int = strawberry.field(description="1..365: the conversion window after exposure")
    variants: list[ExperimentVariantInput] = strawberry.field(description="1..10")
    holdout_percent: int = strawberry.field(default=0, description="0..50: a control group that gets nothing")
    control_variant: str | None = strawberry.field(
        default=None, description='A variant\'s key or "holdout"; default the holdout if any, else the first'
    )

    def draft(self) -> ExperimentDraft:
        return ExperimentDraft(
            self.key,
            self.name,
            self.segment_key,
            self.goal_event_type,
            self.conversion_days,
            self.holdout_percent,
            tuple(Variant(v.key, v.weight, v.action.action()) for v in self.variants),
            self.control_variant,
        )


@strawberry.type
class ExperimentQueries:
    @strawberry.field(description="An experiment by key; null when unknown")
    async def experiment(self, info: Info, key: str) -> Experiment | None:
        program_id = info.context.principal.program_id
        row = await info.context.services.experiments.experiment(program_id, key)
        return None if row is None else Experiment.of(row)

    @strawberry.field(description="The program's experiments by key")
    async def experiments(self, info: Info) -> list[Experiment]:
        program_id = info.context.principal.program_id
        return [Experiment.of(row) for row in await info.context.services.experiments.experiments(program_id)]

    @strawberry.field(description="Per arm: the variants in their order, then the holdout")
    async def experiment_results(self, info: Info, key: str) -> list[ExperimentVariantResult]:
        program_id = info.context.principal.program_id
        results = await info.context.services.experiments.results(program_id, key)
        return [ExperimentVariantResult.of(r) for r in results]


@strawberry.type
class ExperimentMutations:
    @strawberry.mutation(description="Define a new experiment (CONFLICT when the key exists)")
    async def create_experiment(self, info: Info, input: ExperimentInput) -> Experiment:
        program_id = info.context.principal.program_id
        return Experiment.of(
            await info.context.services.experiments.create_experiment(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="Replace an experiment's definition; exposed members keep their arm, and a variant "
        "with exposures cannot be removed"
    )
    async def update_experiment(self, info: Info, input: ExperimentInput) -> Experiment:
        program_id = info.context.principal.program_id
        return Experiment.of(
            await info.context.services.experiments.update_experiment(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Expose every current member of the target segment not yet exposed")
    async def expose_experiment(self, info: Info, key: str) -> ExperimentExposureSummary:
        program_id = info.context.principal.program_id
        return ExperimentExposureSummary.of(
            await info.context.services.experiments.expose_segment(program_id, key)
        )

    @strawberry.mutation(
        description="The member's arm, recorded and acted on at its first exposure; null when the member was "
        "never exposed and is not in the target segment. A member token may expose only itself; others "
        "need members:write"
    )
    async def expose_experiment_member(
        self, info: Info, key: str, member_external_id: str
    ) -> ExperimentExposure | None:
        principal = info.context.principal
        as_member = principal.subject_id if principal.kind == PrincipalKind.MEMBER else None
        exposure = await info.context.services.experiments.expose_member(
            principal.program_id, key, member_external_id, as_member=as_member
        )
        return None if exposure is None else ExperimentExposure.of(exposure)
