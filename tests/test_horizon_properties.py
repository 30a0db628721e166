"""`horizon.next_change` is exact: truth is constant on [now, next_change) and differs at next_change.

Pure tests (no database): generated condition trees (tests/support/strategies.py and the small
vocabulary of tests/support/vocabulary.py, weighted towards leaves that move with
time) over generated member histories (events on window edges, at midnight and up to five
minutes ahead, birthdays, lifecycle thresholds). `next_change` sees only the facts
`load_facts` would read as of `now`; truth is checked against the member's whole history,
so the facts it is given are shown to suffice for every later instant.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from domain.segments.conditions import Node, parse_condition
from domain.segments.evaluate import Evaluation, EventFact, MemberFacts
from domain.segments.facts import Needs
from domain.segments.horizon import LIMIT, earliest_change, is_time_dependent, next_change
from domain.segments.lifecycle import LifecycleThresholds
from tests.support.histories import TREES, Case, cases
from tests.support.vocabulary import (
    CONDITIONS,
    NOWS,
)

DAY = timedelta(days=1)
EXAMPLES = int(os.environ.get("HORIZON_EXAMPLES", "600"))
US = timedelta(microseconds=1)


# ---------- the property ----------


def as_loaded(case: Case, condition: Node) -> MemberFacts:
    """The member as `load_facts` reads it for `condition` at `now`: raw events only as far back as needed."""
    needs = Needs.of([condition])
    events: dict[str, list[EventFact]] = {}
    for event_type, reach in needs.event_lookback.items():
        low = None if reach is None else case.now - timedelta(seconds=reach)
        kept = case.member.events.get(event_type, ())
        events[event_type] = [e for e in kept if low is None or e.occurred_at > low]
    return replace(case.member, events=events, segments=set(case.member.segments))


def truth(case: Case, condition: Node, at: datetime) -> bool:
    return Evaluation(at, case.lifecycle).holds(condition, case.member)


def fraction_between(start: datetime, end: datetime, fraction: float) -> datetime:
    return min(start + (end - start) * fraction, end - US)


def probes(case: Case, end: datetime, fractions: list[float]) -> list[datetime]:
    """Instants in (now, end): spread out, and at (and next to) each event time, where a future event enters."""
    spread = [fraction_between(case.now, end, f) for f in fractions]
    times = [e.occurred_at + d for facts in case.member.events.values() for e in facts for d in (-US, 0 * US)]
    return [t for t in spread + times if case.now < t < end] + [end - US]


@settings(max_examples=EXAMPLES)
@given(case=cases(), condition=TREES, fractions=st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_truth_is_constant_until_next_change_and_differs_there(
    case: Case, condition: Node, fractions: list[float]
) -> None:
    change = next_change(condition, as_loaded(case, condition), case.now, case.lifecycle)
    before = truth(case, condition, case.now)

    event("flips" if change else "never flips")
    if change is None:
        later = [case.now + DAY, case.now + 400 * DAY, case.now + LIMIT / 2, case.now + LIMIT]
        later += probes(case, case.now + 120 * DAY, fractions)
        assert [truth(case, condition, at) for at in later] == [before] * len(later), condition
        return
    assert change > case.now
    assert is_time_dependent(condition)
    between = probes(case, change, fractions)
    assert [truth(case, condition, at) for at in between] == [before] * len(between), condition
    assert truth(case, condition, change) != before, condition


@settings(max_examples=EXAMPLES // 2)
@given(
    case=cases(),
    conditions=st.lists(TREES, min_size=1, max_size=4),
    until=st.one_of(st.none(), st.integers(-10, 90 * 86_400).map(lambda s: timedelta(seconds=s))),
)
def test_earliest_change_is_the_first_of_the_next_changes_before_a_bound(
    case: Case, conditions: list[Node], until: timedelta | None
) -> None:
    bound = None if until is None else case.now + until
    changes = [next_change(c, case.member, case.now, case.lifecycle) for c in conditions]
    expected = min((t for t in changes if t is not None and (bound is None or t < bound)), default=None)

    assert earliest_change(conditions, case.member, case.now, case.lifecycle, bound) == expected


@settings(max_examples=200)
@given(case=cases(), condition=CONDITIONS.map(parse_condition))
def test_conditions_without_moving_leaves_never_change(case: Case, condition: Node) -> None:
    if is_time_dependent(condition):
        return
    assert next_change(condition, case.member, case.now, case.lifecycle) is None
    before = truth(case, condition, case.now)
    assert truth(case, condition, case.now + 1000 * DAY) == before


def test_a_leap_day_birthday_turns_on_the_first_of_march_in_common_years() -> None:
    now = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)
    member = MemberFacts(1, "m", "CUSTOMER", None, {"birthDate": "2000-02-29"}, 0, now, now)
    condition = parse_condition({"attr": "age", "op": "gte", "value": 26})

    assert next_change(condition, member, now, LifecycleThresholds()) == datetime(2026, 3, 1, tzinfo=UTC)
    assert next_change(condition, member, datetime(2027, 2, 1, tzinfo=UTC), LifecycleThresholds()) is None


def test_an_event_accepted_ahead_of_time_enters_its_window_at_its_time() -> None:
    now = NOWS[0]
    ahead = EventFact(now + timedelta(minutes=2), None, {})
    member = MemberFacts(1, "m", "CUSTOMER", None, {}, 0, now, now, events={"visit": [ahead]})
    condition = parse_condition(
        {"metric": {"event": "visit", "agg": "count", "window": "1d"}, "op": "gte", "value": 1}
    )

    assert next_change(condition, member, now, LifecycleThresholds()) == ahead.occurred_at
    assert next_change(condition, member, ahead.occurred_at, LifecycleThresholds()) == ahead.occurred_at + DAY
