"""Hypothesis strategies for condition trees (domain/segments/conditions.py), shared by the test files.

Every tree that `conditions()` draws is valid: `parse_condition(condition_to_json(t)) == t`, within
the node and depth limits. The building blocks (`scalars`, `metrics`, `attr_compares`, ...) are
exposed for tests that need one kind of node, e.g. evaluator tests that pin the event types.
"""

from __future__ import annotations

from hypothesis import strategies as st

from domain.enums import MemberKind
from domain.segments.conditions import (
    BUILTIN_PATHS,
    EVENT_TYPE,
    FIELD_AGGS,
    KEY,
    MAX_DEPTH,
    MAX_NODES,
    MAX_WINDOW_DAYS,
    NAME,
    PATH,
    PROPERTY_AGGS,
    WINDOWLESS_AGGS,
    Agg,
    All,
    AnyOf,
    AttrCompare,
    DateCompare,
    DateFn,
    HasTag,
    InOrganization,
    InOrganizationTree,
    InSegment,
    KindIs,
    Metric,
    MetricCompare,
    Node,
    Not,
    Op,
    OrgMetricCompare,
    Scalar,
    Value,
    VersionCompare,
    Window,
    walk,
)
from tests.support.metrics_v2 import v2_metric_leaves

#: Event types the seed material uses; mixed with arbitrary ones so that evaluators see both.
COMMON_EVENTS = ("visit", "purchase", "login", "sale", "training_completed", "suggestion_submitted")
#: Attribute names that collide with words of the rule language or look odd.
AWKWARD_PATHS = ("kind", "organization", "true", "FALSE", "Not", "and", "in", "where", "count", "exists", "_")
#: Characters that stress string escaping: quotes, backslashes, controls, non-ASCII.
AWKWARD_TEXT = st.sampled_from(
    ['"', "\\", '\\"', "\n", "\t", "\r", "\x00", "\x7f", "é", "İ", "☕", "\u2028", " "]
)

ORDERING_OPS = (Op.GT, Op.GTE, Op.LT, Op.LTE)


def texts(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """Unicode strings, often with quotes, backslashes and control characters."""
    pieces = st.lists(st.one_of(st.text(max_size=4), AWKWARD_TEXT), max_size=4).map("".join)
    return st.one_of(st.text(max_size=max_size), pieces).filter(lambda s: min_size <= len(s) <= max_size)


def numbers() -> st.SearchStrategy[int | float]:
    """Finite ints and floats (including -0.0 and floats with integral values such as 1.0)."""
    return st.one_of(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-1000, 1000).map(float),
    )


def _numeric_scalars() -> st.SearchStrategy[Scalar]:
    return numbers()


def _text_scalars() -> st.SearchStrategy[Scalar]:
    return texts()


def scalars() -> st.SearchStrategy[Scalar]:
    """Any value a condition compares with: strings, numbers, booleans."""
    return st.one_of(texts(), numbers(), st.booleans())


def paths() -> st.SearchStrategy[str]:
    """Attribute paths: built-ins, plain and dotted names, and names that are rule keywords."""
    return st.one_of(
        st.sampled_from(sorted(BUILTIN_PATHS)),
        st.sampled_from(("city", "device.os", "device.appVersion", "tier")),
        st.sampled_from(AWKWARD_PATHS),
        st.from_regex(PATH, fullmatch=True),
    )


def keys() -> st.SearchStrategy[str]:
    """Segment and tag keys."""
    return st.one_of(st.sampled_from(("vip", "at-risk", "lost_2024")), st.from_regex(KEY, fullmatch=True))


def event_types() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(COMMON_EVENTS), st.from_regex(EVENT_TYPE, fullmatch=True))


def property_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(("amount", "category", "size")), st.from_regex(NAME, fullmatch=True))


def windows() -> st.SearchStrategy[Window]:
    """Windows up to the longest allowed, in days or in hours."""
    return st.one_of(
        st.builds(Window, st.integers(1, MAX_WINDOW_DAYS), st.just("d")),
        st.builds(Window, st.integers(1, MAX_WINDOW_DAYS * 24), st.just("h")),
    )


@st.composite
def metrics(draw: st.DrawFn, events: st.SearchStrategy[str] | None = None) -> Metric:
    """Any valid metric: a field exactly for sum/avg/min/max, no window for the windowless aggregates."""
    agg = draw(st.sampled_from([a for a in Agg if a not in PROPERTY_AGGS]))  # v2: metrics_v2.py
    field = draw(st.one_of(st.just("amount"), property_names())) if agg in FIELD_AGGS else None
    window = None if agg in WINDOWLESS_AGGS else draw(st.none() | windows())
    where = draw(st.dictionaries(property_names(), scalars(), max_size=3))
    return Metric(draw(events or event_types()), agg, field, window, tuple(where.items()))


@st.composite
def attr_compares(draw: st.DrawFn) -> AttrCompare:
    """A comparison of an attribute with a value of the type its operator takes."""
    op = draw(st.sampled_from(list(Op)))
    if op == Op.EXISTS:
        value: Value = draw(st.booleans())
    elif op in (Op.IN, Op.NOT_IN):
        value = draw(st.lists(scalars(), max_size=4))
    elif op == Op.BETWEEN:
        value = draw(
            st.lists(_numeric_scalars(), min_size=2, max_size=2)
            | st.lists(_text_scalars(), min_size=2, max_size=2)
        )
    elif op in ORDERING_OPS:
        value = draw(st.one_of(numbers(), texts()))
    else:
        value = draw(scalars())
    return AttrCompare(draw(paths()), op, value)


