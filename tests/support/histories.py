"""Generated members for the horizon and closure properties: histories around window edges and
midnights, and condition trees weighted towards leaves that move with time."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hypothesis import strategies as st

from domain.segments.conditions import All, AnyOf, Node, Not, parse_condition
from domain.segments.evaluate import Bucket, EventFact, MemberFacts
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
