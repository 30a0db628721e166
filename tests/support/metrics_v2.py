"""Hypothesis strategies for the version 2 metric operands (issue 17, "metrics"): `distinct`, `top`,
`where` tests (`!=`, `in`, `not in`), ledger operands and arithmetic comparisons.

Every node drawn is in normal form (`parse_condition(condition_to_json(n)) == n`): a comparison of one
metric (or ledger operand) with a number is drawn as the version 1 form, as the parsers yield it.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import strategies as st

from domain.segments.conditions import (
    ARITH_OPS,
    EXPR_OPS,
    FIELD_AGGS,
    NAME,
    NOT_IN_ARITHMETIC,
    TOP_OPS,
    WINDOWLESS_AGGS,
    Agg,
    Arith,
    Expr,
    Ledger,
    LedgerCompare,
    LedgerKind,
    Metric,
    MetricCompare,
    Node,
    Number,
    Op,
    Scalar,
    Value,
    WhereTest,
    WhereValue,
    Window,
    normalise_compare,
    reads_measure,
)

T = TypeVar("T")


def _given(strategy: st.SearchStrategy[T] | None, default: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`strategy` unless None (a strategy's truth is always True: no `or`)."""
    return default if strategy is None else strategy


def _strategies() -> tuple[st.SearchStrategy[Scalar], st.SearchStrategy[int | float]]:
    from tests.support import strategies  # imports this module: resolved lazily

    return strategies.scalars(), strategies.numbers()


def where_values(scalars: st.SearchStrategy[Scalar] | None = None) -> st.SearchStrategy[WhereValue]:
    """A where value: a literal (equality), or `!=` / `in` / `not in`."""
    values = _given(scalars, _strategies()[0])
    return st.one_of(
        values,
        values.map(lambda v: WhereTest(Op.NE, (v,))),
        st.builds(WhereTest, st.sampled_from([Op.IN, Op.NOT_IN]), st.lists(values, max_size=3).map(tuple)),
    )


def property_names() -> st.SearchStrategy[str]:
    """Property names for distinct/top (never `amount`)."""
    return st.one_of(
        st.sampled_from(("category", "store", "size")),
        st.from_regex(NAME, fullmatch=True).filter(lambda n: n != "amount"),
    )


def windows() -> st.SearchStrategy[Window | None]:
    from tests.support import strategies

    return st.none() | strategies.windows()


@st.composite
def v2_metrics(
    draw: st.DrawFn,
    events: st.SearchStrategy[str] | None = None,
    aggs: tuple[Agg, ...] | None = None,
    where: st.SearchStrategy[WhereValue] | None = None,
    names: st.SearchStrategy[str] | None = None,
    spans: st.SearchStrategy[Window | None] | None = None,
) -> Metric:
    """Any metric, `where` tests included; `aggs` narrows the aggregates, `names` the properties
    (fields and `where` names), `spans` the windows."""
    from tests.support import strategies

    agg = draw(st.sampled_from(aggs or tuple(Agg)))
    if agg in (Agg.DISTINCT, Agg.TOP):
        field: str | None = draw(_given(names, property_names()))
    elif agg in FIELD_AGGS:
        field = draw(st.one_of(st.just("amount"), _given(names, strategies.property_names())))
    else:
        field = None
    window = None if agg in WINDOWLESS_AGGS else draw(_given(spans, windows()))
    pairs = draw(
        st.dictionaries(_given(names, strategies.property_names()), _given(where, where_values()), max_size=2)
    )
    return Metric(draw(_given(events, strategies.event_types())), agg, field, window, tuple(pairs.items()))


def ledgers() -> st.SearchStrategy[Ledger]:
    return st.builds(Ledger, st.sampled_from(list(LedgerKind)), windows())


def arithmetic_aggs(day_counts: bool = False) -> tuple[Agg, ...]:
    """The aggregates arithmetic takes; with `day_counts`, days_since_last/first too (the time horizon
    answers a re-check instant for those, not always a flip: tests/test_horizon_v2_metrics.py)."""
    excluded = set(NOT_IN_ARITHMETIC) | (
        {Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST} if not day_counts else set()
    )
    return tuple(a for a in Agg if a not in excluded)


