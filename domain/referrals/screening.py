"""The referral fraud screen, as a port fraud/ implements (fraud/referrals.py).

It judges each new referral at signup, inside the upsert's transaction, with the referrers'
rows locked (so the velocity count per referrer cannot be raced): ALLOW, REVIEW (the referral
is HELD: nothing is paid until a reviewer decides) or BLOCK (no reward, ever). Findings of
rules in shadow mode are kept on the referral and change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from domain.audit import ALLOW, AuditOutcome


@dataclass(frozen=True)
class ReferralCandidate:
    """A new member signing up with a referrer's code (the member's row exists, unflushed ids not)."""

    referrer_id: int
    referred_id: int
    #: The new member's attributes as given (email, phone, deviceId are read).
    attributes: Mapping[str, Any]
    at: datetime


class ReferralScreen(Protocol):
    async def screen(
        self, session: AsyncSession, program_id: int, candidates: Sequence[ReferralCandidate]
    ) -> list[AuditOutcome]:
        """One outcome per candidate, in order; a candidate sees the ones before it (velocity)."""
        ...


class AllowAllReferrals:
    """No referral rules (a service built without fraud/): every referral is allowed."""

    async def screen(
        self, session: AsyncSession, program_id: int, candidates: Sequence[ReferralCandidate]
    ) -> list[AuditOutcome]:
        return [ALLOW for _ in candidates]
