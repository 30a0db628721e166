"""The compiled closures (`closures.py`) answer exactly what the reference evaluator (`Evaluation.holds`) answers.

Pure tests (no database): the generated members and condition trees of
tests/test_horizon_properties.py (events on window edges, at midnight and ahead of
`now`, amounts, properties, buckets) and of tests/support/strategies.py, evaluated
at `now` and at later instants, with one context shared by several conditions (as
the engine shares one per member across its definitions).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.segments.closures import Context, comparator, compile_condition, holds, predicate
from domain.segments.conditions import Node, Op, parse_condition
from domain.segments.evaluate import Evaluation, EventFact, MemberFacts, compare_measure
from domain.segments.facts import Needs
from tests.support.histories import TREES, Case, cases
from tests.support.vocabulary import CONDITIONS, NUMBERS

EXAMPLES = int(os.environ.get("CLOSURE_EXAMPLES", "400"))
LATER = st.sampled_from([timedelta(0), timedelta(microseconds=1), timedelta(hours=13), timedelta(days=31)])


@settings(max_examples=EXAMPLES)
@given(
    case=cases(),
    conditions=st.lists(st.one_of(TREES, CONDITIONS.map(parse_condition)), max_size=4),
    later=LATER,
)
def test_closures_agree_with_the_reference_evaluator(
    case: Case, conditions: list[Node], later: timedelta
) -> None:
    evaluation = Evaluation(case.now + later, case.lifecycle)
    shared = Context(case.member, evaluation)

    expected = [evaluation.holds(condition, case.member) for condition in conditions]

    assert [holds(condition, case.member, evaluation) for condition in conditions] == expected
    assert [predicate(condition)(shared) for condition in conditions] == expected
    assert [
        compile_condition(condition)(Context(case.member, evaluation)) for condition in conditions
    ] == expected


@given(
    op=st.sampled_from(list(Op)),
    value=st.one_of(NUMBERS, st.lists(NUMBERS, min_size=2, max_size=2), st.booleans()),
    units=st.one_of(st.none(), st.integers(-5, 400_000)),
    scale=st.sampled_from([1, 10_000]),
)
def test_a_comparator_compares_like_compare_measure(
    op: Op, value: object, units: int | None, scale: int
) -> None:
    if (op == Op.EXISTS) != isinstance(value, bool) or (op == Op.BETWEEN) != isinstance(value, list):
        return
    if op in (Op.IN, Op.NOT_IN) and not isinstance(value, list):
        value = [value]
    measure = None if units is None else Fraction(units, scale)

    assert comparator(op, value, scale)(units) == compare_measure(measure, op, value)  # type: ignore[arg-type]


def test_a_where_on_true_is_not_a_where_on_1() -> None:
    # given two metrics that differ only by true against 1, and a member whose event has qty = true
    metric = {"event": "purchase", "agg": "count"}
    on_1 = {"metric": {**metric, "where": {"qty": 1}}, "op": "gte", "value": 1}
    on_true = {"metric": {**metric, "where": {"qty": True}}, "op": "gte", "value": 1}
    now = datetime(2026, 3, 15, tzinfo=UTC)
    member = MemberFacts(
        1, "m", "CUSTOMER", None, {}, 0, now, now, events={"purchase": [EventFact(now, None, {"qty": True})]}
    )
    evaluation = Evaluation(now)

    # when both are measured in one context, and their raw events are planned for loading
    shared = Context(member, evaluation)
    found = [predicate(parse_condition(c))(shared) for c in (on_1, on_true)]
    needs = Needs.of(parse_condition(c) for c in (on_1, on_true))

    # then each keeps its own filter
    assert found == [False, True]
    assert len(needs.selections["purchase"]) == 2
