"""When does the passing of time alone next flip a condition for one member? Pure.

Some leaves change truth with no event: windowed metrics (events leave the
window, events accepted a little ahead of time enter it), `days_since_*`,
`streak`, and the built-ins `createdAt`, `age` and `lifecycle`. Each can change
value only at a few instants that its member's facts determine (an event's
exit time, the day a day count reaches a compared number, a UTC midnight, a
birthday, a lifecycle threshold). Between two consecutive such instants every
leaf is constant, so evaluating the whole condition at each candidate in order
finds the first flip exactly. Cheaper still: the parts of the condition time
cannot change are evaluated once (a condition that is false through a
constant part of an `and` never flips), and the whole condition is evaluated
only where one of its leaves changes truth.

Segment and tag references count as constant here: the segment they name has
its own due time and the scheduler evaluates readers after what they read.
Candidates further than `LIMIT` ahead are ignored (about a century).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from domain.segments.closures import Context, compile_condition, predicate
from domain.segments.conditions import (
    WINDOWLESS_AGGS,
    Agg,
    All,
    AnyOf,
    AttrCompare,
    DateCompare,
    DateFn,
    ExprCompare,
    Ledger,
    LedgerCompare,
    LedgerKind,
    Metric,
    MetricCompare,
    Node,
    Not,
    OrgMetricCompare,
    Value,
    node_ledgers,
    node_metrics,
    walk,
)
from domain.segments.evaluate import (
    BIRTH_DATE,
    DAY,
    Evaluation,
    EventFact,
    MemberFacts,
    anniversary_ordinal,
    local_date,
    reads_raw,
    where_holds,
)
from domain.segments.lifecycle import LifecycleThresholds

#: How far ahead candidates are looked for.
LIMIT = timedelta(days=36_600)
US = timedelta(microseconds=1)
#: Built-in attributes whose value moves with the clock.
TIMED_PATHS = frozenset({"createdAt", "age", "lifecycle"})


def is_time_dependent(condition: Node) -> bool:
    """Whether some leaf of `condition` can change truth with no event (see the module docstring)."""
    return any(_moves_with_time(node) for node in walk(condition))


def reads_local_dates(condition: Node) -> bool:
    """Whether some leaf counts the program's local dates (its truth moves with the timezone)."""
    for node in walk(condition):
        if isinstance(node, DateCompare):
            return True
        if isinstance(node, AttrCompare) and node.path == "age":
            return True
        if isinstance(node, MetricCompare) and node.metric.agg in (Agg.DISTINCT_DAYS, Agg.STREAK):
            return True
    return False


def _moves_with_time(node: Node) -> bool:
    if isinstance(node, AttrCompare):
        return node.path in TIMED_PATHS
    if isinstance(node, (MetricCompare, OrgMetricCompare)):
        return node.metric.agg in WINDOWLESS_AGGS or node.metric.window is not None
    if isinstance(node, (LedgerCompare, ExprCompare)):
        return any(m.window is not None or m.agg in WINDOWLESS_AGGS for m in node_metrics(node)) or any(
            _ledger_moves(ledger) for ledger in node_ledgers(node)
        )
    return isinstance(node, DateCompare)


def _ledger_moves(ledger: Ledger) -> bool:
    """Windows slide; lots leave `points_expiring` when they expire, whatever its window."""
    return ledger.window is not None or ledger.kind == LedgerKind.EXPIRING


def next_change(
    condition: Node,
    member: MemberFacts,
    now: datetime,
    lifecycle: LifecycleThresholds,
    until: datetime | None = None,
    zone: tzinfo = UTC,
) -> datetime | None:
    """The first instant after `now` where the condition's truth differs from now, with no new events
    (or, when a day count stands inside arithmetic, at most `RECHECK_DAYS` ahead: an earlier instant
    to evaluate again, until which the truth is constant).

    None when time alone never flips it within `LIMIT`, or before `until` when
    given (a caller that only wants an earlier instant than one it has). The
    member's facts must reach back as far as the windows do from `now` (what
    `load_facts` reads).
    """
    end = now + LIMIT if until is None else min(until - US, now + LIMIT)
    if end <= now:
        return None
    moving = _fold_constants(condition, Context(member, Evaluation(now, lifecycle, zone)))
    if isinstance(moving, bool):
        return None
    check = compile_condition(moving)
    before = check(Context(member, Evaluation(now, lifecycle, zone)))
    leaves = [node for node in walk(moving) if _moves_with_time(node)]
    recheck = min((t for leaf in leaves if (t := _recheck(leaf, member, now)) is not None), default=None)
    if recheck is not None and recheck > end:
        recheck = None
    for instant in heapq.merge(*(_leaf_flips(leaf, member, now, end, lifecycle, zone) for leaf in leaves)):
        if recheck is not None and instant >= recheck:
            return recheck
        if check(Context(member, Evaluation(instant, lifecycle, zone))) != before:
            return instant
    return recheck


