"""Per-arm results of an experiment: exposures and conversions, set-based, then the statistics.

A member converts when an ACCEPTED, not refunded event of the goal type occurred
after their exposure and at most `conversion_days` days (of 24 h) after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.conversion import goal_within
from domain.experiments.assignment import HOLDOUT
from domain.experiments.definitions import Variant
from domain.experiments.stats import compare, rate
from domain.models import Experiment, ExperimentExposure


@dataclass(frozen=True)
class ArmResult:
    variant: str
    is_control: bool
    exposed: int
    converted: int
    conversion_rate: float | None
    #: The rest are None for the control itself and where undefined (see stats.py).
    uplift_vs_control: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None


async def arm_counts(session: AsyncSession, experiment: Experiment) -> dict[str, tuple[int, int]]:
    """(converted, exposed) per arm that has exposures."""
    x = ExperimentExposure
    converted = goal_within(
        session, x.member_id, x.exposed_at, experiment.goal_event_type, experiment.conversion_days
    )
    rows = await session.execute(
        select(x.variant, func.count(), func.coalesce(func.sum(case((converted, 1), else_=0)), 0))
        .where(x.experiment_id == experiment.id)
        .group_by(x.variant)
    )
    return {variant: (int(conv), int(exposed)) for variant, exposed, conv in rows}


def arm_results(experiment: Experiment, counts: dict[str, tuple[int, int]]) -> list[ArmResult]:
    """The variants in their order, then the holdout (when it has a share or exposures)."""
    arms = [Variant.of(stored).key for stored in experiment.variants]
    if experiment.holdout_percent > 0 or HOLDOUT in counts:
        arms.append(HOLDOUT)
    arms += sorted(set(counts) - set(arms))  # arms removed from the definition keep their exposures
    control = counts.get(experiment.control, (0, 0))
    results = []
    for arm in arms:
        converted, exposed = counts.get(arm, (0, 0))
        is_control = arm == experiment.control
        c = compare((converted, exposed), control)
        results.append(
            ArmResult(
                arm,
                is_control,
                exposed,
                converted,
                rate(converted, exposed),
                None if is_control else c.uplift,
                None if is_control else c.ci_low,
                None if is_control else c.ci_high,
                None if is_control else c.p_value,
            )
        )
    return results
