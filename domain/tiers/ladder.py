"""Tier ladders and the tier rules of DESIGN.md ("Tiers"): validation and transitions. Pure.

`validate_ladder` turns what an admin sent into a `Ladder` or refuses it with the
argument named (`tiers[1].threshold: ...`, `qualifier: column 5: ...`); `decide`
is the whole transition rule of one member: upgrade at once to the highest tier
the value reaches, keep the tier through `graceDays` below its threshold, and
when the grace ends apply the downgrade policy. The engine, the scheduler and
the set-based pass of `setTierLadder` all decide through it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from domain.enums import TierDowngrade
from domain.errors import InvalidInput
from domain.segments.conditions import Metric, MetricCompare, Op, Scalar
from domain.segments.rules import parse_rule, render_rule

TIER_KEY = re.compile(r"[a-z0-9_]{1,32}\Z")
#: A tier's segment key is this prefix and the tier's key; users may not create such keys.
SEGMENT_PREFIX = "tier-"
MAX_TIERS = 20
MAX_QUALIFIER = 1000
MAX_GRACE_DAYS = 3660
MAX_THRESHOLD = Decimal(10) ** 12
MAX_MULTIPLIER = Decimal(100)
#: Decimal places a threshold or multiplier may have (amounts have 4).
MAX_PLACES = 4
_RULE_ERROR = re.compile(r"rule: column ([0-9]+): (.*)\Z", re.DOTALL)
_OPERAND_HINT = "must be one aggregate operand of the rule language, e.g. sum(purchase.amount, 365d)"


def segment_key(tier_key: str) -> str:
    return f"{SEGMENT_PREFIX}{tier_key}"


def is_tier_segment_key(key: str) -> bool:
    return key.startswith(SEGMENT_PREFIX)


@dataclass(frozen=True)
class TierDraft:
    key: str
    name: str
    threshold: Decimal
    earn_multiplier: Decimal = Decimal(1)


@dataclass(frozen=True)
class LadderDraft:
    qualifier: str
    tiers: Sequence[TierDraft]
    downgrade: str = TierDowngrade.RECALCULATE.value
    grace_days: int = 0


@dataclass(frozen=True)
class Tier:
    key: str
    name: str
    threshold: Decimal
    earn_multiplier: Decimal

    @property
    def segment_key(self) -> str:
        return segment_key(self.key)


@dataclass(frozen=True)
class Ladder:
    """A valid ladder: thresholds strictly ascending from 0, keys unique."""

    qualifier: str
    metric: Metric
    tiers: tuple[Tier, ...]
    downgrade: TierDowngrade
    grace_days: int

    @property
    def grace(self) -> timedelta:
        return timedelta(days=self.grace_days)

    def reach(self, value: Fraction | None) -> int:
        """The index of the highest tier `value` reaches (an absent value counts as 0)."""
        measured = value if value is not None else Fraction(0)
        found = 0
        for i, tier in enumerate(self.tiers):
            if measured >= Fraction(tier.threshold):
                found = i
        return found

    def index(self, key: str) -> int | None:
        for i, tier in enumerate(self.tiers):
            if tier.key == key:
                return i
        return None

    def reaches(self, i: int) -> MetricCompare:
        """`qualifier >= tiers[i].threshold`: the condition of reaching tier i (for SQL and horizons)."""
        return MetricCompare(self.metric, Op.GTE, threshold_scalar(self.tiers[i].threshold))

    def tiers_json(self) -> list[dict[str, Any]]:
        return [
            {
                "key": t.key,
                "name": t.name,
                "threshold": str(t.threshold),
                "earnMultiplier": str(t.earn_multiplier),
            }
            for t in self.tiers
        ]

    @classmethod
    def from_stored(
        cls, qualifier: str, tiers: Sequence[Mapping[str, Any]], downgrade: str, grace: int
    ) -> Ladder:
        return cls(
            qualifier,
            parse_qualifier(qualifier),
            tuple(
                Tier(t["key"], t["name"], Decimal(t["threshold"]), Decimal(t["earnMultiplier"]))
                for t in tiers
            ),
            TierDowngrade(downgrade),
            grace,
        )


def threshold_scalar(threshold: Decimal) -> Scalar:
    """A threshold as a condition value: an int when whole, else a float whose shortest repr is exact."""
    if threshold == threshold.to_integral_value():
        return int(threshold)
    return float(str(threshold))


def parse_qualifier(text: str) -> Metric:
    """The metric of a qualifier, parsed by the rule parser; errors name the qualifier's column."""
    if len(text) > MAX_QUALIFIER:
        raise InvalidInput(f"qualifier: at most {MAX_QUALIFIER} characters")
    if not text.strip():
        raise InvalidInput(f"qualifier: {_OPERAND_HINT}")
    try:
        node = parse_rule(f"{text} >= 0")
    except InvalidInput as error:
        found = _RULE_ERROR.match(str(error))
        if found is not None and int(found[1]) <= len(text):
            raise InvalidInput(f"qualifier: column {found[1]}: {found[2]}") from None
        raise InvalidInput(f"qualifier: {_OPERAND_HINT}") from None
    if not isinstance(node, MetricCompare):
        raise InvalidInput(f"qualifier: {_OPERAND_HINT}; an attribute is not an aggregate")
    return node.metric