def earliest_change(
    conditions: Iterable[Node],
    member: MemberFacts,
    now: datetime,
    lifecycle: LifecycleThresholds,
    until: datetime | None = None,
    zone: tzinfo = UTC,
) -> datetime | None:
    """The earliest `next_change` of several conditions (before `until` when given), or None."""
    found = None
    for condition in conditions:
        instant = next_change(condition, member, now, lifecycle, until, zone)
        if instant is not None:
            found = until = instant
    return found


def _fold_constants(node: Node, context: Context) -> Node | bool:
    """The condition with each part time cannot change replaced by its truth now; a bool if nothing moves."""
    match node:
        case All(children) | AnyOf(children):
            absorbing = isinstance(node, AnyOf)  # true decides an `any`, false an `all`
            kept: list[Node] = []
            for child in children:
                folded = _fold_constants(child, context)
                if folded is absorbing:
                    return absorbing
                if not isinstance(folded, bool):
                    kept.append(folded)
            if not kept:
                return not absorbing
            return AnyOf(tuple(kept)) if absorbing else All(tuple(kept))
        case Not(child):
            folded = _fold_constants(child, context)
            return (not folded) if isinstance(folded, bool) else Not(folded)
    return node if _moves_with_time(node) else predicate(node)(context)


def _leaf_flips(
    leaf: Node,
    member: MemberFacts,
    now: datetime,
    end: datetime,
    lifecycle: LifecycleThresholds,
    zone: tzinfo = UTC,
) -> Iterator[datetime]:
    """The instants in (now, end], in order, where the leaf's truth changes."""
    check = predicate(leaf)
    truth = check(Context(member, Evaluation(now, lifecycle, zone)))
    for instant in _leaf_candidates(leaf, member, now, end, lifecycle, zone):
        holds = check(Context(member, Evaluation(instant, lifecycle, zone)))
        if holds != truth:
            truth = holds
            yield instant


def _leaf_candidates(
    leaf: Node,
    member: MemberFacts,
    now: datetime,
    end: datetime,
    lifecycle: LifecycleThresholds,
    zone: tzinfo = UTC,
) -> Iterator[datetime]:
    """The leaf's candidate instants in (now, end], ascending and distinct. An anniversary recurs every
    year up to `end`: its candidates are generated lazily, in order, as far as they are read."""
    if isinstance(leaf, DateCompare) and leaf.fn == DateFn.DAYS_TO_ANNIVERSARY:
        return _anniversary_instants(leaf.path, leaf.value, member, now, end, zone)
    return iter(sorted({t for t in _leaf_instants(leaf, member, now, lifecycle, zone) if now < t <= end}))


def _leaf_instants(
    node: Node, member: MemberFacts, now: datetime, lifecycle: LifecycleThresholds, zone: tzinfo = UTC
) -> Iterable[datetime]:
    match node:
        case MetricCompare(metric, _, value):
            return _metric_instants(metric, value, member, now, zone)
        case AttrCompare("createdAt", _, value):
            return _day_steps(member.created_at, value, now)
        case AttrCompare("age", _, value):
            return _birthdays(member.attributes.get("birthDate"), value, now, zone)
        case DateCompare(path, fn, _, value):
            return _date_instants(path, fn, value, member, now, zone)
        case AttrCompare("lifecycle", _, _):
            return _lifecycle_instants(member, lifecycle)
        case LedgerCompare() | ExprCompare():
            found: list[datetime] = []
            for metric in node_metrics(node):
                if metric.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST):
                    found.extend(_every_day_step(metric, member, now))
                else:  # a streak: every midnight while it may change; windows: events entering, leaving
                    found.extend(_metric_instants(metric, 0, member, now))
            for ledger in node_ledgers(node):
                found.extend(_ledger_instants(ledger, member))
            return found
        case OrgMetricCompare(metric, _, value):
            return _org_instants(metric, value, member, now)
    return ()


#: A day count inside arithmetic changes the expression every day: its steps are tried for this many
#: days ahead; with no flip by then `next_change` answers the last of them, an earlier instant than
#: the flip (if any) at which the scheduler evaluates the member again (and looks further).
RECHECK_DAYS = 400


def reads_day_counts_in_arithmetic(node: Node) -> bool:
    """Whether `next_change` may answer a re-check instant (not a flip) for this leaf (`_recheck`)."""
    return isinstance(node, ExprCompare) and any(
        m.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST) for m in node_metrics(node)
    )


def _every_day_step(metric: Metric, member: MemberFacts, now: datetime) -> list[datetime]:
    """The next RECHECK_DAYS instants where a days_since count inside arithmetic goes up."""
    origin = _time_origin(metric, member)
    if origin is None:
        return []
    current = (now - origin) // DAY
    return [origin + k * DAY for k in range(current + 1, current + RECHECK_DAYS + 1)]


