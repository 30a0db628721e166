"""What the rules see: the candidate accrual and the recent history around it. Pure, no I/O.

The live audit fills a `History` from the database for one batch (fraud/loading.py);
the backtest fills one from recorded events (fraud/backtest.py). Both then judge
candidates in order and `record` each verdict, so an event sees the ones before it,
in its own batch too. Windows are measured on occurredAt (DESIGN.md, Fraud).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from domain.enums import Verdict

MAX_KEY = 128


def _text(properties: Mapping[str, Any], key: str) -> str | None:
    """A string or whole-number property as a key (receipt numbers often arrive as numbers)."""
    value = properties.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text[:MAX_KEY] or None


_KEYS = (
    ("receipt", "receiptId"),
    ("device", "deviceId"),
    ("cashier", "cashierId"),
    ("referee", "refereeExternalId"),
)


@dataclass(frozen=True)
class Candidate:
    """An event the audit looks at; `points` > 0 makes it an accrual the rules judge."""

    member_id: int
    external_id: str
    type: str
    occurred_at: datetime
    amount: Decimal | None
    points: int
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: The properties the rules read, as keys (read once: rules ask for them many times).
    receipt: str | None = field(init=False)
    device: str | None = field(init=False)
    cashier: str | None = field(init=False)
    referee: str | None = field(init=False)

    def __post_init__(self) -> None:
        for name, key in _KEYS:
            object.__setattr__(self, name, _text(self.properties, key))


@dataclass(frozen=True)
class Earned:
    """A point-earning event already judged: ALLOW posted it, REVIEW holds it, BLOCK rejected it."""

    occurred_at: datetime
    points: int
    verdict: Verdict
    cashier: str | None = None
    #: A refund took its points back: it no longer counts towards the day's points.
    refunded: bool = False


@dataclass(frozen=True)
class Identity:
    external_id: str
    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()

    def shared_with(self, other: Identity) -> list[str]:
        """What the two share, named for a finding's detail: 'deviceId d1', 'phone +90...'."""
        shared = [f"deviceId {d}" for d in sorted(self.devices & other.devices)]
        shared += [f"phone {p}" for p in sorted(self.phones & other.phones)]
        shared += [f"email {e}" for e in sorted(self.emails & other.emails)]
        return shared


def normal_email(value: object) -> str | None:
    if not isinstance(value, str) or "@" not in value:
        return None
    return value.strip().lower()


