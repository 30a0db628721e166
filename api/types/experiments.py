"""Experiment, its variants and per-arm results: A/B tests on a segment's members."""

from __future__ import annotations

from datetime import datetime

import strawberry

from domain import models
from domain.enums import Channel
from domain.experiments.definitions import Action, ActionType, Variant
from domain.experiments.results import ArmResult
from domain.experiments.service import Exposure, SegmentExposure

strawberry.enum(
    ActionType, name="ExperimentActionType", description="What a variant does to a member at exposure"
)


@strawberry.type(description="A variant's action; the fields its type does not read are null")
class ExperimentAction:
    type: ActionType
    points: int | None = strawberry.field(description="BONUS_POINTS: posted once per member")
    template: str | None = strawberry.field(description="MESSAGE: the template sent")
    channel: Channel | None = strawberry.field(
        description="MESSAGE: used when the member lists no channel (else IN_APP)"
    )
    reward_key: str | None = strawberry.field(description="REWARD_OFFER: the reward offered")
    coupon_pool_key: str | None = strawberry.field(description="ISSUE_COUPON: the pool a code is issued from")

    @classmethod
    def of(cls, action: Action) -> ExperimentAction:
        channel = Channel(action.channel) if action.channel else None
        return cls(
            type=ActionType(action.type),
            points=action.points,
            template=action.template,
            channel=channel,
            reward_key=action.reward_key,
            coupon_pool_key=action.coupon_pool_key,
        )


@strawberry.type
class ExperimentVariant:
    key: str
    weight: int = strawberry.field(description="Relative to the other variants' weights")
    action: ExperimentAction


@strawberry.type(
    description="An A/B test on a segment's members: deterministic, sticky assignment at first exposure"
)
class Experiment:
    key: str
    name: str
    segment_key: str
    goal_event_type: str
    conversion_days: int
    holdout_percent: int = strawberry.field(description="Share of members in the holdout, which gets nothing")
    control_variant: str = strawberry.field(description='A variant\'s key, or "holdout"')
    variants: list[ExperimentVariant]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: models.Experiment) -> Experiment:
        variants = [Variant.of(stored) for stored in row.variants]
        return cls(
            key=row.key,
            name=row.name,
            segment_key=row.segment_key,
            goal_event_type=row.goal_event_type,
            conversion_days=row.conversion_days,
            holdout_percent=row.holdout_percent,
            control_variant=row.control,
            variants=[
                ExperimentVariant(key=v.key, weight=v.weight, action=ExperimentAction.of(v.action))
                for v in variants
            ],
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(
    description="One arm of an experiment (a variant or the holdout). Uplift is the absolute difference of "
    "conversion rates with the control; the CI is the unpooled 95 % Wald interval of that difference and "
    "pValue the two-sided two-proportion z-test (pooled). Null for the control itself and where undefined."
)
class ExperimentVariantResult:
    variant: str
    is_control: bool
    exposed: int
    converted: int = strawberry.field(description="Exposed members with a goal event within conversionDays")
    conversion_rate: float | None
    uplift_vs_control: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None

    @classmethod
    def of(cls, result: ArmResult) -> ExperimentVariantResult:
        return cls(
            variant=result.variant,
            is_control=result.is_control,
            exposed=result.exposed,
            converted=result.converted,
            conversion_rate=result.conversion_rate,
            uplift_vs_control=result.uplift_vs_control,
            ci_low=result.ci_low,
            ci_high=result.ci_high,
            p_value=result.p_value,
        )


@strawberry.type(description="A member's arm in an experiment")
class ExperimentExposure:
    experiment_key: str
    member_external_id: str
    variant: str = strawberry.field(description='A variant\'s key, or "holdout"')
    exposed_at: datetime = strawberry.field(description="The first exposure; never changes")
    offered_reward_key: str | None
    new: bool = strawberry.field(description="This call recorded the exposure (and ran the action)")

    @classmethod
    def of(cls, exposure: Exposure) -> ExperimentExposure:
        return cls(
            experiment_key=exposure.experiment_key,
            member_external_id=exposure.member_external_id,
            variant=exposure.variant,
            exposed_at=exposure.exposed_at,
            offered_reward_key=exposure.offered_reward_key,
            new=exposure.new,
        )


@strawberry.type
class ExperimentExposureSummary:
    newly_exposed: int
    total_exposed: int

    @classmethod
    def of(cls, summary: SegmentExposure) -> ExperimentExposureSummary:
        return cls(newly_exposed=summary.newly_exposed, total_exposed=summary.total_exposed)
