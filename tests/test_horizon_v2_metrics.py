"""The time-flip property for the v2 metric operands: ledger operands (windows slide, lots expire) and
arithmetic over windowed metrics. `next_change` is exact: truth is constant on [now, next_change) and
differs there; with no change, truth stays put. Pure (no database), as tests/test_horizon_properties.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from domain.segments.conditions import Node, parse_condition, walk
from domain.segments.evaluate import Evaluation, EventFact, LedgerFact, LotFact, MemberFacts
from domain.segments.facts import Needs
from domain.segments.horizon import (
    LIMIT,
    RECHECK_DAYS,
    is_time_dependent,
    next_change,
    reads_day_counts_in_arithmetic,
)
from tests.support.histories import TIMED_LEAVES, Case, buckets_of, cases, event_times, trees
from tests.support.metrics_v2 import small_v2_leaves
from tests.support.vocabulary import EVENT_TYPES, NUMBERS

DAY = timedelta(days=1)
US = timedelta(microseconds=1)


@st.composite
def ledger_cases(draw: st.DrawFn) -> Case:
    case = draw(cases())
    now = case.now
    entries = draw(
        st.lists(
            st.builds(
                LedgerFact, event_times(now), st.integers(-20, 50), st.sampled_from(["earned", "redeemed"])
            ),
            max_size=6,
        )
    )
    expiries = st.one_of(event_times(now), st.integers(0, 40 * 86_400).map(lambda s: now + s * DAY / 86_400))
    lots = draw(st.lists(st.builds(LotFact, expiries, st.integers(1, 30)), max_size=4))
    return replace(case, member=replace(case.member, ledger=entries, lots=lots))


LEAVES = small_v2_leaves(EVENT_TYPES, NUMBERS)
TREES = st.one_of(LEAVES, trees(st.one_of(LEAVES, LEAVES, TIMED_LEAVES)))


def as_loaded(case: Case, condition: Node) -> MemberFacts:
    """What `load_facts` reads for `condition` at `now`: events and entries only as far back as needed."""
    needs = Needs.of([condition])
    events: dict[str, list[EventFact]] = {}
    for event_type, reach in needs.event_lookback.items():
        low = None if reach is None else case.now - timedelta(seconds=reach)
        kept = case.member.events.get(event_type, ())
        events[event_type] = [e for e in kept if low is None or e.occurred_at > low]
    reach = needs.ledger_lookback
    entries = [
        e
        for e in case.member.ledger
        if needs.ledger and (reach is None or e.at > case.now - timedelta(seconds=reach))
    ]
    lots = list(case.member.lots) if needs.lots else []
    return replace(case.member, events=events, ledger=entries, lots=lots, segments=set(case.member.segments))


def truth(case: Case, condition: Node, at: datetime) -> bool:
    return Evaluation(at, case.lifecycle).holds(condition, case.member)


def probes(case: Case, end: datetime, fractions: list[float]) -> list[datetime]:
    spread = [min(case.now + (end - case.now) * f, end - US) for f in fractions]
    member = case.member
    times = [e.occurred_at for facts in member.events.values() for e in facts]
    times += [e.at for e in member.ledger] + [lot.expires_at for lot in member.lots]
    near = [t + d for t in times for d in (-US, 0 * US, 30 * DAY - US, 30 * DAY, -30 * DAY)]
    return [t for t in spread + near if case.now < t < end] + [end - US]


@settings(max_examples=400)
@given(case=ledger_cases(), condition=TREES, fractions=st.lists(st.floats(0, 1), min_size=1, max_size=5))
def test_truth_is_constant_until_next_change_and_differs_there(
    case: Case, condition: Node, fractions: list[float]
) -> None:
    change = next_change(condition, as_loaded(case, condition), case.now, case.lifecycle)
    before = truth(case, condition, case.now)

    event("flips" if change else "never flips")
    if change is None:
        later = [case.now + DAY, case.now + 400 * DAY, case.now + LIMIT / 2]
        later += probes(case, case.now + 120 * DAY, fractions)
        assert [truth(case, condition, at) for at in later] == [before] * len(later), condition
        return
    assert change > case.now
    assert is_time_dependent(condition)
    between = probes(case, change, fractions)
    assert [truth(case, condition, at) for at in between] == [before] * len(between), condition
    if truth(case, condition, change) == before:  # allowed only as a day count's re-check instant
        assert any(reads_day_counts_in_arithmetic(leaf) for leaf in walk(condition)), condition
        assert change <= case.now + (RECHECK_DAYS + 1) * DAY, condition
        event("re-check")


def test_a_lot_enters_points_expiring_a_window_before_it_expires_and_leaves_when_it_expires() -> None:
    now = datetime.fromisoformat("2026-03-15T10:30:00+00:00")
    condition = parse_condition({"ledger": "expiring", "window": "30d", "op": "gt", "value": 0})
    member = MemberFacts(1, "m", "CUSTOMER", None, {}, 0, now, now, lots=[LotFact(now + 40 * DAY, 5)])
    lifecycle = Evaluation(now).lifecycle

    enters = next_change(condition, member, now, lifecycle)
    assert enters == now + 10 * DAY
    assert next_change(condition, member, enters, lifecycle) == now + 40 * DAY


def test_a_day_count_in_arithmetic_flips_on_its_day_or_is_rechecked_after_400_days() -> None:
    now = datetime.fromisoformat("2026-03-15T10:30:00.123456+00:00")
    bought = now - timedelta(days=2, hours=1)
    purchase = EventFact(bought, 10_000, {})
    member = MemberFacts(
        1, "m", "CUSTOMER", None, {}, 0, now, now, buckets={"purchase": buckets_of([purchase])}
    )
    lifecycle = Evaluation(now).lifecycle
    doubled = parse_condition(
        {
            "left": {"mul": [{"event": "purchase", "agg": "days_since_last", "window": "1d"}, {"number": 2}]},
            "op": "gte",
            "right": {"number": 10},
        }
    )  # the window of a days_since is ignored, as in version 1
    constant = parse_condition(
        {
            "left": {
                "sub": [
                    {"event": "purchase", "agg": "days_since_last"},
                    {"event": "purchase", "agg": "days_since_first"},
                ]
            },
            "op": "gt",
            "right": {"number": 5},
        }
    )

    assert next_change(doubled, member, now, lifecycle) == bought + 5 * DAY
    assert next_change(constant, member, now, lifecycle) == bought + (2 + RECHECK_DAYS) * DAY
