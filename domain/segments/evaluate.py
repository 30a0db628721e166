"""The in-memory evaluator: does one member satisfy a condition, as of `now`? Pure.

It is the reference semantics of segment-conditions.md; `compile.py` must agree
with it on every member (tests/test_evaluator_equivalence.py). Amounts are exact
(integer units of 10^-4), so are averages (fractions); numeric properties are
exact for integers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from fractions import Fraction
from typing import Any

from domain.db.types import AMOUNT_SCALE
from domain.members.attributes import lookup
from domain.segments.conditions import (
    JOINED_AT,
    Agg,
    All,
    AnyOf,
    Arith,
    AttrCompare,
    DateCompare,
    DateFn,
    EventCompare,
    Expr,
    ExprCompare,
    HasTag,
    InOrganization,
    InOrganizationTree,
    InSegment,
    KindIs,
    Ledger,
    LedgerCompare,
    LedgerKind,
    Metric,
    MetricCompare,
    Node,
    Not,
    Number,
    Op,
    OrgMetricCompare,
    Scalar,
    Value,
    VersionCompare,
    WhereTest,
    WhereValue,
    cast_list,
    is_number,
)
from domain.segments.lifecycle import LifecycleThresholds, lifecycle_stage

DAY = timedelta(days=1)
BIRTH_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
UNITS = Fraction(10**AMOUNT_SCALE)


@dataclass(frozen=True)
class Bucket:
    """One member's events of one type on one UTC day (event_aggregates)."""

    day: date
    count: int
    amount_count: int
    amount_sum: int
    amount_min: int | None
    amount_max: int | None
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class EventFact:
    occurred_at: datetime
    amount_units: int | None
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class LedgerFact:
    """A posted ledger entry a ledger operand counts: `earned` (what the points board counts) or
    `redeemed` (a redemption, or the reversal of one), dated when it counts (see facts.py)."""

    at: datetime
    points: int
    kind: str  # "earned" or "redeemed"


@dataclass(frozen=True)
class LotFact:
    """An open expiry lot (remaining > 0)."""

    expires_at: datetime
    remaining: int


@dataclass
class MemberFacts:
    """Everything a condition may read about one member."""

    member_id: int
    external_id: str
    kind: str
    organization: str | None
    attributes: Mapping[str, Any]
    points_balance: int
    created_at: datetime
    joined_at: datetime
    rfm: tuple[int, int, int, str] | None = None
    abc_class: str | None = None
    #: The stored churn score (domain/predict), a probability; None until the member is scored.
    churn_risk_7d: float | None = None
    tags: frozenset[str] = frozenset()
    #: Who applies each tag: "manual" and/or segment keys (the engine keeps `tags` in step).
    tag_sources: dict[str, set[str]] = field(default_factory=dict)
    segments: set[str] = field(default_factory=set)
    #: Daily buckets by event type; complete for the types the conditions read.
    buckets: Mapping[str, Sequence[Bucket]] = field(default_factory=dict)
    #: Raw ACCEPTED events by type, at least as far back as the conditions' windows reach.
    events: Mapping[str, Sequence[EventFact]] = field(default_factory=dict)
    #: Ledger entries the ledger operands count, as far back as their windows reach (version 2).
    ledger: Sequence[LedgerFact] = ()
    #: Open expiry lots (version 2: `points_expiring`).
    lots: Sequence[LotFact] = ()
    #: The external ids of the member's organization and of every organization above it.
    organization_ancestors: frozenset[str] = frozenset()
    #: Raw ACCEPTED events by type of every member of the member's organization and of the
    #: organizations below it (the member's own included), as far back as `org.AGG` windows reach.
    organization_events: Mapping[str, Sequence[EventFact]] = field(default_factory=dict)
    #: Version 2: the channels the member accepts (the built-in path `channels`).
    channels: Sequence[str] = ()


@dataclass(frozen=True)
class EarnedEvent:
    """The event a promotion condition reads (`event.PATH`): the one being earned on."""

    type: str
    occurred_at: datetime
    amount: Decimal | None
    properties: Mapping[str, Any]


