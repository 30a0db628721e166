"""What promotions pay on one event: the stacking rule of docs/promotions.md. Pure.

For an event whose earning rule gives B points (before the tier's earnMultiplier T):
1. a promotion is *applicable* when it is active, names the event's type, the event's local
   time (program timezone) is inside its window, its condition holds, and it still has room:
   budget left (if it has one) and cap left for the member in the event's period (if capped);
2. if any applicable promotion is EXCLUSIVE, only one applies: the exclusive one of the highest
   priority, ties broken by the smaller key; stackable ones are then left out. Otherwise every
   applicable STACK promotion applies, in order of priority (highest first), then key;
3. each applied promotion p earns raw(p) = floor(B x (multiplier(p) - 1)) + bonusPoints(p),
   so multipliers add up on the base points (2x and 3x stacked: B + B + 2B = 4B), then cut to
   what is left of its member cap and of its budget (partially: the promotion pays what is left);
4. the event's points: floor(B x T) + the sum of what the applied promotions pay.
   The tier multiplies the base only, never a promotion's points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum


class Stacking(StrEnum):
    STACK = "STACK"
    EXCLUSIVE = "EXCLUSIVE"


class CapPeriod(StrEnum):
    """A member cap's period, in the program's timezone (weeks start on Monday)."""

    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"
    TOTAL = "TOTAL"


TOTAL_PERIOD = "TOTAL"


def period_of(cap: CapPeriod, local: datetime) -> str:
    """The key of the cap period holding a local time: its first local date, or "TOTAL"."""
    day = local.date()
    match cap:
        case CapPeriod.DAY:
            start: date = day
        case CapPeriod.WEEK:
            start = day - timedelta(days=day.weekday())
        case CapPeriod.MONTH:
            start = day.replace(day=1)
        case CapPeriod.YEAR:
            start = day.replace(month=1, day=1)
        case CapPeriod.TOTAL:
            return TOTAL_PERIOD
    return start.isoformat()


@dataclass(frozen=True)
class Terms:
    """A promotion as the stacking rule reads it (conditions and windows are checked before)."""

    id: int
    key: str
    multiplier: Decimal | None
    bonus_points: int
    priority: int
    stacking: Stacking
    cap_points: int | None = None
    cap_period: CapPeriod | None = None
    budget_points: int | None = None

    def raw(self, base: int) -> int:
        """floor(B x (multiplier - 1)) + bonusPoints: what it pays before caps and budget."""
        extra = 0
        if self.multiplier is not None and self.multiplier != 1:
            extra = int((Decimal(base) * (self.multiplier - 1)).to_integral_value(rounding=ROUND_FLOOR))
        return max(0, extra + self.bonus_points)


@dataclass(frozen=True)
class Paid:
    key: str
    points: int


class Ledger:
    """The room left: budgets by promotion id, member caps by (promotion, member, period).
    `pay` moves both, so events judged one after another see each other's payments."""

    def __init__(self, budget_left: Mapping[int, int], cap_used: Mapping[tuple[int, int, str], int]) -> None:
        self.budget_left = dict(budget_left)
        self.cap_used = dict(cap_used)
        #: What was paid, by (promotion id, member id, period): the usage to store.
        self.paid: dict[tuple[int, int, str], int] = {}

    def room(self, terms: Terms, member_id: int, local: datetime) -> int | None:
        """Points the promotion may still pay this member for an event at `local`; None: no limit."""
        room: int | None = None
        if terms.budget_points is not None:
            room = self.budget_left.get(terms.id, terms.budget_points)
        if terms.cap_points is not None and terms.cap_period is not None:
            used = self.cap_used.get((terms.id, member_id, period_of(terms.cap_period, local)), 0)
            left = max(0, terms.cap_points - used)
            room = left if room is None else min(room, left)
        return room

    def pay(self, terms: Terms, member_id: int, local: datetime, points: int) -> None:
        if terms.budget_points is not None:
            self.budget_left[terms.id] = self.budget_left.get(terms.id, terms.budget_points) - points
        period = period_of(terms.cap_period or CapPeriod.TOTAL, local)
        key = (terms.id, member_id, period)
        if terms.cap_points is not None:
            self.cap_used[key] = self.cap_used.get(key, 0) + points
        self.paid[key] = self.paid.get(key, 0) + points


def chosen(applicable: Sequence[Terms]) -> list[Terms]:
    """Step 2: the exclusive winner alone, or every stackable one, in the order they apply."""
    exclusive = [t for t in applicable if t.stacking == Stacking.EXCLUSIVE]
    if exclusive:
        return [min(exclusive, key=lambda t: (-t.priority, t.key))]
    return sorted(applicable, key=lambda t: (-t.priority, t.key))


def settle(
    matching: Sequence[Terms], base: int, member_id: int, local: datetime, ledger: Ledger
) -> list[Paid]:
    """Steps 1 (room) to 3 for one event: `matching` passed the type, window and condition.
    Pays through `ledger` and returns what each applied promotion paid (none paying 0)."""
    applicable = [t for t in matching if _has_room(ledger.room(t, member_id, local))]
    paid: list[Paid] = []
    for terms in chosen(applicable):
        points = terms.raw(base)
        room = ledger.room(terms, member_id, local)
        if room is not None:
            points = min(points, room)
        if points <= 0:
            continue
        ledger.pay(terms, member_id, local, points)
        paid.append(Paid(terms.key, points))
    return paid


def _has_room(room: int | None) -> bool:
    return room is None or room > 0