def _recheck(leaf: Node, member: MemberFacts, now: datetime) -> datetime | None:
    """The last day step `_every_day_step` tries for the leaf (the earliest over its day counts)."""
    if not reads_day_counts_in_arithmetic(leaf):
        return None
    day_counts = [m for m in node_metrics(leaf) if m.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST)]
    found = [steps[-1] for m in day_counts if (steps := _every_day_step(m, member, now))]
    return min(found, default=None)


def _ledger_instants(ledger: Ledger, member: MemberFacts) -> list[datetime]:
    """Entries enter a window when they happen and leave it a window later; a lot enters
    `points_expiring(W)` W before it expires and leaves it when it expires."""
    width = None if ledger.window is None else timedelta(seconds=ledger.window.seconds)
    if ledger.kind == LedgerKind.EXPIRING:
        return [t for lot in member.lots for t in (lot.expires_at, lot.expires_at - (width or timedelta(0)))]
    if width is None:
        return []
    kind = "earned" if ledger.kind == LedgerKind.EARNED else "redeemed"
    return [t for e in member.ledger if e.kind == kind for t in (e.at, e.at + width)]


def _org_instants(metric: Metric, value: Value, member: MemberFacts, now: datetime) -> Iterable[datetime]:
    """`_metric_instants` over the organization tree's raw events (a roll-up never reads buckets)."""
    if member.organization is None:
        return ()
    events = [
        e
        for e in member.organization_events.get(metric.event, ())
        if all(where_holds(e.properties.get(name), v) for name, v in metric.where)
    ]
    if metric.agg == Agg.STREAK:
        return _midnights({e.occurred_at.date() for e in events}, now)
    if metric.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST):
        if not events:
            return ()
        times = [e.occurred_at for e in events]
        origin = max(times) if metric.agg == Agg.DAYS_SINCE_LAST else min(times)
        return _day_steps(origin, value, now)
    if metric.window is None:
        return ()
    width = timedelta(seconds=metric.window.seconds)
    return [t for e in events for t in (e.occurred_at, e.occurred_at + width)]


# ---------- metrics ----------


def _metric_instants(
    metric: Metric, value: Value, member: MemberFacts, now: datetime, zone: tzinfo = UTC
) -> Iterable[datetime]:
    if metric.agg == Agg.STREAK:
        return _midnights(_event_days(metric, member, zone), now, zone)
    if metric.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST):
        origin = _time_origin(metric, member)
        return () if origin is None else _day_steps(origin, value, now)
    if metric.window is None:  # the whole history, future events included: constant
        return ()
    width = timedelta(seconds=metric.window.seconds)
    return [t for e in _selected(metric, member) for t in (e.occurred_at, e.occurred_at + width)]


def _selected(metric: Metric, member: MemberFacts) -> Sequence[EventFact]:
    """The member's raw events of the metric's type that its `where` keeps, whatever their time."""
    events = member.events.get(metric.event, ())
    if not metric.where:
        return events
    return [
        e for e in events if all(where_holds(e.properties.get(name), value) for name, value in metric.where)
    ]


def _event_days(metric: Metric, member: MemberFacts, zone: tzinfo = UTC) -> set[date]:
    if reads_raw(metric, zone):
        return {local_date(e.occurred_at, zone) for e in _selected(metric, member)}
    return {b.day for b in member.buckets.get(metric.event, ())}


def _time_origin(metric: Metric, member: MemberFacts) -> datetime | None:
    """The newest (days_since_last) or oldest (days_since_first) event time the metric counts from."""
    if metric.reads_raw_events:
        times = [e.occurred_at for e in _selected(metric, member)]
    else:
        buckets = member.buckets.get(metric.event, ())
        times = [b.last_at for b in buckets] + [b.first_at for b in buckets]
    if not times:
        return None
    return max(times) if metric.agg == Agg.DAYS_SINCE_LAST else min(times)


def _midnights(days: set[date], now: datetime, zone: tzinfo = UTC) -> list[datetime]:
    """A streak changes only at local midnights, and is 0 from two days after its newest day on."""
    if not days:
        return []
    today = local_date(now, zone)
    last = max(max(days), today) + 2 * DAY
    count = (last - today).days
    return [_midnight(today + k * DAY, zone) for k in range(1, count + 1)]


# ---------- whole-day counts ----------


def _thresholds(value: Value) -> set[int]:
    """The integers k where an integer-valued comparison with `value` may change between k - 1 and k."""
    numbers = value if isinstance(value, list) else [value]
    found: set[int] = set()
    for number in numbers:
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            found.update((math.ceil(number), math.floor(number) + 1))
    return found


