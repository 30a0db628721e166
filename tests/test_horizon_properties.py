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
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from domain.segments.conditions import All, AnyOf, Node, Not, parse_condition
from domain.segments.evaluate import Bucket, Evaluation, EventFact, MemberFacts
from domain.segments.facts import Needs
from domain.segments.horizon import LIMIT, earliest_change, is_time_dependent, next_change
from domain.segments.lifecycle import LifecycleThresholds
from tests.support import strategies
from tests.support.vocabulary import (
    CONDITIONS,
    EVENT_TYPES,
    NOWS,
    NUMBERS,
    attributes_of,
    edge_times,
    instants_near,
)

DAY = timedelta(days=1)
EXAMPLES = int(os.environ.get("HORIZON_EXAMPLES", "600"))
US = timedelta(microseconds=1)


# ---------- histories ----------


@dataclass(frozen=True)
class Case:
    now: datetime
    member: MemberFacts
    lifecycle: LifecycleThresholds


def event_times(now: datetime) -> st.SearchStrategy[datetime]:
    """Past instants within 60 days (window edges, midnights) and up to 5 minutes ahead."""
    past = st.integers(0, 60 * 86_400 * 10**6).map(lambda us: now - timedelta(microseconds=us))
    ahead = st.integers(1, 300 * 10**6).map(lambda us: now + timedelta(microseconds=us))
    return st.one_of(st.sampled_from(edge_times(now)), past, ahead, ahead)


@st.composite
def events(draw: st.DrawFn, now: datetime) -> tuple[str, EventFact]:
    amount = draw(st.one_of(st.none(), st.integers(0, 10**6)))
    properties = draw(
        st.fixed_dictionaries(
            {},
            optional={"category": st.sampled_from(["coffee", "tea", 1]), "qty": st.sampled_from([3, "3", 1])},
        )
    )
    return draw(st.sampled_from(EVENT_TYPES)), EventFact(draw(event_times(now)), amount, properties)


def buckets_of(facts: list[EventFact]) -> list[Bucket]:
    """The daily buckets `event_aggregates` keeps for these events."""
    by_day: dict[date, list[EventFact]] = defaultdict(list)
    for fact in facts:
        by_day[fact.occurred_at.date()].append(fact)
    found = []
    for day, group in sorted(by_day.items()):
        amounts = [e.amount_units for e in group if e.amount_units is not None]
        times = [e.occurred_at for e in group]
        found.append(
            Bucket(
                day,
                len(group),
                len(amounts),
                sum(amounts),
                min(amounts, default=None),
                max(amounts, default=None),
                min(times),
                max(times),
            )
        )
    return found


@st.composite
def cases(draw: st.DrawFn) -> Case:
    now = draw(st.one_of(st.sampled_from(NOWS), st.datetimes(timezones=st.just(UTC))))
    now = now.astimezone(UTC) if now.year > 1900 and now.year < 9000 else NOWS[0]
    drawn = draw(st.lists(events(now), max_size=12))
    by_type: dict[str, list[EventFact]] = defaultdict(list)
    for event_type, fact in drawn:
        by_type[event_type].append(fact)
    member = MemberFacts(
        member_id=1,
        external_id="m",
        kind="CUSTOMER",
        organization=None,
        attributes=draw(attributes_of(now)),
        points_balance=0,
        created_at=draw(instants_near(now)),
        joined_at=draw(instants_near(now)),
        segments=set(draw(st.lists(st.sampled_from(["base"]), max_size=1))),
        buckets={t: buckets_of(f) for t, f in by_type.items()},
        events=dict(by_type),
    )
    at_risk = draw(st.integers(1, 40))
    lifecycle = LifecycleThresholds(draw(st.integers(1, 40)), at_risk, draw(st.integers(at_risk, 100)))
    return Case(now, member, lifecycle)


# ---------- conditions ----------

TIMED_METRICS = st.fixed_dictionaries(
    {
        "metric": st.fixed_dictionaries(
            {
                "event": st.sampled_from(EVENT_TYPES),
                "agg": st.sampled_from(
                    ["days_since_last", "days_since_first", "streak", "count", "count", "distinct_days"]
                ),
                "window": st.sampled_from(["all", "1d", "2d", "7d", "30d", "12h"]),
            },
        ),
        "op": st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
        "value": st.one_of(NUMBERS, st.integers(0, 3)),
    }
)
TIMED_ATTRIBUTES = st.one_of(
    st.fixed_dictionaries(
        {
            "attr": st.sampled_from(["createdAt", "age"]),
            "op": st.sampled_from(["gte", "lt", "eq"]),
            "value": NUMBERS,
        }
    ),
    st.fixed_dictionaries(
        {
            "attr": st.just("age"),
            "op": st.just("between"),
            "value": st.lists(st.integers(0, 40), min_size=2, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {
            "attr": st.just("lifecycle"),
            "op": st.sampled_from(["eq", "ne"]),
            "value": st.sampled_from(["NEW", "ACTIVE", "AT_RISK", "LOST"]),
        }
    ),
)
TIMED_LEAVES = st.one_of(TIMED_METRICS, TIMED_ATTRIBUTES).map(parse_condition)


def trees(leaf: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        groups = st.lists(children, max_size=3).map(tuple)
        return st.one_of(groups.map(All), groups.map(AnyOf), children.map(Not))

    return st.recursive(leaf, extend, max_leaves=6)


TIMED_TREES = trees(st.one_of(TIMED_LEAVES, TIMED_LEAVES, CONDITIONS.map(parse_condition)))
TREES = st.one_of(
    TIMED_LEAVES,
    TIMED_TREES,
    TIMED_TREES,
    CONDITIONS.map(parse_condition),
    strategies.conditions(max_leaves=6),
)


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
