"""What a till may do with a code: the refusals, in the order they are decided (pure).

An unknown code, a code of another program and a code not issued yet are all
COUPON_UNKNOWN, so that a till cannot probe which codes exist elsewhere. A code issued
to another member of the program is COUPON_FOREIGN, decided before USED and EXPIRED so
that it tells the wrong member nothing more about the code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain.coupons.status import CouponStatus, status_at
from domain.errors import CouponRefused, InvalidInput
from domain.models import CouponCode

#: The redemption's event externalId is this prefix and the till's externalId.
EVENT_PREFIX = "coupon:"
MAX_EXTERNAL_ID = 128 - len(EVENT_PREFIX)


@dataclass(frozen=True)
class RedeemRequest:
    code: str
    member_external_id: str
    #: The till's id of this redemption: a retry with it answers the first result
    external_id: str
    amount: Decimal | None = None
    occurred_at: datetime | None = None

    def check(self) -> None:
        if not self.code.strip():
            raise InvalidInput("code: must not be empty")
        if not self.external_id.strip():
            raise InvalidInput("externalId: must not be empty")
        if len(self.external_id) > MAX_EXTERNAL_ID:
            raise InvalidInput(f"externalId: longer than {MAX_EXTERNAL_ID} characters")

    @property
    def event_external_id(self) -> str:
        return EVENT_PREFIX + self.external_id


def refusal(
    coupon: CouponCode | None, member_id: int | None, now: datetime, shown: str
) -> CouponRefused | None:
    """Why `member_id` may not redeem `coupon` now; None when it may."""
    if coupon is None or coupon.status in (CouponStatus.AVAILABLE.value, CouponStatus.VOID.value):
        return CouponRefused("COUPON_UNKNOWN", f"code: no coupon {shown[:70]!r} was issued in this program")
    if coupon.member_id != member_id:
        return CouponRefused("COUPON_FOREIGN", f"code: coupon {shown[:70]!r} was issued to another member")
    status = status_at(coupon, now)
    if status is CouponStatus.REDEEMED:
        assert coupon.redeemed_at is not None
        return CouponRefused(
            "COUPON_USED",
            f"code: coupon {coupon.code} was already redeemed at {coupon.redeemed_at.isoformat()}",
            redeemedAt=coupon.redeemed_at.isoformat(),
        )
    if status is CouponStatus.EXPIRED:
        assert coupon.expires_at is not None
        return CouponRefused(
            "COUPON_EXPIRED",
            f"code: coupon {coupon.code} expired at {coupon.expires_at.isoformat()}",
            expiredAt=coupon.expires_at.isoformat(),
        )
    return None


def code_hash(program_id: int, code: str) -> str:
    """What the redemption event keeps instead of the code (a code is a bearer secret)."""
    return hashlib.sha256(f"{program_id}:{code}".encode()).hexdigest()[:16]
