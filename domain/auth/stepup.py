"""Step-up: sensitive admin decisions need a recent TOTP check (login or verifyTotp).

Declared once here and used by the review queue (every decision) and by adjustPoints
(an admin's adjustment above the program's threshold).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.auth.principal import Principal
from domain.errors import Forbidden

#: A sensitive decision needs a TOTP check this recent.
STEP_UP_WINDOW = timedelta(minutes=10)


def require_step_up(principal: Principal, now: datetime, what: str = "this decision") -> None:
    """FORBIDDEN (reason STEP_UP_REQUIRED) unless the caller checked a TOTP code in the last 10 minutes."""
    verified = principal.totp_verified_at
    if verified is None or now - verified > STEP_UP_WINDOW:
        raise Forbidden(
            f"{what} needs a TOTP check within the last 10 minutes: call verifyTotp first",
            reason="STEP_UP_REQUIRED",
        )
