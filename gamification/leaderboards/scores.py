"""Exact integer scores with first-come tie-breaking, packed into one sorted-set score.

Redis scores are IEEE doubles: integers are exact up to 2^53. A score packs

    score = points * 2^TIE_BITS + (2^TIE_BITS - 1 - reached)

where `reached` is when the member reached its points, counted from the period's
start in seconds (day, week, month boards) or from 2020-01-01 UTC in minutes
(ALL_TIME). Higher points rank first; among equal points, the smaller `reached`
(earlier) gives the larger score and ranks first. Limits, with TIE_BITS = 25:
points between -2^27 and 2^27 - 1 (about ±134 million) per member, board and
period; month boards up to 388 days long; ALL_TIME `reached` until 2083, all
reaches before 2020 count as 2020-01-01. Points beyond the limit are clamped
(and logged). Equal points reached in the same second (minute for ALL_TIME)
fall back to Redis' order of equal scores: by member id, descending as text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

TIE_BITS = 25
TIE_SPAN = 1 << TIE_BITS
MAX_POINTS = (1 << 27) - 1
MIN_POINTS = -(1 << 27)
ALL_TIME_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Decoded:
    points: int
    #: Units (seconds, or minutes for ALL_TIME) after the period start when the points were reached.
    reached: int


def reached_units(reached_at: datetime, period_start: datetime | None) -> int:
    """`reached_at` as units after the period start, clamped into the field."""
    if period_start is None:
        units = int((reached_at - ALL_TIME_EPOCH).total_seconds() // 60)
    else:
        units = int((reached_at - period_start).total_seconds())
    return min(max(units, 0), TIE_SPAN - 1)


def encode(points: int, reached_at: datetime, period_start: datetime | None) -> int:
    if not MIN_POINTS <= points <= MAX_POINTS:
        log.warning("leaderboard score %d is beyond the exact range; clamped", points)
        points = min(max(points, MIN_POINTS), MAX_POINTS)
    return points * TIE_SPAN + (TIE_SPAN - 1 - reached_units(reached_at, period_start))


def decode(score: float) -> Decoded:
    value = int(score)
    points, tie = divmod(value, TIE_SPAN)
    return Decoded(points, TIE_SPAN - 1 - tie)