def normal_qualifier(metric: Metric) -> str:
    """The qualifier as the rule renderer writes its metric (`sum(purchase.amount, 365d)`)."""
    rendered = render_rule(MetricCompare(metric, Op.GTE, 0))
    return rendered.rsplit(" >= ", 1)[0]


def _decimal(value: Any, what: str) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{what}: {str(value)[:40]!r} is not a decimal number") from None
    if not number.is_finite():
        raise InvalidInput(f"{what}: must be a finite number")
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        raise InvalidInput(f"{what}: at most {MAX_PLACES} decimal places")
    normal = number.normalize()
    return Decimal(int(normal)) if normal == normal.to_integral_value() else normal


def validate_ladder(draft: LadderDraft) -> Ladder:
    """The ladder, or InvalidInput naming the first faulty argument; nothing to store otherwise."""
    metric = parse_qualifier(draft.qualifier)
    try:
        downgrade = TierDowngrade(draft.downgrade)
    except ValueError:
        raise InvalidInput(
            f"downgrade: {draft.downgrade!r} is not one of NEVER, ONE_DOWN, RECALCULATE"
        ) from None
    if not 0 <= draft.grace_days <= MAX_GRACE_DAYS:
        raise InvalidInput(f"graceDays: must be between 0 and {MAX_GRACE_DAYS}, got {draft.grace_days}")
    if not draft.tiers:
        raise InvalidInput("tiers: a ladder needs at least one tier")
    if len(draft.tiers) > MAX_TIERS:
        raise InvalidInput(f"tiers: at most {MAX_TIERS} tiers, got {len(draft.tiers)}")
    tiers: list[Tier] = []
    seen: dict[str, int] = {}
    for i, given in enumerate(draft.tiers):
        at = f"tiers[{i}]"
        if not TIER_KEY.match(given.key):
            raise InvalidInput(f"{at}.key: {given.key[:40]!r} does not match [a-z0-9_]{{1,32}}")
        if given.key in seen:
            raise InvalidInput(f"{at}.key: {given.key!r} is also the key of tiers[{seen[given.key]}]")
        seen[given.key] = i
        name = given.name.strip()
        if not name or len(given.name) > 200:
            raise InvalidInput(f"{at}.name: must be 1 to 200 characters")
        threshold = _decimal(given.threshold, f"{at}.threshold")
        if i == 0 and threshold != 0:
            raise InvalidInput(f"{at}.threshold: the first tier's threshold must be 0, got {threshold}")
        if not 0 <= threshold <= MAX_THRESHOLD:
            raise InvalidInput(f"{at}.threshold: must be between 0 and {MAX_THRESHOLD}")
        if tiers and threshold <= tiers[-1].threshold:
            raise InvalidInput(
                f"{at}.threshold: thresholds must ascend strictly; {threshold} is not above"
                f" tiers[{i - 1}]'s {tiers[-1].threshold}"
            )
        multiplier = _decimal(given.earn_multiplier, f"{at}.earnMultiplier")
        if not 0 < multiplier <= MAX_MULTIPLIER:
            raise InvalidInput(f"{at}.earnMultiplier: must be above 0 and at most {MAX_MULTIPLIER}")
        tiers.append(Tier(given.key, name, threshold, multiplier))
    return Ladder(normal_qualifier(metric), metric, tuple(tiers), downgrade, draft.grace_days)


@dataclass(frozen=True)
class TierState:
    """What a member holds: the tier (an index into the ladder), since when, its grace, its best."""

    tier: int
    since: datetime
    kept_until: datetime | None
    highest: int


def decide(ladder: Ladder, state: TierState | None, value: Fraction | None, now: datetime) -> TierState:
    """The member's state after measuring `value` at `now` (the same state when nothing moves).

    - No state yet (a new member): the tier the value reaches.
    - The value reaches a higher tier: up at once, grace cleared.
    - It reaches the held tier: any grace is cleared (re-qualified).
    - It is below: the grace starts (keptUntil = now + graceDays) unless running; when it has
      ended: RECALCULATE -> the tier the value reaches; ONE_DOWN -> one down, and from there a
      new grace starts at the instant the last one ended (repeated while still below and over);
      NEVER keeps the tier (no grace at all).
    """
    reach = ladder.reach(value)
    if state is None:
        return TierState(reach, now, None, reach)
    held = state.tier
    if reach > held:
        return TierState(reach, now, None, max(state.highest, reach))
    if reach == held or ladder.downgrade == TierDowngrade.NEVER:
        return state if state.kept_until is None else replace(state, kept_until=None)
    kept = state.kept_until if state.kept_until is not None else now + ladder.grace
    tier = held
    while kept <= now and tier > reach:
        if ladder.downgrade == TierDowngrade.RECALCULATE:
            tier = reach
            break
        tier -= 1
        if tier > reach:
            kept += ladder.grace
    if tier == held:
        return state if state.kept_until == kept else replace(state, kept_until=kept)
    return TierState(tier, now, kept if tier > reach else None, state.highest)