def normal_phone(value: object) -> str | None:
    """Digits only (a leading + kept), so '+90 555 123-45-67' and '+905551234567' match."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return None
    text = str(value).strip()
    digits = re.sub(r"\D", "", text)
    if len(digits) < 5:
        return None
    return ("+" if text.startswith("+") else "") + digits


def identity_of(external_id: str, attributes: Mapping[str, Any], devices: Iterable[str]) -> Identity:
    email = normal_email(attributes.get("email"))
    phone = normal_phone(attributes.get("phone"))
    device = _text(attributes, "deviceId")
    return Identity(
        external_id,
        frozenset([email] if email else []),
        frozenset([phone] if phone else []),
        frozenset(([device] if device else []) + list(devices)),
    )


def max_in_window(times: list[datetime], at: datetime, width: timedelta) -> int:
    """Most of `times` (sorted, `at` among them) inside one window [s, s + width) that contains `at`."""
    lo = bisect.bisect_left(times, at - width)
    best = 0
    for i in range(lo, bisect.bisect_right(times, at)):
        start = times[i]
        if start + width <= at:
            continue
        best = max(best, bisect.bisect_left(times, start + width) - i)
    return best


class History:
    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        #: Per member, the sorted occurredAt of its point-earning events (any outcome).
        self.earning_times: dict[int, list[datetime]] = defaultdict(list)
        #: Posted (not refunded) and held points per (member, day).
        self.day_points: Counter[tuple[int, date]] = Counter()
        #: Posted and held accruals per (member, day, cashier).
        self.cashier_credits: Counter[tuple[int, date, str]] = Counter()
        #: Accepted amounts per (member, event type), sorted by occurredAt...
        self.amounts: dict[tuple[int, str], list[tuple[datetime, Decimal]]] = defaultdict(list)
        #: ...plus, per (member, event type), (count, sum, sum of squares) of amounts of a range
        #: that every candidate's window contains (the live audit sums it in SQL; see loading.py).
        self.amount_sums: dict[tuple[int, str], tuple[int, float, float]] = {}
        #: The event that first carried each receipt (the one a later event duplicates).
        self.receipts: dict[str, str] = {}
        #: Uses of each device: (occurredAt, member id), sorted.
        self.device_uses: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        self.identities: dict[int, Identity] = {}
        self.member_ids: dict[str, int] = {}

    # -- filling ---------------------------------------------------------------------------
    def add_earned(self, member_id: int, earned: Earned) -> None:
        bisect.insort(self.earning_times[member_id], earned.occurred_at)
        if earned.verdict == Verdict.BLOCK:
            return
        day = self.day(earned.occurred_at)
        if not earned.refunded:
            self.day_points[(member_id, day)] += earned.points
        if earned.cashier is not None:
            self.cashier_credits[(member_id, day, earned.cashier)] += 1

    def add_amount(self, member_id: int, event_type: str, at: datetime, amount: Decimal) -> None:
        bisect.insort(self.amounts[(member_id, event_type)], (at, amount))

    def add_amount_sums(self, member_id: int, event_type: str, n: int, total: float, squares: float) -> None:
        self.amount_sums[(member_id, event_type)] = (n, total, squares)

    def add_device_use(self, device: str, at: datetime, member_id: int) -> None:
        bisect.insort(self.device_uses[device], (at, member_id))

    def claim_receipt(self, receipt: str, external_id: str) -> None:
        self.receipts.setdefault(receipt, external_id)

    def record(self, candidate: Candidate, verdict: Verdict) -> None:
        """The candidate was judged `verdict`: later candidates see it."""
        if candidate.receipt is not None:
            self.claim_receipt(candidate.receipt, candidate.external_id)
        if candidate.device is not None:
            self.add_device_use(candidate.device, candidate.occurred_at, candidate.member_id)
            known = self.identities.get(candidate.member_id)
            if known is not None and candidate.device not in known.devices:
                self.identities[candidate.member_id] = Identity(
                    known.external_id, known.emails, known.phones, known.devices | {candidate.device}
                )
        if candidate.points <= 0:
            return
        self.add_earned(
            candidate.member_id,
            Earned(candidate.occurred_at, candidate.points, verdict, candidate.cashier),
        )
        if verdict == Verdict.ALLOW and candidate.amount is not None:
            self.add_amount(candidate.member_id, candidate.type, candidate.occurred_at, candidate.amount)

    # -- questions the rules ask ---------------------------------------------------------
    def day(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def events_in_window(self, candidate: Candidate, width: timedelta) -> int:
        """Point-earning events of the member in the busiest window of `width` around the candidate."""
        times = list(self.earning_times[candidate.member_id])
        bisect.insort(times, candidate.occurred_at)
        return max_in_window(times, candidate.occurred_at, width)

    def points_of_day(self, candidate: Candidate) -> int:
        """Posted (not refunded) and held points of the member on the candidate's day, before it."""
        return self.day_points[(candidate.member_id, self.day(candidate.occurred_at))]

    def credits_by_cashier(self, candidate: Candidate) -> int:
        """Accruals the candidate's cashier gave the member that day, the candidate included."""
        assert candidate.cashier is not None
        return (
            1
            + self.cashier_credits[(candidate.member_id, self.day(candidate.occurred_at), candidate.cashier)]
        )

    def amount_stats(self, candidate: Candidate, days: int) -> tuple[int, float, float]:
        """(samples, mean, sample standard deviation) of the member's accepted amounts of the type."""
        amounts = self.amounts.get((candidate.member_id, candidate.type), [])
        start = candidate.occurred_at - timedelta(days=days)
        lo = bisect.bisect_left(amounts, (start,))
        hi = bisect.bisect_left(amounts, (candidate.occurred_at,))
        values = [float(amount) for _, amount in amounts[lo:hi]]
        n, total, squares = self.amount_sums.get((candidate.member_id, candidate.type), (0, 0.0, 0.0))
        n += len(values)
        if n == 0:
            return 0, 0.0, 0.0
        mean = (total + math.fsum(values)) / n
        if n < 2:
            return n, mean, 0.0
        squares += math.fsum(v * v for v in values)
        variance = max(squares - n * mean * mean, 0.0) / (n - 1)
        return n, mean, math.sqrt(variance)

    def members_on_device(self, candidate: Candidate, width: timedelta) -> int:
        """Most distinct members on the candidate's device in one window of `width` containing it."""
        assert candidate.device is not None
        at = candidate.occurred_at
        uses = [u for u in self.device_uses.get(candidate.device, []) if at - width < u[0] < at + width]
        uses.append((at, candidate.member_id))
        if len({m for _, m in uses}) <= 1:  # the usual case: one member's own device
            return 1
        uses.sort()
        best = 0
        for start, _ in uses:
            if start > at or start + width <= at:
                continue
            best = max(best, len({m for t, m in uses if start <= t < start + width}))
        return best
