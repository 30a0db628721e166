"""Lifecycle stages of DESIGN.md (NEW, ACTIVE, AT_RISK, LOST), evaluated live as of `now`. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.enums import LifecycleStage
from domain.errors import InvalidInput

DAY = timedelta(days=1)

_SETTINGS = {
    "new_days": "lifecycleNewDays",
    "at_risk_days": "lifecycleAtRiskDays",
    "lost_days": "lifecycleLostDays",
}


@dataclass(frozen=True)
class LifecycleThresholds:
    """Per program: NEW within `new_days` of joining; AT_RISK from `at_risk_days` without a purchase."""

    new_days: int = 30
    at_risk_days: int = 30
    lost_days: int = 90

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> LifecycleThresholds:
        values = {}
        for name, key in _SETTINGS.items():
            value = settings.get(key, getattr(cls(), name))
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 3650:
                raise InvalidInput(f"settings.{key}: expected a whole number of days from 1 to 3650")
            values[name] = value
        thresholds = cls(**values)
        if thresholds.at_risk_days > thresholds.lost_days:
            raise InvalidInput("settings.lifecycleAtRiskDays: must not exceed lifecycleLostDays")
        return thresholds

    def to_settings(self) -> dict[str, int]:
        return {key: getattr(self, name) for name, key in _SETTINGS.items()}


def lifecycle_stage(
    joined_at: datetime,
    purchase_count: int,
    last_purchase_at: datetime | None,
    now: datetime,
    thresholds: LifecycleThresholds,
) -> LifecycleStage:
    """A member's stage at `now` (DESIGN.md); the compiled SQL in `compile.py` must agree with it."""
    if now - joined_at < thresholds.new_days * DAY and purchase_count < 2:
        return LifecycleStage.NEW
    if last_purchase_at is None:
        return LifecycleStage.LOST
    if now - last_purchase_at < thresholds.at_risk_days * DAY:
        return LifecycleStage.ACTIVE
    if now - last_purchase_at < thresholds.lost_days * DAY:
        return LifecycleStage.AT_RISK
    return LifecycleStage.LOST