@st.composite
def metric_compares(draw: st.DrawFn, events: st.SearchStrategy[str] | None = None) -> MetricCompare:
    """A comparison of a metric with numbers (or exists with true/false); never contains."""
    op = draw(st.sampled_from([op for op in Op if op != Op.CONTAINS]))
    if op == Op.EXISTS:
        value: Value = draw(st.booleans())
    elif op in (Op.IN, Op.NOT_IN):
        value = draw(st.lists(_numeric_scalars(), max_size=4))
    elif op == Op.BETWEEN:
        value = draw(st.lists(_numeric_scalars(), min_size=2, max_size=2))
    else:
        value = draw(numbers())
    return MetricCompare(draw(metrics(events)), op, value)


def leaves() -> st.SearchStrategy[Node]:
    """Every kind of leaf node."""
    return st.one_of(
        # ---- version 2 leaves, one line per helper (metrics: distinct, top, ledger, arithmetic) ----
        v2_metric_leaves(),
        # ---- version 1 ----
        attr_compares(),
        metric_compares(),
        st.builds(InSegment, keys()),
        st.builds(HasTag, keys()),
        st.builds(KindIs, st.sampled_from(list(MemberKind))),
        st.builds(InOrganization, texts(min_size=1, max_size=128)),
        *version_2_leaves(),  # the condition language version 2 (issue 17): each helper's strategies
        *V2_LEAVES,
    )


# ---------- version 2 leaves (issue 17), combined into `leaves` at its one marked line ----------


@st.composite
def org_metric_compares(draw: st.DrawFn) -> OrgMetricCompare:
    """`org.AGG(...)`: any metric comparison, scoped to the member's organization tree."""
    compared = draw(metric_compares())
    return OrgMetricCompare(compared.metric, compared.op, compared.value)


def organization_leaves() -> list[st.SearchStrategy[Node]]:
    """The "orgs" helper's leaves: roll-ups and `in_organization` (descendants)."""
    return [org_metric_compares(), st.builds(InOrganizationTree, texts(min_size=1, max_size=128))]


def version_2_leaves() -> list[st.SearchStrategy[Node]]:
    return [*organization_leaves()]


def _within_limits(node: Node) -> bool:
    return len(walk(node)) <= MAX_NODES and _depth(node) <= MAX_DEPTH


def _depth(node: Node) -> int:
    match node:
        case All(children) | AnyOf(children):
            return 1 + max((_depth(c) for c in children), default=0)
        case Not(child):
            return 1 + _depth(child)
    return 0


def conditions(max_leaves: int = 12, leaf: st.SearchStrategy[Node] | None = None) -> st.SearchStrategy[Node]:
    """Arbitrary valid trees: nested (and empty) all/any, not of anything, every leaf kind."""

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        groups = st.lists(children, max_size=4).map(tuple)
        return st.one_of(groups.map(All), groups.map(AnyOf), children.map(Not))

    return st.recursive(leaves() if leaf is None else leaf, extend, max_leaves=max_leaves).filter(
        _within_limits
    )


# ---------- version 2 (issue 17) leaves: the one place they join `leaves()` is V2_LEAVES ----------


@st.composite
def date_compares(draw: st.DrawFn) -> DateCompare:
    """ "dates": `days_since(PATH)` / `days_to_anniversary(PATH)` compared like a metric (numbers)."""
    compared = draw(metric_compares())
    path = draw(st.one_of(st.just("joinedAt"), st.just("birthDate"), paths()))
    return DateCompare(path, draw(st.sampled_from(list(DateFn))), compared.op, compared.value)


def version_literals() -> st.SearchStrategy[str]:
    """Versions with missing components and leading zeros: "5", "v5.0", "05.00.1"."""
    part = st.integers(0, 10**18 - 1).map(str) | st.sampled_from(["0", "00", "05", "10"])
    dotted = st.lists(part, min_size=1, max_size=4).map(".".join)
    return st.tuples(st.sampled_from(["", "v"]), dotted).map("".join)


@st.composite
def version_compares(draw: st.DrawFn) -> VersionCompare:
    """ "dates": `version(PATH)` OP "5.0" with every operator versions take."""
    op = draw(st.sampled_from([Op.EQ, Op.NE, *ORDERING_OPS, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.EXISTS]))
    value: Value
    if op == Op.EXISTS:
        value = draw(st.booleans())
    elif op in (Op.IN, Op.NOT_IN):
        value = list[Scalar](draw(st.lists(version_literals(), max_size=3)))
    elif op == Op.BETWEEN:
        value = list[Scalar](draw(st.lists(version_literals(), min_size=2, max_size=2)))
    else:
        value = draw(version_literals())
    return VersionCompare(draw(paths()), op, value)


def v2_dates_leaves() -> st.SearchStrategy[Node]:
    """The leaves of the "dates" helper (channels is in BUILTIN_PATHS, exists=false in attr_compares)."""
    return st.one_of(date_compares(), version_compares())


V2_LEAVES: list[st.SearchStrategy[Node]] = [v2_dates_leaves()]
