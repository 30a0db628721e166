"""Deterministic assignment of members to an experiment's arms.

Pure: no I/O. A member's draw is sha256(f"{experiment key}:{member externalId}")
read as a number in [0, 1): the first `holdout_percent` % of that range is the
holdout, the rest is split over the variants in proportion to their weights, in
the order given. The same member always draws the same number; stickiness once
weights change comes from the recorded exposure, not from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: The arm of the holdout (a control group that gets nothing); never a variant's key.
HOLDOUT = "holdout"
_SCALE = float(2**64)


def draw(experiment_key: str, member_external_id: str) -> float:
    """The member's stable number in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment_key}:{member_external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def arm_of(point: float, holdout_percent: int, weights: Sequence[tuple[str, int]]) -> str:
    """The arm `point` (in [0, 1)) falls in: HOLDOUT or a variant's key; weights must be positive."""
    holdout = holdout_percent / 100
    if point < holdout:
        return HOLDOUT
    total = sum(weight for _, weight in weights)
    scaled = (point - holdout) / (1 - holdout) * total
    cumulative = 0
    for key, weight in weights:
        cumulative += weight
        if scaled < cumulative:
            return key
    return weights[-1][0]  # rounding at the very top of the range


def assign(
    experiment_key: str, member_external_id: str, holdout_percent: int, weights: Sequence[tuple[str, int]]
) -> str:
    """The arm a member joins on first exposure."""
    return arm_of(draw(experiment_key, member_external_id), holdout_percent, weights)
