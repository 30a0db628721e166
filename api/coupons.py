"""Coupon pools (marketers), and the till's validateCoupon / redeemCoupon (docs/promotions.md)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

from api.context import Info
from api.types.coupons import CouponImportResult, CouponPool, CouponRedemption, CouponValidation
from domain.coupons.pools import DiscountKind, PoolDraft
from domain.coupons.redemption import RedeemRequest


@strawberry.input(description="setCouponPool creates the pool or replaces its definition by key")
class CouponPoolInput:
    key: str = strawberry.field(description="[A-Za-z0-9_-]{1,64}")
    name: str
    discount_kind: DiscountKind
    discount_value: Decimal | None = strawberry.field(
        default=None, description="PERCENT: above 0, at most 100; AMOUNT: above 0; OTHER: not given"
    )
    description: str = strawberry.field(default="", description="Free text for members and staff")
    expires_at: datetime | None = strawberry.field(
        default=None, description="Codes issued expire then; or give validDays; neither: never"
    )
    valid_days: int | None = strawberry.field(
        default=None, description="1..3650 days after each code's issue"
    )

    def draft(self) -> PoolDraft:
        return PoolDraft(
            self.key,
            self.name,
            self.description,
            DiscountKind(self.discount_kind).value,
            self.discount_value,
            self.expires_at,
            self.valid_days,
        )


@strawberry.input(description="A code used at the till; a retry with the same externalId answers the same")
class RedeemCouponInput:
    code: str
    member_external_id: str
    external_id: str = strawberry.field(
        description="The till's id of this redemption (its idempotency key); the event is coupon:<externalId>"
    )
    amount: Decimal | None = strawberry.field(default=None, description="The basket, if known")
    occurred_at: datetime | None = strawberry.field(default=None, description="Default: now")

    def request(self) -> RedeemRequest:
        return RedeemRequest(
            self.code, self.member_external_id, self.external_id, self.amount, self.occurred_at
        )


@strawberry.type
class CouponQueries:
    @strawberry.field(description="The program's coupon pools by key, with their counts")
    async def coupon_pools(self, info: Info) -> list[CouponPool]:
        views = await info.context.services.coupons.pools(info.context.principal.program_id)
        return [CouponPool(view=v) for v in views]

    @strawberry.field(description="One pool; null when there is none")
    async def coupon_pool(self, info: Info, key: str) -> CouponPool | None:
        view = await info.context.services.coupons.pool(info.context.principal.program_id, key)
        return None if view is None else CouponPool(view=view)

    @strawberry.field(
        description="Whether the member may redeem the code now (read-only): valid, or the reason"
    )
    async def validate_coupon(self, info: Info, code: str, member_external_id: str) -> CouponValidation:
        result = await info.context.services.coupons.validate(
            info.context.principal.program_id, code, member_external_id
        )
        return CouponValidation(result=result)


@strawberry.type
class CouponMutations:
    @strawberry.mutation(description="Create or replace a coupon pool by key")
    async def set_coupon_pool(self, info: Info, input: CouponPoolInput) -> CouponPool:
        view = await info.context.services.coupons.set_pool(
            info.context.principal.program_id, input.draft(), actor=info.context.principal.operator
        )
        return CouponPool(view=view)

    @strawberry.mutation(
        description="Add count (1..100000) codes drawn from the pattern: # a digit, ? a letter (no I, L, O), "
        "anything else as written, e.g. WELCOME-####-????. The pattern must make 100 codes per code asked"
    )
    async def generate_coupons(self, info: Info, pool_key: str, pattern: str, count: int) -> CouponPool:
        view = await info.context.services.coupons.generate(
            info.context.principal.program_id, pool_key, pattern, count, actor=info.context.principal.operator
        )
        return CouponPool(view=view)

    @strawberry.mutation(
        description="Add the codes of a CSV text: one `code` or `code,expiresAt` per line (an optional "
        "header); each bad line is reported, the good ones are stored"
    )
    async def import_coupons(self, info: Info, pool_key: str, csv: str) -> CouponImportResult:
        report = await info.context.services.coupons.import_codes(
            info.context.principal.program_id, pool_key, csv, actor=info.context.principal.operator
        )
        return CouponImportResult(report=report)

    @strawberry.mutation(
        description="Use a code once at the till. Refused with extensions.code COUPON_USED, COUPON_EXPIRED, "
        "COUPON_UNKNOWN, COUPON_FOREIGN or COUPON_BLOCKED (the fraud audit blocked it)"
    )
    async def redeem_coupon(self, info: Info, input: RedeemCouponInput) -> CouponRedemption:
        result = await info.context.services.coupons.redeem(
            info.context.principal.program_id, input.request()
        )
        return CouponRedemption(result=result)
