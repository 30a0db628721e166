"""A code's status, stored and as a member or till sees it (pure)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from domain.models import CouponCode


class CouponStatus(StrEnum):
    #: In its pool, not issued yet (never shown to members)
    AVAILABLE = "AVAILABLE"
    ISSUED = "ISSUED"
    REDEEMED = "REDEEMED"
    #: Derived, never stored: issued, unused, and past its expiry
    EXPIRED = "EXPIRED"
    #: Its member was erased before using it
    VOID = "VOID"


def status_at(code: CouponCode, now: datetime) -> CouponStatus:
    """The status as of `now`: an issued code past its expiry is EXPIRED."""
    status = CouponStatus(code.status)
    if status is CouponStatus.ISSUED and code.expires_at is not None and code.expires_at <= now:
        return CouponStatus.EXPIRED
    return status
