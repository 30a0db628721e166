"""The fraud review queue: held accruals and the admin decisions on them (see docs/fraud.md)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from api.types.ledger import LedgerEntry, ledger_entry
from domain.enums import Verdict
from domain.errors import InvalidInput
from fraud.review import AccrualReview as Review
from fraud.settings import RuleView

strawberry.enum(Verdict)


@strawberry.type
class FraudFinding:
    rule: str
    verdict: Verdict
    detail: str


@strawberry.type
class AccrualReview:
    id: strawberry.ID
    member_external_id: str
    event_external_id: str
    points: int
    findings: list[FraudFinding]
    created_at: datetime


@strawberry.type(description="Beyond the contract. One fraud rule as a program has configured it")
class FraudRule:
    name: str
    summary: str
    enabled: bool
    shadow: bool = strawberry.field(description="findings are recorded but never hold or block")
    params: JSON
    defaults: JSON
    updated_by: str | None


def _rule(view: RuleView) -> FraudRule:
    return FraudRule(
        name=view.name,
        summary=view.summary,
        enabled=view.enabled,
        shadow=view.shadow,
        params=cast(JSON, dict(view.params)),
        defaults=cast(JSON, dict(view.defaults)),
        updated_by=view.updated_by,
    )


def _review(item: Review) -> AccrualReview:
    return AccrualReview(
        id=strawberry.ID(str(item.entry_id)),
        member_external_id=item.member_external_id,
        event_external_id=item.event_external_id,
        points=item.points,
        findings=[FraudFinding(rule=f.rule, verdict=f.verdict, detail=f.detail) for f in item.findings],
        created_at=item.created_at,
    )


def _entry_id(id: strawberry.ID) -> int:
    if not str(id).isdigit():
        raise InvalidInput(f"id: {str(id)[:40]!r} is not an accrual review id")
    return int(id)


@strawberry.type
class FraudQueries:
    @strawberry.field(description="Admin: held accruals (PENDING_REVIEW), oldest first; first 1..500")
    async def review_queue(self, info: Info, first: int | None = 50) -> list[AccrualReview]:
        program_id = info.context.principal.program_id
        items = await info.context.services.review.review_queue(program_id, 50 if first is None else first)
        return [_review(item) for item in items]

    @strawberry.field(description="Beyond the contract. The program's fraud rules and their configuration")
    async def fraud_rules(self, info: Info) -> list[FraudRule]:
        program_id = info.context.principal.program_id
        return [_rule(view) for view in await info.context.services.fraud_settings.rules(program_id)]


@strawberry.type
class FraudMutations:
    @strawberry.mutation(
        description="Admin: post a held accrual and run the rest of the pipeline as of now. "
        "Needs a TOTP check within 10 minutes (FORBIDDEN, reason STEP_UP_REQUIRED); "
        "a second decision is CONFLICT."
    )
    async def approve_accrual(self, info: Info, id: strawberry.ID) -> LedgerEntry:
        entry = await info.context.services.review.approve(info.context.principal, _entry_id(id))
        return ledger_entry(entry, entry.idempotency_key.removeprefix("event:"))

    @strawberry.mutation(
        description="Admin: reject a held accrual; only the pending points move. Step-up as approveAccrual."
    )
    async def reject_accrual(self, info: Info, id: strawberry.ID, reason: str) -> LedgerEntry:
        entry = await info.context.services.review.reject(info.context.principal, _entry_id(id), reason)
        return ledger_entry(entry, entry.idempotency_key.removeprefix("event:"))

    @strawberry.mutation(
        description="Beyond the contract. Turn a fraud rule on or off, into or out of shadow mode, "
        "or change its thresholds (params: only the keys given change). Applies from the next batch."
    )
    async def set_fraud_rule(
        self,
        info: Info,
        rule: str,
        enabled: bool | None = None,
        shadow: bool | None = None,
        params: JSON | None = None,
    ) -> FraudRule:
        principal = info.context.principal
        program_id = principal.program_id
        view = await info.context.services.fraud_settings.set_rule(
            program_id, rule, enabled=enabled, shadow=shadow, params=params, actor=principal.operator
        )
        return _rule(view)

    @strawberry.mutation(
        description="Beyond the contract. Admin step-up: check a fresh TOTP code (single use); "
        "approveAccrual/rejectAccrual then work for 10 minutes"
    )
    async def verify_totp(self, info: Info, totp_code: str) -> bool:
        await info.context.services.auth.verify_totp(info.context.principal, totp_code)
        return True
