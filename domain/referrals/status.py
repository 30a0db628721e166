"""The life of a referral (docs/promotions.md, "Referrals")."""

from __future__ import annotations

from enum import StrEnum


class ReferralStatus(StrEnum):
    #: Joined; waiting for the referred member's first accepted qualifying event.
    PENDING = "PENDING"
    #: The qualifying event was accepted; the referrer is paid at `dueAt` unless it is refunded.
    WAITING = "WAITING"
    #: The referrer was paid and `referral_completed` recorded for it.
    COMPLETED = "COMPLETED"
    #: The qualifying event was refunded (or reversed) within the wait, or the referrer was erased.
    CANCELLED = "CANCELLED"
    #: A referral fraud rule asked for review: nothing is paid until a reviewer decides.
    HELD = "HELD"
    #: A referral fraud rule (or a reviewer) refused it: no reward, ever.
    BLOCKED = "BLOCKED"


#: Where a referral ends.
FINAL = frozenset({ReferralStatus.COMPLETED, ReferralStatus.CANCELLED, ReferralStatus.BLOCKED})
#: Where a referral can still go on.
OPEN = frozenset({ReferralStatus.PENDING, ReferralStatus.WAITING, ReferralStatus.HELD})
