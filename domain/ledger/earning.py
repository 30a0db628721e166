"""Step 3 of the pipeline: earning rules turn an event into proposed points. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

MAX_FIXED_POINTS = 1_000_000
MAX_POINTS_PER_UNIT = Decimal(1000)


@dataclass(frozen=True)
class EarningRuleSpec:
    event_type: str
    points_per_unit: Decimal | None = None
    fixed_points: int | None = None

    def points_for(self, amount: Decimal | None) -> int:
        """floor(amount x pointsPerUnit) + fixedPoints; a missing amount earns no per-unit points."""
        points = self.fixed_points or 0
        if self.points_per_unit is not None and amount is not None:
            points += int((amount * self.points_per_unit).to_integral_value(rounding=ROUND_FLOOR))
        return points


#: What a new program starts with (DESIGN.md, pipeline step 3); other types earn 0.
DEFAULT_EARNING_RULES: tuple[EarningRuleSpec, ...] = (
    EarningRuleSpec("purchase", points_per_unit=Decimal(1)),
    EarningRuleSpec("sale", points_per_unit=Decimal(1)),
    EarningRuleSpec("visit", fixed_points=10),
    EarningRuleSpec("training_completed", fixed_points=50),
    EarningRuleSpec("suggestion_submitted", fixed_points=25),
    EarningRuleSpec("referral", fixed_points=100),
)


def points_for_event(rules: dict[str, EarningRuleSpec], event_type: str, amount: Decimal | None) -> int:
    rule = rules.get(event_type)
    return 0 if rule is None else rule.points_for(amount)


def multiplied(points: int, multiplier: Decimal | None) -> int:
    """An earning rule's points times a tier's earnMultiplier, floored (15 at 1.5 -> 22)."""
    if multiplier is None or multiplier == 1:
        return points
    return int((Decimal(points) * multiplier).to_integral_value(rounding=ROUND_FLOOR))
