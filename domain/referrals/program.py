"""A program's referral settings (`setReferralProgram`): the rewards, the wait and the qualifying event.

There is no refund window elsewhere in the engine (a refund may come at any time, see
domain/events/refunds.py), so the wait is the program's own setting: `waitDays` after the
referred member's first accepted qualifying event, the referrer is paid unless that event was
refunded (or reversed) meanwhile. The velocity limit per referrer is a fraud rule
(`referral_velocity`, fraud/config.py), configured and shadowed like the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput
from domain.models import ReferralProgram

#: The most points one referral reward may carry (either side).
MAX_POINTS = 1_000_000
#: The longest wait (about a year: longer than any refund policy).
MAX_WAIT_DAYS = 366
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class ReferralSettings:
    enabled: bool
    join_points: int
    referrer_points: int
    wait_days: int
    event_type: str = "purchase"

    def checked(self) -> ReferralSettings:
        """Itself, or BAD_USER_INPUT naming the first field out of range."""
        for name, points in (("joinPoints", self.join_points), ("referrerPoints", self.referrer_points)):
            if not 0 <= points <= MAX_POINTS:
                raise InvalidInput(f"{name}: must be between 0 and {MAX_POINTS}, got {points}")
        if not 0 <= self.wait_days <= MAX_WAIT_DAYS:
            raise InvalidInput(f"waitDays: must be between 0 and {MAX_WAIT_DAYS}, got {self.wait_days}")
        if not _TYPE.fullmatch(self.event_type):
            raise InvalidInput(f"eventType: {self.event_type[:70]!r} must match [a-z][a-z0-9_]{{0,63}}")
        return self

    def audited(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "joinPoints": self.join_points,
            "referrerPoints": self.referrer_points,
            "waitDays": self.wait_days,
            "eventType": self.event_type,
        }

    @classmethod
    def of(cls, row: ReferralProgram) -> ReferralSettings:
        return cls(row.enabled, int(row.join_points), int(row.referrer_points), row.wait_days, row.event_type)


async def load_referral_settings(session: AsyncSession, program_id: int) -> ReferralSettings | None:
    """The program's settings; None when it never set any."""
    row = await session.get(ReferralProgram, program_id)
    return None if row is None else ReferralSettings.of(row)


async def active_settings(session: AsyncSession, program_id: int) -> ReferralSettings | None:
    """The settings when referrals are on in the program, else None."""
    settings = await load_referral_settings(session, program_id)
    return settings if settings is not None and settings.enabled else None