def exprs(
    operand: st.SearchStrategy[Expr] | None = None,
    numbers: st.SearchStrategy[int | float] | None = None,
    max_leaves: int = 4,
) -> st.SearchStrategy[Expr]:
    """Arithmetic over metrics, ledger operands and numbers."""
    leaf = st.one_of(
        _given(operand, st.one_of(v2_metrics(aggs=arithmetic_aggs()), ledgers())),
        (_given(numbers, _strategies()[1])).map(Number),
    )

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.builds(Arith, st.sampled_from(ARITH_OPS), children, children)

    return st.recursive(leaf, extend, max_leaves=max_leaves)


@st.composite
def expr_compares(
    draw: st.DrawFn,
    sides: st.SearchStrategy[Expr] | None = None,
    operand: st.SearchStrategy[Expr] | None = None,
) -> Node:
    """`left OP right`, at least one side reading a measure (else the left is `operand`), normalised
    as the parsers do."""
    side = _given(sides, exprs())
    left = draw(side)
    right = draw(side)
    if not (reads_measure(left) or reads_measure(right)):
        left = draw(_given(operand, st.one_of(v2_metrics(aggs=arithmetic_aggs()), ledgers())))
    return normalise_compare(left, draw(st.sampled_from(sorted(EXPR_OPS))), right)


@st.composite
def top_compares(
    draw: st.DrawFn,
    metric: st.SearchStrategy[Metric] | None = None,
    values: st.SearchStrategy[Scalar] | None = None,
) -> MetricCompare:
    scalars = _given(values, _strategies()[0])
    op = draw(st.sampled_from(sorted(TOP_OPS)))
    value: Value = draw(st.lists(scalars, max_size=3)) if op in (Op.IN, Op.NOT_IN) else draw(scalars)
    return MetricCompare(draw(_given(metric, v2_metrics(aggs=(Agg.TOP,)))), op, value)


@st.composite
def number_compares(
    draw: st.DrawFn,
    operand: st.SearchStrategy[Metric | Ledger],
    values: st.SearchStrategy[int | float] | None = None,
) -> Node:
    """A metric (distinct, or any with where tests) or a ledger operand against numbers."""
    numbers = _given(values, _strategies()[1])
    op = draw(st.sampled_from([op for op in Op if op != Op.CONTAINS]))
    if op == Op.EXISTS:
        value: Value = draw(st.booleans())
    elif op in (Op.IN, Op.NOT_IN):
        value = list[Scalar](draw(st.lists(numbers, max_size=3)))
    elif op == Op.BETWEEN:
        value = list[Scalar](draw(st.lists(numbers, min_size=2, max_size=2)))
    else:
        value = draw(numbers)
    found = draw(operand)
    if isinstance(found, Ledger):
        return LedgerCompare(found, op, value)
    return MetricCompare(found, op, value)


def v2_metric_leaves() -> st.SearchStrategy[Node]:
    """Every kind of leaf this helper adds."""
    return st.one_of(
        top_compares(),
        number_compares(st.one_of(v2_metrics(aggs=tuple(a for a in Agg if a != Agg.TOP)), ledgers())),
        expr_compares(),
    )


# ---------- a small vocabulary: conditions that often hold for some generated members ----------

SPANS = st.sampled_from(
    [None, Window(1, "d"), Window(2, "d"), Window(7, "d"), Window(30, "d"), Window(12, "h")]
)
PROPERTY_NAMES = st.sampled_from(["category", "qty"])
PROPERTY_VALUES: st.SearchStrategy[Scalar] = st.sampled_from(
    ["coffee", "tea", 1, True, "3", 2.5, 0, 3, False]
)


def small_v2_leaves(
    events: tuple[str, ...], numbers: st.SearchStrategy[int | float]
) -> st.SearchStrategy[Node]:
    """The v2 leaves over the given event types, the properties `category` and `qty`, small windows."""
    where = where_values(PROPERTY_VALUES)
    event_types = st.sampled_from(events)

    def metric(aggs: tuple[Agg, ...]) -> st.SearchStrategy[Metric]:
        return v2_metrics(event_types, aggs, where, PROPERTY_NAMES, SPANS)

    ledger = st.builds(Ledger, st.sampled_from(list(LedgerKind)), SPANS)
    operand: st.SearchStrategy[Expr] = st.one_of(metric(arithmetic_aggs(day_counts=True)), ledger)
    small_numbers = st.one_of(numbers, st.sampled_from([0, 0.2, 0.5, 2]))
    return st.one_of(
        top_compares(metric((Agg.TOP,)), PROPERTY_VALUES),
        number_compares(st.one_of(metric((Agg.DISTINCT, Agg.COUNT, Agg.SUM)), ledger), numbers),
        expr_compares(exprs(operand, small_numbers, max_leaves=3), operand),
    )