def _day_steps(origin: datetime, value: Value, now: datetime) -> list[datetime]:
    """floor((t - origin) / 24 h) reaches k at origin + k days; only the k the comparison cares about."""
    current = (now - origin) // DAY
    ahead = range(current + 1, current + LIMIT.days + 2)
    return [origin + k * DAY for k in sorted(_thresholds(value)) if k in ahead]


def _birthdays(birth_date: object, value: Value, now: datetime, zone: tzinfo = UTC) -> list[datetime]:
    """`age` reaches k on the first day of year + k on or after the birthday (evaluate.py `age`)."""
    match = BIRTH_DATE.match(birth_date) if isinstance(birth_date, str) else None
    if match is None:
        return []
    year, month, day = (int(g) for g in match.groups())
    current = Evaluation(now, zone=zone).age(birth_date)
    assert current is not None
    found = []
    for k in sorted(_thresholds(value)):
        if current < k <= current + LIMIT.days // 365 + 1 and 1 <= year + k < date.max.year:
            found.append(_midnight(_first_day_on_or_after(year + k, month, day), zone))
    return found


def _first_day_on_or_after(year: int, month: int, day: int) -> date:
    """The first date of `year` whose (month, day) is not before the given pair (which may be invalid)."""
    if month < 1:
        return date(year, 1, 1)
    if month > 12:
        return date(year + 1, 1, 1)
    first = date(year, month, 1)
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    if day <= 1:
        return first
    return first + (day - 1) * DAY if first + (day - 1) * DAY < following else following


def _midnight(day: date, zone: tzinfo = UTC) -> datetime:
    """The first instant of a local date, in UTC (a midnight in a DST gap: the end of the gap)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


# ---------- version 2: date operands ----------


def _date_instants(
    path: str, fn: DateFn, value: Value, member: MemberFacts, now: datetime, zone: tzinfo
) -> list[datetime]:
    """The local midnights where `days_since(PATH)` reaches a value the comparison cares about (it is
    k on the local date `day + k`); `days_to_anniversary` recurs: see `_anniversary_instants`."""
    day = Evaluation(now, zone=zone).date_at(path, member)
    if day is None or fn != DateFn.DAYS_SINCE:
        return []
    current = (local_date(now, zone) - day).days
    ahead = range(current + 1, current + LIMIT.days + 2)
    return [_midnight(day + k * DAY, zone) for k in sorted(_thresholds(value)) if k in ahead]


def _anniversary_instants(
    path: str, value: Value, member: MemberFacts, now: datetime, end: datetime, zone: tzinfo
) -> Iterator[datetime]:
    """The local midnights in (now, end], ascending, where `days_to_anniversary(PATH)` may change truth.

    The count falls by one each midnight to 0 on the anniversary A, then jumps to about a year: it is
    k on A - k, k - 1 on A - k + 1, and jumps on A + 1. A is the day `evaluate.anniversary_ordinal`
    gives, the rule `age` follows (29 February is 1 March in common years), for every year up to
    `end`: a flip may be decades ahead when another leaf (`age >= 34`) holds it back until then.
    Year Y's days lie in [A(Y) - 366, A(Y) + 1] and A(Y + 1) - 366 >= A(Y) - 1, so once year Y is
    queued every queued day before A(Y) - 1 is final.
    """
    day = Evaluation(now, zone=zone).date_at(path, member)
    if day is None:
        return
    today = local_date(now, zone)
    last = local_date(end, zone)
    offsets = sorted({-1, *(d for k in _thresholds(value) if 0 <= k <= 366 for d in (k, k - 1))})
    queued: list[date] = []
    emitted = today
    for year in range(today.year, min(last.year + 1, date.max.year - 1) + 1):
        anniversary = date(year, 1, 1) + (anniversary_ordinal(year, day.month, day.day) - 1) * DAY
        for offset in offsets:
            heapq.heappush(queued, anniversary - offset * DAY)
        final = anniversary - DAY if year <= last.year else date.max
        while queued and queued[0] < final:
            candidate = heapq.heappop(queued)
            if candidate > emitted:
                if candidate > last:
                    return
                emitted = candidate
                yield _midnight(candidate, zone)
    while queued:
        candidate = heapq.heappop(queued)
        if emitted < candidate <= last:
            emitted = candidate
            yield _midnight(candidate, zone)


# ---------- lifecycle ----------


def _lifecycle_instants(member: MemberFacts, lifecycle: LifecycleThresholds) -> list[datetime]:
    """NEW ends `new_days` after joining; AT_RISK and LOST begin so long after the last purchase."""
    found = [member.joined_at + lifecycle.new_days * DAY]
    last = max((b.last_at for b in member.buckets.get("purchase", ())), default=None)
    if last is not None:
        found += [last + lifecycle.at_risk_days * DAY, last + lifecycle.lost_days * DAY]
    return found
