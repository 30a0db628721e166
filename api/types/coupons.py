"""Coupon, CouponPool and the till's answers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import strawberry

from domain.coupons.pools import DiscountKind
from domain.coupons.reads import CouponView
from domain.coupons.service import ImportReport, PoolView, Redemption, Validation
from domain.coupons.status import CouponStatus as DomainCouponStatus
from domain.enums import EventStatus


@strawberry.enum(description="A code as its member sees it")
class CouponStatus(StrEnum):
    ISSUED = "ISSUED"
    REDEEMED = "REDEEMED"
    EXPIRED = "EXPIRED"


strawberry.enum(
    DiscountKind,
    name="CouponDiscountKind",
    description="PERCENT off, AMOUNT off (the program's currency), or OTHER (the description says)",
)


@strawberry.enum(description="How a redemption went: REDEEMED, or HELD_FOR_REVIEW by the fraud audit")
class CouponRedemptionStatus(StrEnum):
    REDEEMED = "REDEEMED"
    HELD_FOR_REVIEW = "HELD_FOR_REVIEW"


@strawberry.type(description="A coupon code issued to a member")
class Coupon:
    view: strawberry.Private[CouponView]

    @strawberry.field(description="Upper case; tills may send it in any case")
    def code(self) -> str:
        return self.view.code

    @strawberry.field(description="The pool's key")
    def pool_key(self) -> str:
        return self.view.pool_key

    @strawberry.field
    def pool_name(self) -> str:
        return self.view.pool_name

    @strawberry.field(description="EXPIRED: issued, unused and past expiresAt")
    def status(self) -> CouponStatus:
        status = self.view.status
        shown = DomainCouponStatus.ISSUED if status is DomainCouponStatus.VOID else status
        return CouponStatus(shown.value)

    @strawberry.field
    def issued_at(self) -> datetime | None:
        return self.view.issued_at

    @strawberry.field(description="Null: never expires")
    def expires_at(self) -> datetime | None:
        return self.view.expires_at

    @strawberry.field
    def redeemed_at(self) -> datetime | None:
        return self.view.redeemed_at


@strawberry.type(description="A program's codes of one offer, generated or imported, issued to members")
class CouponPool:
    view: strawberry.Private[PoolView]

    @strawberry.field
    def key(self) -> str:
        return self.view.pool.key

    @strawberry.field
    def name(self) -> str:
        return self.view.pool.name

    @strawberry.field(description="Free text for members and staff")
    def description(self) -> str:
        return self.view.pool.description

    @strawberry.field
    def discount_kind(self) -> DiscountKind:
        return DiscountKind(self.view.pool.discount_kind)

    @strawberry.field(description="PERCENT: 0-100; AMOUNT: in the program's currency; OTHER: null")
    def discount_value(self) -> Decimal | None:
        return self.view.pool.discount_value

    @strawberry.field(description="Codes issued expire then (unless validDays or their own expiry)")
    def expires_at(self) -> datetime | None:
        return self.view.pool.expires_at

    @strawberry.field(description="Codes issued expire this many days after issue")
    def valid_days(self) -> int | None:
        return self.view.pool.valid_days

    @strawberry.field(description="Codes not issued yet")
    def available(self) -> int:
        return self.view.counts.available

    @strawberry.field(description="Codes issued and not redeemed (expired ones included)")
    def issued(self) -> int:
        return self.view.counts.issued

    @strawberry.field
    def redeemed(self) -> int:
        return self.view.counts.redeemed

    @strawberry.field
    def created_at(self) -> datetime:
        return self.view.pool.created_at

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.view.pool.updated_at


@strawberry.type(description="A line of an import that was not stored")
class CouponImportRejection:
    line: int = strawberry.field(description="1-based")
    message: str


@strawberry.type(description="What an import stored and which lines it refused")
class CouponImportResult:
    report: strawberry.Private[ImportReport]

    @strawberry.field
    def pool(self) -> CouponPool:
        return CouponPool(view=self.report.pool)

    @strawberry.field(description="Codes stored")
    def imported(self) -> int:
        return self.report.imported

    @strawberry.field(description="Each refused line, in file order")
    def rejected(self) -> list[CouponImportRejection]:
        return [CouponImportRejection(line=r.line, message=r.message) for r in self.report.rejected]


@strawberry.type(description="validateCoupon's answer; nothing changes")
class CouponValidation:
    result: strawberry.Private[Validation]

    @strawberry.field
    def valid(self) -> bool:
        return self.result.valid

    @strawberry.field(
        description="Why not: COUPON_USED, COUPON_EXPIRED, COUPON_UNKNOWN or COUPON_FOREIGN (the codes "
        "redeemCoupon refuses with)"
    )
    def reason(self) -> str | None:
        return self.result.reason

    @strawberry.field
    def message(self) -> str | None:
        return self.result.message

    @strawberry.field(description="The code, when it was issued to this member")
    def coupon(self) -> Coupon | None:
        return None if self.result.coupon is None else Coupon(view=self.result.coupon)


@strawberry.type(description="A code used at the till")
class CouponRedemption:
    result: strawberry.Private[Redemption]

    @strawberry.field
    def coupon(self) -> Coupon:
        return Coupon(view=self.result.coupon)

    @strawberry.field(description="HELD_FOR_REVIEW: the code is used; its event waits for a fraud reviewer")
    def status(self) -> CouponRedemptionStatus:
        held = self.result.status == EventStatus.HELD_FOR_REVIEW
        return CouponRedemptionStatus.HELD_FOR_REVIEW if held else CouponRedemptionStatus.REDEEMED

    @strawberry.field(description="The coupon_redeemed event's externalId: coupon:<externalId>")
    def event_external_id(self) -> str:
        return self.result.event_external_id

    @strawberry.field(description="True when this answers a retry of an earlier request")
    def replayed(self) -> bool:
        return self.result.replayed
