"""Churn features and labels as of a cutoff, from a member's daily buckets (pure, no I/O).

A cutoff is a UTC midnight: the days before it are the past the features see, the
7 days from it are the future the label looks at. Windows are whole UTC days, so
`purchases_7d` at cutoff day C counts the buckets of days C-7 .. C-1.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

HORIZON_DAYS = 7
#: Recency of a member with no purchase in the loaded history (it never applies to scored rows).
MAX_RECENCY = 365

FEATURES: tuple[str, ...] = (
    "recency_days",
    "purchases_7d",
    "purchases_30d",
    "purchases_90d",
    "log_amount_7d",
    "log_amount_30d",
    "log_amount_90d",
    "trend_30d",
    "tenure_days",
    "active_days_30d",
    "log_points_balance",
    "manual_tags",
)


@dataclass
class MemberHistory:
    """One member's purchase buckets (days ascending), active days and points, as loaded."""

    member_id: int
    joined_at: datetime
    points_balance: int
    manual_tags: int = 0
    purchase_days: list[date] = field(default_factory=list)
    #: Running sums: purchase count / amount (currency units) of purchase_days[:i].
    count_prefix: list[int] = field(default_factory=lambda: [0])
    amount_prefix: list[float] = field(default_factory=lambda: [0.0])
    active_days: list[date] = field(default_factory=list)
    #: Ledger movements (instant, points) used to wind the balance back to a cutoff.
    movements: list[tuple[datetime, int]] = field(default_factory=list)

    def add_purchases(self, day: date, count: int, amount: float) -> None:
        """Append a day's purchase bucket; days must come in ascending order."""
        self.purchase_days.append(day)
        self.count_prefix.append(self.count_prefix[-1] + count)
        self.amount_prefix.append(self.amount_prefix[-1] + amount)

    def purchases(self, start: date, end: date) -> tuple[int, float]:
        """Count and amount of purchases on days in [start, end)."""
        i, j = bisect_left(self.purchase_days, start), bisect_left(self.purchase_days, end)
        return self.count_prefix[j] - self.count_prefix[i], self.amount_prefix[j] - self.amount_prefix[i]

    def last_purchase_before(self, day: date) -> date | None:
        i = bisect_left(self.purchase_days, day)
        return self.purchase_days[i - 1] if i else None

    def balance_at(self, instant: datetime) -> int:
        """The current balance minus the movements after `instant` (never below zero)."""
        return max(0, self.points_balance - sum(p for at, p in self.movements if at > instant))


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def weekly_cutoffs(now: datetime, count: int) -> list[date]:
    """`count` cutoff days a week apart, oldest first; the newest leaves 7 whole days before today."""
    newest = now.astimezone(UTC).date() - timedelta(days=HORIZON_DAYS)
    return [newest - timedelta(weeks=k) for k in range(count - 1, -1, -1)]


def eligible(member: MemberHistory, cutoff: date) -> bool:
    """Scored or trained on at `cutoff`: joined before it, with a purchase before it."""
    return member.joined_at < midnight(cutoff) and member.last_purchase_before(cutoff) is not None


def features_at(member: MemberHistory, cutoff: date) -> list[float]:
    """The FEATURES of `member` as of the midnight starting `cutoff`, in FEATURES order."""

    def window(days: int, back: int = 0) -> tuple[int, float]:
        end = cutoff - timedelta(days=back)
        return member.purchases(end - timedelta(days=days), end)

    last = member.last_purchase_before(cutoff)
    recency = MAX_RECENCY if last is None else min(MAX_RECENCY, (cutoff - last).days)
    (c7, a7), (c30, a30), (c90, a90) = window(7), window(30), window(90)
    previous30, _ = window(30, back=30)
    start = cutoff - timedelta(days=30)
    active = bisect_left(member.active_days, cutoff) - bisect_left(member.active_days, start)
    tenure = max(0, (midnight(cutoff) - member.joined_at) // timedelta(days=1))
    balance = member.balance_at(midnight(cutoff))
    return [
        float(recency),
        float(c7),
        float(c30),
        float(c90),
        math.log1p(a7),
        math.log1p(a30),
        math.log1p(a90),
        math.log((c30 + 1) / (previous30 + 1)),
        float(tenure),
        float(active),
        math.log1p(balance),
        float(member.manual_tags),
    ]


def churned_after(member: MemberHistory, cutoff: date) -> bool:
    """The label: no purchase on the 7 days from `cutoff`."""
    count, _ = member.purchases(cutoff, cutoff + timedelta(days=HORIZON_DAYS))
    return count == 0


@dataclass(frozen=True)
class Rows:
    """Training or holdout rows: features, labels (True: churned) and the cutoff of each row."""

    x: list[list[float]]
    y: list[bool]
    cutoffs: list[date]

    @property
    def positives(self) -> int:
        return sum(self.y)

    @property
    def negatives(self) -> int:
        return len(self.y) - self.positives


def build_rows(members: Sequence[MemberHistory], cutoffs: Sequence[date]) -> Rows:
    x: list[list[float]] = []
    y: list[bool] = []
    at: list[date] = []
    for cutoff in cutoffs:
        for member in members:
            if eligible(member, cutoff):
                x.append(features_at(member, cutoff))
                y.append(churned_after(member, cutoff))
                at.append(cutoff)
    return Rows(x, y, at)
