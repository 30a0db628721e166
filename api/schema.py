"""The served schema: a superset of ../shared/api-contract.graphql, with limits on by default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.execution.executor import Executor
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.extensions.context import StreamResultContextManager
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext
from strawberry.types.execution import StreamExecutionResult
from strawberry.utils.await_maybe import await_maybe

from api.analytics import AnalyticsQueries
from api.audit import AuditQueries
from api.auth import AuthMutations
from api.authorization import authorize_root_fields
from api.campaigns import CampaignMutations, CampaignQueries
from api.challenges import ChallengeMutations, ChallengeQueries
from api.coupons import CouponMutations, CouponQueries
from api.document_cache import SmallQueryParserCache
from api.errors import ErrorCodes
from api.events import EventMutations
from api.experiments import ExperimentMutations, ExperimentQueries
from api.fanout import shared_events
from api.fraud import FraudMutations, FraudQueries
from api.governance import GovernanceMutations, GovernanceQueries
from api.inputs import InputGuard
from api.introspection import caller_executor, caller_validation
from api.leaderboards import LeaderboardMutations, LeaderboardQueries
from api.limits import cost_limit_rule
from api.live import LiveSubscriptions
from api.members import MemberMutations, MemberQueries
from api.metrics import OperationTimer
from api.operations import RequireOperationName
from api.points import PointsMutations
from api.predict import PredictMutations, PredictQueries
from api.programs import ProgramMutations, ProgramQueries
from api.promotions import PromotionMutations, PromotionQueries
from api.referrals import ReferralMutations, ReferralQueries
from api.rewards import RewardMutations, RewardQueries
from api.scalars import DateTimeScalar, DecimalScalar
from api.segments import SegmentMutations, SegmentQueries
from api.tiers import TierMutations, TierQueries
from domain.errors import DomainError
from domain.settings import Settings
from domain.transient import is_transient

EventBuilder = Callable[[Executor[Any], object], Executor[Any]]


def _per_event_memo(build: EventBuilder) -> EventBuilder:
    """graphql-core 3.3 gives each subscription event a shallow copy of the executor that shares
    the memo of collected sub-fields, keyed by the id of a list built anew per event: one entry
    per delivered change, kept for the subscription's life (a leak found by bench/realtime.py).
    Each event gets its own memo instead; tests/test_schema.py checks it."""

    def build_per_event_executor(self: Executor[Any], payload: object) -> Executor[Any]:
        executor = build(self, payload)
        executor._relevant_sub_fields = {}
        return executor

    return build_per_event_executor


if not getattr(Executor.build_per_event_executor, "_loyalty_per_event_memo", False):
    Executor.build_per_event_executor = _per_event_memo(Executor.build_per_event_executor)  # type: ignore[method-assign,assignment]
    Executor.build_per_event_executor._loyalty_per_event_memo = True  # type: ignore[attr-defined]


@strawberry.type
class Query(
    MemberQueries,
    ProgramQueries,
    SegmentQueries,
    CampaignQueries,
    ChallengeQueries,
    LeaderboardQueries,
    RewardQueries,
    CouponQueries,
    PromotionQueries,
    FraudQueries,
    AnalyticsQueries,
    PredictQueries,
    ExperimentQueries,
    TierQueries,
    AuditQueries,
    GovernanceQueries,
    ReferralQueries,
):
    pass


@strawberry.type
class Mutation(
    AuthMutations,
    MemberMutations,
    ProgramMutations,
    EventMutations,
    PointsMutations,
    SegmentMutations,
    CampaignMutations,
    ChallengeMutations,
    LeaderboardMutations,
    RewardMutations,
    CouponMutations,
    PromotionMutations,
    FraudMutations,
    PredictMutations,
    ExperimentMutations,
    TierMutations,
    GovernanceMutations,
    ReferralMutations,
):
    pass


@strawberry.type
class Subscription(LiveSubscriptions):
    pass


authorize_root_fields(Query, Mutation, Subscription)


class PerResultHooks(SchemaExtensionsRunner):
    """strawberry's runner, with the extensions that act on each result (`on_stream_result`,
    `get_results`) picked once per operation instead of once per result: a live subscription
    asks for them at every change it delivers, and only ErrorCodes has a stream hook and none of
    ours has results, so the per-result work no longer grows with the list of extensions."""

    def __init__(self, execution_context: ExecutionContext, extensions: list[SchemaExtension]) -> None:
        super().__init__(execution_context, extensions)
        self._streaming = [e for e in self.extensions if _overrides(e, "on_stream_result")]
        self._reporting = [e for e in self.extensions if _overrides(e, "get_results")]

    def on_stream_result(self, result: StreamExecutionResult) -> StreamResultContextManager:
        return StreamResultContextManager(self._streaming, result)

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension in self._reporting:
            data.update(await await_maybe(extension.get_results()))
        data.update(ctx.extensions_results)
        return data


def _overrides(extension: SchemaExtension, hook: str) -> bool:
    return getattr(type(extension), hook) is not getattr(SchemaExtension, hook)


class LoyaltySchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return PerResultHooks(execution_context, extensions)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only unexpected errors: expected ones are answers, not incidents."""
        unexpected = [
            e
            for e in errors
            if e.original_error is not None
            and not isinstance(e.original_error, (DomainError, GraphQLError))
            and not is_transient(e.original_error)  # api/errors.py logs those as warnings
        ]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # The limit rules are classes built once: the validation cache is keyed by the rules too, so
    # rules built per request (QueryDepthLimiter's own factory does) would never hit it.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_query_aliases).validation_rules,
        cost_limit_rule(settings.max_query_cost),
    ]
    # Factories, not instances: one extension object per request (parse/validation caches are shared).
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        ErrorCodes,  # first: sees every other extension's errors
        OperationTimer,
        InputGuard,
        partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
        SmallQueryParserCache,  # cached by text, small queries only
        RequireOperationName,
        caller_validation(settings.introspection),  # cached; introspection and suggestions per caller
        partial(AddValidationRules, limit_rules),
    ]
    return LoyaltySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        # a live change's payload executed once per process and selection (api/fanout.py)
        execution_context_class=shared_events(caller_executor(settings.introspection)),
        scalar_overrides={Decimal: DecimalScalar, datetime: DateTimeScalar},
    )


def schema_sdl() -> str:
    return build_schema().as_str()
