"""Conditions compiled to Python closures: the in-memory evaluator without walking the tree. Pure.

`predicate(node)` answers exactly what `Evaluation.holds` answers (the reference,
evaluate.py; tests/test_closures.py checks both agree), but the tree is matched
once per definition, not once per member and node. A `Context` is one member at
one instant: each distinct metric is measured once in it, whichever definitions
read it. Measures are integers where they can be (counts, days, amounts in units
of 10^-4) and thresholds are scaled to the same units once, so comparing is an
integer (or, for averages, fraction) comparison with no conversion per member.

Limits: attribute comparisons and metrics over a numeric property (not `amount`)
go through `Evaluation` as they are; a `Context` must not outlive a change of its
member's events or buckets (segments and tags may change: no metric reads them).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, cast

from domain.db.types import AMOUNT_SCALE
from domain.segments.conditions import (
    PROPERTY_AGGS,
    Agg,
    All,
    AnyOf,
    Arith,
    AttrCompare,
    DateCompare,
    Expr,
    ExprCompare,
    HasTag,
    InOrganization,
    InOrganizationTree,
    InSegment,
    KindIs,
    Ledger,
    LedgerCompare,
    Metric,
    MetricCompare,
    Node,
    Not,
    Number,
    Op,
    OrgMetricCompare,
    Value,
    VersionCompare,
    WhereValue,
    cast_list,
    is_number,
    typed_where,
)
from domain.segments.evaluate import (
    DAY,
    LOCAL_DAY_AGGS,
    Evaluation,
    EventFact,
    MemberFacts,
    compare_expressions,
    compare_measure,
    compare_value,
    compare_version,
    is_utc,
    local_date,
    property_values,
    streak,
    where_holds,
)

#: A measure in its scaled units (count, days or amount units), None when absent.
Measure = int | Fraction | None
UNITS = 10**AMOUNT_SCALE
_WINDOWLESS = frozenset({Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST, Agg.STREAK})


class Context:
    """One member at one instant, with the measures taken so far."""

    __slots__ = ("evaluation", "measures", "member", "now")

    def __init__(self, member: MemberFacts, evaluation: Evaluation) -> None:
        self.member = member
        self.evaluation = evaluation
        self.now: datetime = evaluation.now
        self.measures: dict[object, Measure] = {}


Predicate = Callable[[Context], bool]
Measurer = Callable[[Context], Measure]

#: Predicates of the definitions seen, by node identity (the node is kept, so the id stays its own).
_predicates: dict[int, tuple[Node, Predicate]] = {}
_PREDICATES_KEPT = 20_000
#: One measurer per distinct metric (by `_metric_key`: True and 1 differ in a `where`).
_measurers: dict[tuple[object, ...], Measurer] = {}


def predicate(node: Node) -> Predicate:
    """The closure of a long-lived condition (a definition's), compiled once and kept."""
    found = _predicates.get(id(node))
    if found is not None and found[0] is node:
        return found[1]
    if len(_predicates) >= _PREDICATES_KEPT:
        _predicates.clear()
    compiled = _compile(node)
    _predicates[id(node)] = (node, compiled)
    return compiled


def holds(node: Node, member: MemberFacts, evaluation: Evaluation) -> bool:
    """`evaluation.holds(node, member)`, through the kept closure of `node`."""
    return predicate(node)(Context(member, evaluation))


def compile_condition(node: Node) -> Predicate:
    """The closure of a tree made on the fly: its branches compiled afresh, its leaves' closures kept."""
    return _compile(node) if isinstance(node, (All, AnyOf, Not)) else predicate(node)


def _compile(node: Node) -> Predicate:
    match node:
        case All(children):
            parts = tuple(compile_condition(c) for c in children)
            return lambda context: all(part(context) for part in parts)
        case AnyOf(children):
            parts = tuple(compile_condition(c) for c in children)
            return lambda context: any(part(context) for part in parts)
        case Not(child):
            inner = compile_condition(child)
            return lambda context: not inner(context)
        case AttrCompare(path, op, value):
            return lambda context: compare_value(
                context.evaluation.attribute(path, context.member), op, value
            )
        case MetricCompare(metric, op, value) if metric.agg == Agg.DISTINCT:  # a count: a number
            measure_distinct, compare_count = _property_measurer(metric), comparator(op, value, 1)
            return lambda context: compare_count(measure_distinct(context))
        case MetricCompare(metric, op, value) if metric.agg in PROPERTY_AGGS:
            measure_property = _property_measurer(metric)
            return lambda context: compare_value(measure_property(context), op, value)
        case MetricCompare(metric, op, value):
            return _metric_predicate(metric, op, value)
        case LedgerCompare(ledger, op, value):
            measure_ledger, compare_points = _ledger_measurer(ledger), comparator(op, value, 1)
            return lambda context: compare_points(measure_ledger(context))
        case ExprCompare(left, op, right):
            left_value, right_value = _expression(left), _expression(right)
            return lambda context: compare_expressions(left_value(context), op, right_value(context))
        case InSegment(key):
            return lambda context: key in context.member.segments
        case HasTag(key):
            return lambda context: key in context.member.tags
        case KindIs(kind):
            wanted = kind.value
            return lambda context: context.member.kind == wanted
        case InOrganization(external_id):
            return lambda context: context.member.organization == external_id
        case InOrganizationTree(external_id):
            return lambda context: external_id in context.member.organization_ancestors
        case OrgMetricCompare(metric, op, value):
            return _org_metric_predicate(metric, op, value)
        case DateCompare(path, fn, op, value):
            return lambda context: compare_measure(
                context.evaluation.date_days(path, fn, context.member), op, value
            )
        case VersionCompare(path, op, value):
            return lambda context: compare_version(
                context.evaluation.attribute(path, context.member), op, value
            )
    raise AssertionError(node)


#: Roll-ups measured, shared by the members of one organization tree: (events, now, metric key) ->
#: (the tree's events, kept so that their id stays theirs, the measure). `load_facts` hands the
#: members of one organization the same mapping; a new load is a new mapping.
_org_measures: dict[tuple[int, datetime, tuple[object, ...]], tuple[object, Measure]] = {}
_ORG_MEASURES_KEPT = 65_536


def _org_metric_predicate(metric: Metric, op: Op, value: Value) -> Predicate:
    """`org.AGG(...)`, measured once per organization tree and instant: count, sum and avg from the
    tree's `_Timeline` (a due-time search measures one tree at every instant an event enters or
    leaves the window: logarithmic each, not a pass over the tree's events), the others through
    the reference evaluator.

    A roll-up is a number or absent (distinct and top are not rolled up): it compares as a
    metric of scale 1 does."""
    key = ("org", *_metric_key(metric))
    compare = comparator(op, value, 1)
    by_timeline = metric.agg in _TIMELINE_AGGS

    def holds_for(context: Context) -> bool:
        measures = context.measures
        if key not in measures:
            member = context.member
            tree = member.organization_events
            shared = (id(tree), context.now, key)
            found = _org_measures.get(shared)
            if member.organization is None or found is None or found[0] is not tree:
                if len(_org_measures) >= _ORG_MEASURES_KEPT:
                    _org_measures.clear()
                if member.organization is not None and by_timeline:
                    found = (tree, _timeline(metric, tree).measure(metric, context.now))
                else:
                    found = (tree, context.evaluation.org_measure(metric, member))
                if member.organization is not None:
                    _org_measures[shared] = found
            measures[key] = found[1]
        return compare(measures[key])

    return holds_for


_TIMELINE_AGGS = frozenset({Agg.COUNT, Agg.SUM, Agg.AVG})
#: Timelines of the trees seen: (events, metric key) -> (the events, kept so that their id stays
#: theirs, the timeline); `load_facts` gives each load new lists.
_timelines: dict[tuple[int, tuple[object, ...]], tuple[object, _Timeline]] = {}


class _Timeline:
    """A roll-up's events (its type, passing its `where`) in time order with running totals of the
    values it adds up, so that count, sum and average over any window take two bisections. Exact:
    the totals are the Fractions `Evaluation.org_measure` adds, in another order."""

    __slots__ = ("counts", "scale", "sums", "times")

    def __init__(self, metric: Metric, events: Sequence[EventFact]) -> None:
        tests = tuple((name, _where_test(value)) for name, value in metric.where)
        chosen = sorted(
            (e for e in events if all(test(e.properties.get(n)) for n, test in tests)),
            key=lambda e: e.occurred_at,
        )
        name = metric.field or "amount"
        self.scale = UNITS if name == "amount" else 1
        self.times = [e.occurred_at for e in chosen]
        self.counts = [0]  # events with a value, up to each index
        self.sums = [Fraction(0)]
        for e in chosen:
            if name == "amount":
                found: Fraction | None = None if e.amount_units is None else Fraction(e.amount_units)
            else:
                raw = e.properties.get(name)
                found = Fraction(str(raw)) if is_number(raw) else None
            self.counts.append(self.counts[-1] + (found is not None))
            self.sums.append(self.sums[-1] + found if found is not None else self.sums[-1])

    def measure(self, metric: Metric, now: datetime) -> Fraction | None:
        """`Evaluation.org_measure` of a count, sum or avg at `now` (window `low < t <= now`)."""
        if metric.window is None:  # no window: every event, as `Evaluation.selects`
            low, high = 0, len(self.times)
        else:
            low = bisect_right(self.times, now - timedelta(seconds=metric.window.seconds))
            high = bisect_right(self.times, now)
        if metric.agg == Agg.COUNT:
            return Fraction(max(high - low, 0))
        total = (self.sums[high] - self.sums[low]) / self.scale if high > low else Fraction(0)
        if metric.agg == Agg.SUM:
            return total
        present = self.counts[high] - self.counts[low] if high > low else 0
        return total / present if present else None


def _timeline(metric: Metric, tree: Mapping[str, Sequence[EventFact]]) -> _Timeline:
    events = tree.get(metric.event, ())
    key = (id(events), _metric_key(metric))
    found = _timelines.get(key)
    if found is None or found[0] is not events:
        if len(_timelines) >= _ORG_MEASURES_KEPT:
            _timelines.clear()
        found = _timelines[key] = (events, _Timeline(metric, events))
    return found[1]


def _metric_key(metric: Metric) -> tuple[object, ...]:
    return (metric.event, metric.agg, metric.field, metric.window, typed_where(metric.where))


def _metric_predicate(metric: Metric, op: Op, value: Value) -> Predicate:
    measure, scale = measurer(metric)
    compare = comparator(op, value, scale)

    def holds_for(context: Context) -> bool:
        measures = context.measures
        if measure in measures:
            return compare(measures[measure])
        found = measures[measure] = measure(context)
        return compare(found)

    return holds_for


# ---------- version 2: expressions, ledger operands, property aggregates ----------

#: A value of an expression: exact, or None when absent.
Exact = Callable[[Context], Fraction | None]


def _expression(expr: Expr) -> Exact:
    """`Evaluation.expr` as a closure: metrics through their shared measurers (a metric read by
    a comparison and an expression is measured once per context), the ledger once per context."""
    match expr:
        case Number(value):
            constant = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
            return lambda context: constant
        case Ledger():
            return _ledger_measurer(expr)
        case Arith(op, left, right):
            a, b = _expression(left), _expression(right)

            def arithmetic(context: Context) -> Fraction | None:
                x, y = a(context), b(context)
                if x is None or y is None:
                    return None
                match op:
                    case "add":
                        return x + y
                    case "sub":
                        return x - y
                    case "mul":
                        return x * y
                return x / y if y else None

            return arithmetic
    if expr.agg in PROPERTY_AGGS:  # distinct (top is not arithmetic): a count of values
        return _property_measurer(expr)
    measure, scale = measurer(expr)

    def scaled(context: Context) -> Fraction | None:
        measures = context.measures
        found = measures[measure] if measure in measures else measures.setdefault(measure, measure(context))
        return None if found is None else Fraction(found) / scale

    return scaled


def _ledger_measurer(ledger: Ledger) -> Exact:
    """`Evaluation.ledger`, once per context whichever definitions read it."""
    key = ("ledger", ledger.kind, ledger.window)

    def measure(context: Context) -> Fraction | None:
        measures = context.measures
        if key in measures:
            return cast(Fraction | None, measures[key])
        found = measures[key] = context.evaluation.ledger(ledger, context.member)
        return found

    return measure


def _property_measurer(metric: Metric) -> Callable[[Context], Any]:
    """`distinct` / `top` as `Evaluation.measure` gives them (a count, or the winning value), over
    the raw events the closures select, once per context."""
    key = ("property", *_metric_key(metric))
    select = _selector(metric)
    agg, name = metric.agg, metric.field or ""

    def measure(context: Context) -> Any:
        measures = context.measures
        if key not in measures:
            measures[key] = property_values(agg, [e.properties.get(name) for e in select(context)])
        return measures[key]

    return measure


# ---------- comparisons ----------


def _exact(number: Any, scale: int) -> int | Fraction:
    """A threshold in the measure's units, exactly (a float by its shortest decimal, as evaluate.py)."""
    scaled = (Fraction(str(number)) if isinstance(number, float) else Fraction(number)) * scale
    return scaled.numerator if scaled.denominator == 1 else scaled


def comparator(op: Op, value: Value, scale: int) -> Callable[[Measure], bool]:
    """`measure / scale OP value` with the absent-value rules of `compare_value` (metrics compare numbers)."""
    if op == Op.EXISTS:
        wanted = bool(value)
        return lambda x: (x is not None) == wanted
    if op == Op.CONTAINS:
        return lambda x: False
    if op in (Op.IN, Op.NOT_IN):
        chosen = frozenset(_exact(v, scale) for v in cast_list(value))  # ints and fractions hash alike
        if op == Op.IN:
            return lambda x: x is not None and x in chosen
        return lambda x: x is not None and x not in chosen
    if op == Op.BETWEEN:
        low, high = (_exact(v, scale) for v in cast_list(value))
        return lambda x: x is not None and low <= x <= high
    t = _exact(value, scale)
    match op:
        case Op.EQ:
            return lambda x: x is not None and x == t
        case Op.NE:
            return lambda x: x is not None and x != t
        case Op.GT:
            return lambda x: x is not None and x > t
        case Op.GTE:
            return lambda x: x is not None and x >= t
        case Op.LT:
            return lambda x: x is not None and x < t
        case Op.LTE:
            return lambda x: x is not None and x <= t
    raise AssertionError(op)


# ---------- measures ----------


def measurer(metric: Metric) -> tuple[Measurer, int]:
    """The function measuring `metric` in a context, and the scale of its units (kept per metric)."""
    scale = UNITS if metric.agg in (Agg.SUM, Agg.AVG, Agg.MIN, Agg.MAX) else 1
    if metric.field not in (None, "amount"):  # a numeric property: exact fractions, as evaluate.py
        return _shared(metric, lambda context: context.evaluation.measure(metric, context.member)), 1
    if metric.reads_raw_events:
        return _shared(metric, _over_events(metric)), scale
    if metric.agg in LOCAL_DAY_AGGS:  # version 2: UTC days from buckets, local days from raw events
        by_buckets, by_events = _over_buckets(metric), _over_events(metric)
        return _shared(metric, lambda c: by_buckets(c) if is_utc(c.evaluation.zone) else by_events(c)), scale
    return _shared(metric, _over_buckets(metric)), scale


def _shared(metric: Metric, fresh: Measurer) -> Measurer:
    """One measurer per distinct metric, so that every definition reading it shares its measure."""
    key = (metric.event, metric.agg, metric.field, metric.window, typed_where(metric.where))
    return _measurers.setdefault(key, fresh)


def _over_buckets(metric: Metric) -> Measurer:
    event, agg = metric.event, metric.agg
    if agg == Agg.COUNT:
        return lambda c: sum(b.count for b in c.member.buckets.get(event, ()))
    if agg == Agg.SUM:
        return lambda c: sum(b.amount_sum for b in c.member.buckets.get(event, ()))
    if agg == Agg.DISTINCT_DAYS:
        return lambda c: len(c.member.buckets.get(event, ()))
    if agg == Agg.AVG:

        def average(c: Context) -> Measure:
            buckets = c.member.buckets.get(event, ())
            n = sum(b.amount_count for b in buckets)
            return Fraction(sum(b.amount_sum for b in buckets), n) if n else None

        return average
    if agg in (Agg.MIN, Agg.MAX):
        pick = min if agg == Agg.MIN else max

        def extreme(c: Context) -> Measure:
            buckets = c.member.buckets.get(event, ())
            found = [b.amount_min if agg == Agg.MIN else b.amount_max for b in buckets]
            present = [v for v in found if v is not None]
            return pick(present) if present else None

        return extreme
    if agg == Agg.STREAK:
        return lambda c: streak({b.day for b in c.member.buckets.get(event, ())}, c.evaluation.today)
    newest = agg == Agg.DAYS_SINCE_LAST

    def days_since(c: Context) -> Measure:
        buckets = c.member.buckets.get(event, ())
        if not buckets:
            return None
        origin = max(b.last_at for b in buckets) if newest else min(b.first_at for b in buckets)
        return (c.now - origin) // DAY

    return days_since


def _selector(metric: Metric) -> Callable[[Context], Sequence[EventFact]]:
    """The member's raw events a metric reads: its type, in its window, passing its `where` tests
    (as `Evaluation.selects`)."""
    event, where = metric.event, metric.where
    seconds = None if metric.window is None or metric.agg in _WINDOWLESS else metric.window.seconds
    tests = tuple((name, _where_test(value)) for name, value in where)

    def selected(c: Context) -> Sequence[EventFact]:
        events = c.member.events.get(event, ())
        if seconds is not None:
            now = c.now
            low = now - timedelta(seconds=seconds)
            events = [e for e in events if low < e.occurred_at <= now]
        if tests:
            events = [e for e in events if all(test(e.properties.get(n)) for n, test in tests)]
        return events

    return selected


def _where_test(expected: WhereValue) -> Callable[[Any], bool]:
    """`where_holds(actual, expected)` as a function of `actual`; equality with a string or a
    boolean without the general type dispatch (the common `category = "coffee"`)."""
    if isinstance(expected, str):
        return lambda actual: isinstance(actual, str) and actual == expected
    if isinstance(expected, bool):
        return lambda actual: isinstance(actual, bool) and actual == expected
    return lambda actual: where_holds(actual, expected)


def _over_events(metric: Metric) -> Measurer:
    agg = metric.agg
    selected = _selector(metric)

    if agg == Agg.COUNT:
        return lambda c: len(selected(c))
    if agg == Agg.DISTINCT_DAYS:
        return lambda c: len({local_date(e.occurred_at, c.evaluation.zone) for e in selected(c)})
    if agg == Agg.STREAK:
        return lambda c: streak(
            {local_date(e.occurred_at, c.evaluation.zone) for e in selected(c)}, c.evaluation.today
        )
    if agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST):
        pick_time = max if agg == Agg.DAYS_SINCE_LAST else min

        def days_since(c: Context) -> Measure:
            times = [e.occurred_at for e in selected(c)]
            return (c.now - pick_time(times)) // DAY if times else None

        return days_since

    def amounts(c: Context) -> list[int]:
        return [e.amount_units for e in selected(c) if e.amount_units is not None]

    match agg:
        case Agg.SUM:
            return lambda c: sum(amounts(c))
        case Agg.AVG:

            def average(c: Context) -> Measure:
                found = amounts(c)
                return Fraction(sum(found), len(found)) if found else None

            return average
        case Agg.MIN:
            return lambda c: min(amounts(c), default=None)
        case Agg.MAX:
            return lambda c: max(amounts(c), default=None)
    raise AssertionError(agg)