def event_values(event: EarnedEvent, zone: tzinfo) -> dict[str, Any]:
    """What `event.PATH` reads, as one JSON-like document: the properties, with the built-in
    `amount`, `type`, `weekday` (ISO: Monday 1 .. Sunday 7) and `hour` (0-23), both in the
    program's timezone, over any property of those names. Both evaluators read this document."""
    local = event.occurred_at.astimezone(zone)
    values: dict[str, Any] = dict(event.properties)
    values.update(type=event.type, weekday=local.isoweekday(), hour=local.hour, amount=event.amount)
    return values


@dataclass(frozen=True)
class Evaluation:
    now: datetime
    lifecycle: LifecycleThresholds = field(default_factory=LifecycleThresholds)
    #: Version 2: the program's timezone; `distinct_days`, `streak`, `age` and the date operands
    #: count its calendar dates ("today" is the local date of `now`).
    zone: tzinfo = UTC
    #: A promotion condition's event (`event.PATH`); None elsewhere, where no condition reads it.
    event: EarnedEvent | None = None

    @property
    def today(self) -> date:
        return local_date(self.now, self.zone)

    def holds(self, node: Node, member: MemberFacts) -> bool:
        match node:
            case All(children):
                return all(self.holds(c, member) for c in children)
            case AnyOf(children):
                return any(self.holds(c, member) for c in children)
            case Not(child):
                return not self.holds(child, member)
            case AttrCompare(path, op, value):
                return compare_value(self.attribute(path, member), op, value)
            case MetricCompare(metric, op, value):
                return compare_measure(self.measure(metric, member), op, value)
            case InSegment(key):
                return key in member.segments
            case HasTag(key):
                return key in member.tags
            case KindIs(kind):
                return member.kind == kind.value
            case InOrganization(external_id):
                return member.organization == external_id
            case LedgerCompare(ledger, op, value):
                return compare_value(self.ledger(ledger, member), op, value)
            case ExprCompare(left, op, right):
                return compare_expressions(self.expr(left, member), op, self.expr(right, member))
            case InOrganizationTree(external_id):
                return external_id in member.organization_ancestors
            case OrgMetricCompare(metric, op, value):
                return compare_measure(self.org_measure(metric, member), op, value)
            case DateCompare(path, fn, op, value):
                return compare_measure(self.date_days(path, fn, member), op, value)
            case VersionCompare(path, op, value):
                return compare_version(self.attribute(path, member), op, value)
            case EventCompare(path, op, value):
                return compare_value(self.event_value(path), op, value)
        raise AssertionError(node)

    def event_value(self, path: str) -> Any:
        """`event.PATH` of the promotion's event (absent without one)."""
        if self.event is None:
            return None
        return lookup(event_values(self.event, self.zone), path)

    # ---------- version 2: ledger operands and arithmetic ----------

    def ledger(self, ledger: Ledger, member: MemberFacts) -> Fraction:
        """points_earned / points_redeemed / points_expiring as of now; 0 when nothing counts."""
        now = self.now
        if ledger.kind == LedgerKind.EXPIRING:
            high = None if ledger.window is None else now + timedelta(seconds=ledger.window.seconds)
            return Fraction(
                sum(
                    lot.remaining
                    for lot in member.lots
                    if now < lot.expires_at and (high is None or lot.expires_at <= high)
                )
            )
        kind = "earned" if ledger.kind == LedgerKind.EARNED else "redeemed"
        low = None if ledger.window is None else now - timedelta(seconds=ledger.window.seconds)
        total = sum(e.points for e in member.ledger if e.kind == kind and (low is None or low < e.at <= now))
        return Fraction(total if kind == "earned" else -total)

    def expr(self, expr: Expr, member: MemberFacts) -> Fraction | None:
        """An expression's exact value; None (absent) for an absent operand or a division by zero."""
        match expr:
            case Number(value):
                return Fraction(str(value)) if isinstance(value, float) else Fraction(value)
            case Ledger():
                return self.ledger(expr, member)
            case Arith(op, left, right):
                a, b = self.expr(left, member), self.expr(right, member)
                if a is None or b is None:
                    return None
                match op:
                    case "add":
                        return a + b
                    case "sub":
                        return a - b
                    case "mul":
                        return a * b
                return a / b if b else None
        found = self.measure(expr, member)
        assert found is None or isinstance(found, Fraction)
        return found

    def date_days(self, path: str, fn: DateFn, member: MemberFacts) -> Fraction | None:
        """Version 2: `days_since(PATH)` / `days_to_anniversary(PATH)` in local days; None when absent."""
        day = self.date_at(path, member)
        if day is None:
            return None
        if fn == DateFn.DAYS_SINCE:
            return Fraction((self.today - day).days)
        return Fraction(days_to_anniversary(day, self.today))

    def date_at(self, path: str, member: MemberFacts) -> date | None:
        """The local date held at PATH: the built-in `joinedAt`, or an attribute (see `date_of`)."""
        if path == JOINED_AT:
            return local_date(member.joined_at, self.zone)
        return date_of(lookup(dict(member.attributes), path), self.zone)

    # ---------- attributes ----------

    def attribute(self, path: str, member: MemberFacts) -> Any:
        match path:
            case "pointsBalance":
                return member.points_balance
            case "createdAt":
                return (self.now - member.created_at) // DAY
            case "age":
                return self.age(member.attributes.get("birthDate"))
            case "abcClass":
                return member.abc_class
            case "churnRisk7d":
                return member.churn_risk_7d
            case "channels":
                return list(member.channels)
            case "rfm.r" | "rfm.f" | "rfm.m" | "rfm.label":
                if member.rfm is None:
                    return None
                return member.rfm[["rfm.r", "rfm.f", "rfm.m", "rfm.label"].index(path)]
            case "lifecycle":
                purchases = member.buckets.get("purchase", ())
                last = max((b.last_at for b in purchases), default=None)
                count = sum(b.count for b in purchases)
                return lifecycle_stage(member.joined_at, count, last, self.now, self.lifecycle)
        return lookup(dict(member.attributes), path)

    def age(self, birth_date: Any) -> int | None:
        match = BIRTH_DATE.match(birth_date) if isinstance(birth_date, str) else None
        if match is None:
            return None
        year, month, day = (int(g) for g in match.groups())
        today = self.today
        return today.year - year - ((today.month, today.day) < (month, day))

    # ---------- metrics ----------

    def measure(self, metric: Metric, member: MemberFacts) -> Any:
        """A Fraction, or None when absent; `top` gives the winning property value itself."""
        if reads_raw(metric, self.zone):
            events = [e for e in member.events.get(metric.event, ()) if self.selects(metric, e)]
            return self.over_events(metric, events)
        return self.over_buckets(metric, member.buckets.get(metric.event, ()))

    def org_measure(self, metric: Metric, member: MemberFacts) -> Any:
        """`org.AGG(...)`: the metric over the organization's (and those below its) events, always
        from raw events; absent for a member without an organization."""
        if member.organization is None:
            return None
        events = [e for e in member.organization_events.get(metric.event, ()) if self.selects(metric, e)]
        return self.over_events(metric, events)

    def selects(self, metric: Metric, event: EventFact) -> bool:
        if metric.window is not None and metric.agg not in _WINDOWLESS:
            low = self.now - timedelta(seconds=metric.window.seconds)
            if not low < event.occurred_at <= self.now:
                return False
        return all(where_holds(event.properties.get(name), value) for name, value in metric.where)

    def over_buckets(self, metric: Metric, buckets: Sequence[Bucket]) -> Fraction | None:
        match metric.agg:
            case Agg.COUNT:
                return Fraction(sum(b.count for b in buckets))
            case Agg.SUM:
                return Fraction(sum(b.amount_sum for b in buckets)) / UNITS
            case Agg.AVG:
                n = sum(b.amount_count for b in buckets)
                return Fraction(sum(b.amount_sum for b in buckets)) / UNITS / n if n else None
            case Agg.MIN:
                return _extreme(min, (b.amount_min for b in buckets), UNITS)
            case Agg.MAX:
                return _extreme(max, (b.amount_max for b in buckets), UNITS)
            case Agg.DISTINCT_DAYS:
                return Fraction(len(buckets))
        return self.over_times(
            metric.agg,
            [b.last_at for b in buckets] + [b.first_at for b in buckets],
            {b.day for b in buckets},
        )

    def over_events(self, metric: Metric, events: Sequence[EventFact]) -> Any:
        if metric.agg in (Agg.DISTINCT, Agg.TOP):
            return property_values(metric.agg, [e.properties.get(metric.field or "") for e in events])
        if metric.agg == Agg.COUNT:
            return Fraction(len(events))
        if metric.agg == Agg.DISTINCT_DAYS:
            return Fraction(len({local_date(e.occurred_at, self.zone) for e in events}))
        if metric.agg in _WINDOWLESS:
            return self.over_times(
                metric.agg,
                [e.occurred_at for e in events],
                {local_date(e.occurred_at, self.zone) for e in events},
            )
        values, scale = _field_values(metric.field or "amount", events)
        match metric.agg:
            case Agg.SUM:
                return sum(values, Fraction(0)) / scale
            case Agg.AVG:
                return sum(values, Fraction(0)) / scale / len(values) if values else None
            case Agg.MIN:
                return _extreme(min, values, scale)
            case Agg.MAX:
                return _extreme(max, values, scale)
        raise AssertionError(metric.agg)

    def over_times(self, agg: Agg, times: Sequence[datetime], days: set[date]) -> Fraction | None:
        if agg == Agg.STREAK:
            return Fraction(streak(days, self.today))
        if not times:
            return None
        newest_or_oldest = max(times) if agg == Agg.DAYS_SINCE_LAST else min(times)
        return Fraction((self.now - newest_or_oldest) // DAY)


_WINDOWLESS = frozenset({Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST, Agg.STREAK})


def value_key(value: Any) -> tuple[str, Any] | None:
    """A property value's identity for distinct/top: its JSON kind and value (1 = 1.0, 1 != "1");
    None for null, missing, lists and objects (they are not counted)."""
    kind = _kind(value)
    if kind is None:
        return None
    return kind, _number(value)


def value_text(value: Any) -> str:
    """The text `top` breaks ties by: strings as they are, true/false, numbers as their JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def property_values(agg: Agg, values: Sequence[Any]) -> Any:
    """`distinct` (how many different non-null scalar values) or `top` (the most frequent one; ties:
    the smallest text in C order; absent with none) of one property over the selected events."""
    counts: dict[tuple[str, Any], int] = {}
    texts: dict[tuple[str, Any], str] = {}
    firsts: dict[tuple[str, Any], Any] = {}
    for value in values:
        key = value_key(value)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        text = value_text(value)
        if key not in texts or text < texts[key]:
            texts[key] = text
        firsts.setdefault(key, value)
    if agg == Agg.DISTINCT:
        return Fraction(len(counts))
    if not counts:
        return None
    best = min(counts, key=lambda k: (-counts[k], texts[k]))
    return best[1] if best[0] == "number" else firsts[best]


def where_holds(actual: Any, expected: WhereValue) -> bool:
    """One `where` test of an event property: equality, or `!=` / `in` / `not in` (version 2)."""
    if isinstance(expected, WhereTest):
        if expected.op == Op.NE:
            return compare_value(actual, Op.NE, expected.values[0])
        return compare_value(actual, expected.op, list(expected.values))
    return same(actual, expected)


def compare_expressions(left: Fraction | None, op: Op, right: Fraction | None) -> bool:
    """Two exact values; absent on either side is false under every operator."""
    if left is None or right is None:
        return False
    return compare_ordered(left, op, right)


def compare_ordered(left: Any, op: Op, right: Any) -> bool:
    """`left OP right` for two present values of one ordered type (=, !=, <, <=, >, >=)."""
    match op:
        case Op.EQ:
            return bool(left == right)
        case Op.NE:
            return bool(left != right)
        case Op.GT:
            return bool(left > right)
        case Op.GTE:
            return bool(left >= right)
        case Op.LT:
            return bool(left < right)
        case Op.LTE:
            return bool(left <= right)
    raise AssertionError(op)


# ---------- version 2: program-local dates, date operands, versions ----------

#: Aggregates that count the program's local calendar dates (the others are durations).
LOCAL_DAY_AGGS = frozenset({Agg.DISTINCT_DAYS, Agg.STREAK})
#: The date forms `days_since` and `days_to_anniversary` read: `YYYY-MM-DD`, or a DateTime with an
#: offset (`2024-03-01T10:00:00+03:00`, `...Z`, `+0300`, seconds and fractions optional), years 1000-2999.
_DATE_PART = r"([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
DATE_ONLY = re.compile(_DATE_PART + r"\Z")
DATE_TIME = re.compile(
    _DATE_PART + r"T([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(?:Z|([+-])(0[0-9]|1[0-4]):?([0-5][0-9]))\Z"
)
_VERSION_TEXT = re.compile(r"v?([0-9]+(?:\.[0-9]+)*)\Z")


def is_utc(zone: tzinfo) -> bool:
    """Whether local dates are UTC dates (then the daily buckets answer local-day aggregates)."""
    return zone is UTC or getattr(zone, "key", None) in ("UTC", "Etc/UTC")


def local_date(at: datetime, zone: tzinfo) -> date:
    return at.astimezone(zone).date()


def reads_raw(metric: Metric, zone: tzinfo) -> bool:
    """Whether a metric must read raw events: `reads_raw_events`, or local days in a non-UTC zone
    (the daily buckets are UTC days)."""
    return metric.reads_raw_events or (metric.agg in LOCAL_DAY_AGGS and not is_utc(zone))


def days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def date_of(value: Any, zone: tzinfo) -> date | None:
    """The local date of an attribute value: `YYYY-MM-DD` as is, a DateTime with offset converted to
    `zone`; None (absent) for anything else, invalid dates (30 February) included."""
    if not isinstance(value, str):
        return None
    match = DATE_ONLY.match(value) or DATE_TIME.match(value)
    if match is None:
        return None
    year, month, day = (int(g) for g in match.groups()[:3])
    if day > days_in_month(year, month):
        return None
    if match.re is DATE_ONLY:
        return date(year, month, day)
    hour, minute, second, fraction, sign, off_h, off_m = match.groups()[3:]
    offset = timedelta(0)
    if sign is not None:
        offset = (1 if sign == "+" else -1) * timedelta(hours=int(off_h), minutes=int(off_m))
    micros = int((fraction or "").ljust(6, "0"))
    at = datetime(year, month, day, int(hour), int(minute), int(second or 0), micros, tzinfo=timezone(offset))
    return local_date(at, zone)


def anniversary_ordinal(year: int, month: int, day: int) -> int:
    """The day of `year` on which (month, day) falls; 29 February is 1 March in other years (as `age`)."""
    before = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)[month - 1]
    leap = days_in_month(year, 2) == 29
    return before + day + (1 if leap and month > 2 else 0)


def days_to_anniversary(day: date, today: date) -> int:
    """Days from today to the next date with day's month and day (0 on the day itself)."""
    this_year = anniversary_ordinal(today.year, day.month, day.day)
    current = today.timetuple().tm_yday
    if this_year >= current:
        return this_year - current
    year_length = 366 if days_in_month(today.year, 2) == 29 else 365
    return year_length - current + anniversary_ordinal(today.year + 1, day.month, day.day)


def version_key(value: Any) -> tuple[int, ...] | None:
    """Dotted numbers without trailing zeros ("v5.0" -> (5,)); None when not a version string."""
    match = _VERSION_TEXT.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    parts = [int(p) for p in match.group(1).split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def compare_version(actual: Any, op: Op, value: Value) -> bool:
    """`version(actual) OP value`: components compared as numbers, missing ones 0; absent unless a version."""
    key = version_key(actual)
    if op == Op.EXISTS:
        return (key is not None) == value
    if key is None:
        return False
    match op:
        case Op.IN:
            return any(key == version_key(v) for v in cast_list(value))
        case Op.NOT_IN:
            return all(key != version_key(v) for v in cast_list(value))
        case Op.BETWEEN:
            low, high = (version_key(v) for v in cast_list(value))
            assert low is not None
            assert high is not None
            return low <= key <= high
    other = version_key(value)
    assert other is not None
    return compare_ordered(key, op, other)


def streak(days: Iterable[date], today: date) -> int:
    """Consecutive days with an event ending today, or yesterday when today has none yet."""
    present = set(days)
    day = today if today in present else today - timedelta(days=1)
    count = 0
    while day in present:
        count += 1
        day -= timedelta(days=1)
    return count


def _field_values(name: str, events: Sequence[EventFact]) -> tuple[list[Fraction], Fraction]:
    if name == "amount":
        return [Fraction(e.amount_units) for e in events if e.amount_units is not None], UNITS
    values = [e.properties.get(name) for e in events]
    return [Fraction(str(v)) for v in values if is_number(v)], Fraction(1)


def _extreme(pick: Any, values: Iterable[Any], scale: Fraction) -> Fraction | None:
    present = [v for v in values if v is not None]
    return Fraction(pick(present)) / scale if present else None


# ---------- comparisons ----------


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Fraction, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def same(actual: Any, expected: Scalar) -> bool:
    """Equality that never equates values of different JSON types (true is not 1)."""
    kind = _kind(actual)
    return kind is not None and kind == _kind(expected) and _number(actual) == _number(expected)


def _number(value: Any) -> Any:
    if _kind(value) == "number" and not isinstance(value, Fraction):
        return Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    return value


def _ordered(actual: Any, op: Op, expected: Scalar) -> bool:
    kind = _kind(actual)
    if kind not in ("number", "string") or kind != _kind(expected):
        return False
    a, b = _number(actual), _number(expected)
    match op:
        case Op.GT:
            return bool(a > b)
        case Op.GTE:
            return bool(a >= b)
        case Op.LT:
            return bool(a < b)
        case Op.LTE:
            return bool(a <= b)
    raise AssertionError(op)


def compare_value(actual: Any, op: Op, value: Value) -> bool:
    """`actual OP value` with the absent-value and type rules of segment-conditions.md."""
    if op == Op.EXISTS:
        return (actual is not None) == value
    if actual is None:
        return False
    match op:
        case Op.EQ:
            return same(actual, value)  # type: ignore[arg-type]
        case Op.NE:
            return _kind(actual) is not None and _kind(actual) == _kind(value) and not same(actual, value)  # type: ignore[arg-type]
        case Op.IN:
            return any(same(actual, v) for v in value)  # type: ignore[union-attr]
        case Op.NOT_IN:
            return _kind(actual) is not None and all(
                _kind(actual) == _kind(v) and not same(actual, v)
                for v in value  # type: ignore[union-attr]
            )
        case Op.BETWEEN:
            low, high = cast_list(value)
            return _ordered(actual, Op.GTE, low) and _ordered(actual, Op.LTE, high)
        case Op.CONTAINS:
            if isinstance(actual, str):
                return isinstance(value, str) and value in actual
            return isinstance(actual, list) and any(same(item, value) for item in actual)  # type: ignore[arg-type]
    return _ordered(actual, op, value)  # type: ignore[arg-type]


def compare_measure(measure: Fraction | None, op: Op, value: Value) -> bool:
    """A metric is a number (or absent); the same rules as attributes."""
    return compare_value(measure, op, value)
