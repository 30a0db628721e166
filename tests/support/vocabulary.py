"""The small shared vocabulary of the segment-condition tests that generate histories and conditions.

tests/test_evaluator_equivalence.py draws member histories and JSON condition trees from it, so that
generated conditions often hold for some members and not others; tests/test_horizon_properties.py
draws on the same words. Instants sit on window edges and day boundaries; attributes mix JSON types.
(tests/support/strategies.py is the other generator: arbitrary valid trees, as `Node`s.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

Json = dict[str, Any]

DAY = timedelta(days=1)
US = timedelta(microseconds=1)
#: `now` of an example: mid-day, exactly midnight (after 28 Feb of a common year), the last
#: microsecond of a year, and a leap day.
NOWS = (
    datetime(2026, 3, 15, 10, 30, 0, 123456, tzinfo=UTC),
    datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2028, 2, 29, 12, 0, tzinfo=UTC),
)
EVENT_TYPES = ("purchase", "visit", "login")
SEGMENTS = ("base", "empty")
ORGANIZATIONS = ("org1", "org2")


# ---------- instants and attributes ----------


def edge_times(now: datetime) -> list[datetime]:
    """Instants on window edges and UTC day boundaries around `now`."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    edges = [now, now + US, now - US, now - 30 * DAY, now - 30 * DAY + US, now - 30 * DAY - US]
    edges += [
        now - 12 * timedelta(hours=1),
        now - timedelta(hours=12) + US,
        now - 7 * DAY,
        now - 7 * DAY + US,
    ]
    edges += [now - DAY, now - DAY + US, now - 2 * DAY, now - 2 * DAY + US, now - 3 * DAY, now - 40 * DAY]
    for days in range(6):
        day = midnight - days * DAY
        edges += [day, day - US, day + timedelta(hours=13)]
    return edges


def birth_dates(now: datetime) -> st.SearchStrategy[Any]:
    today = now.date()
    near = [
        today.replace(year=1990) if (today.month, today.day) != (2, 29) else today.replace(year=1992),
        today.replace(year=2000) + DAY if (today.month, today.day) != (2, 29) else today,
        today.replace(year=2000) - DAY if (today.month, today.day) != (2, 29) else today - DAY,
    ]
    return st.one_of(
        st.sampled_from([d.isoformat() for d in near]),
        st.sampled_from(["2000-02-29", "2008-02-28", "1990-06-15T10:00:00Z", "90-01-01", "1990/01/01", None]),
        st.sampled_from([19900101, ["1990-01-01"]]),
    )


SCALAR_ATTRIBUTES = st.sampled_from(
    ["Istanbul", "Ankara", "istanbul", "", "true", "3", "Android", 3, 0, -1, 2.5, 0.5, 10, True, False, None]
)
ATTRIBUTE_VALUES = st.one_of(
    SCALAR_ATTRIBUTES,
    st.sampled_from(
        [
            ["Istanbul", "a"],
            ["a", 1, True],
            [],
            [["a"], "b"],
            [1.0, 2],
            [3, "3"],
            {"a": 1},
            {"os": "Android"},
        ]
    ),
)
DEVICES = st.one_of(
    st.fixed_dictionaries({}, optional={"os": SCALAR_ATTRIBUTES, "v": st.integers(1, 3)}),
    SCALAR_ATTRIBUTES,
)


def attributes_of(now: datetime) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries(
        {},
        optional={
            "city": ATTRIBUTE_VALUES,
            "score": ATTRIBUTE_VALUES,
            "flags": ATTRIBUTE_VALUES,
            "device": DEVICES,
            "birthDate": birth_dates(now),
        },
    )


def instants_near(now: datetime) -> st.SearchStrategy[datetime]:
    return st.one_of(
        st.sampled_from([now, now - 30 * DAY, now - 30 * DAY + US, now - 3 * DAY, now - 400 * DAY]),
        st.integers(0, 100 * 86_400).map(lambda s: now - timedelta(seconds=s)),
    )


# ---------- conditions ----------

NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 5, 10, -1, 2.5, 0.5, 1.75, 6.25, 12.3456, 0.0001, 29, 30, 31]),
    st.integers(-2, 40),
)
STRINGS = st.sampled_from(
    [
        *("Istanbul", "istanbul", "Ankara", "", "a", "b", "3", "true", "Android", "And", "NEW", "ACTIVE"),
        *("AT_RISK", "LOST", "A", "B", "champions", "lost", "2000", "1990-01-01"),
    ]
)
SCALARS = st.one_of(NUMBERS, STRINGS, st.booleans())
ATTRIBUTE_PATHS = st.sampled_from(
    [
        *("city", "score", "flags", "device.os", "device", "birthDate", "missing"),
        *("pointsBalance", "createdAt", "age", "lifecycle", "abcClass", "rfm.r", "rfm.label", "churnRisk7d"),
    ]
)
WINDOWS = st.sampled_from([None, "all", "1d", "2d", "7d", "30d", "12h"])
AGGS = ("count", "sum", "avg", "min", "max", "distinct_days", "days_since_last", "days_since_first", "streak")


def comparison(draw: st.DrawFn, *, metric: bool) -> tuple[str, Any]:
    """An operator and a value the parser accepts for it."""
    ops = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "between"]
    op = draw(st.sampled_from(ops if metric else [*ops, "contains"]))
    values = NUMBERS if metric else SCALARS
    if op == "exists":
        return op, draw(st.booleans())
    if op in ("in", "not_in"):
        return op, draw(st.lists(values, max_size=3))
    if op == "between":
        bounds = st.one_of(
            st.lists(NUMBERS, min_size=2, max_size=2), st.lists(STRINGS, min_size=2, max_size=2)
        )
        return op, draw(st.lists(NUMBERS, min_size=2, max_size=2) if metric else bounds)
    if op in ("gt", "gte", "lt", "lte"):
        return op, draw(NUMBERS if metric else st.one_of(NUMBERS, STRINGS))
    return op, draw(values)


@st.composite
def attr_compares(draw: st.DrawFn) -> Json:
    op, value = comparison(draw, metric=False)
    return {"attr": draw(ATTRIBUTE_PATHS), "op": op, "value": value}


@st.composite
def metric_compares(draw: st.DrawFn) -> Json:
    agg = draw(st.sampled_from(AGGS))
    metric: Json = {"event": draw(st.sampled_from(EVENT_TYPES)), "agg": agg}
    if agg in ("sum", "avg", "min", "max"):
        metric["field"] = draw(st.sampled_from(["amount", "amount", "qty", "category"]))
    window = draw(WINDOWS)
    if window is not None:
        metric["window"] = window
    where = draw(
        st.one_of(
            st.just({}),
            st.fixed_dictionaries(
                {},
                optional={
                    "category": st.sampled_from(["coffee", "tea", 1]),
                    "qty": st.sampled_from([3, "3", 1]),
                },
            ),
        )
    )
    if where:
        metric["where"] = where
    op, value = comparison(draw, metric=True)
    return {"metric": metric, "op": op, "value": value}


PREDICATES = st.one_of(
    st.sampled_from(SEGMENTS).map(lambda key: {"segment": key}),
    st.sampled_from(["vip", "new", "gone"]).map(lambda key: {"tag": key}),
    st.sampled_from(["CUSTOMER", "DEALER", "EMPLOYEE"]).map(lambda kind: {"kind": kind}),
    st.sampled_from([*ORGANIZATIONS, "org3"]).map(lambda org: {"organization": org}),
)
LEAVES = st.one_of(attr_compares(), attr_compares(), metric_compares(), metric_compares(), PREDICATES)
CONDITIONS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=6,
)
