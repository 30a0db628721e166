"""The condition tree of ../shared/segment-conditions.md: typed nodes, JSON in and out. Pure.

`parse_condition` turns the canonical JSON tree into nodes and refuses anything
malformed with the JSON path of the fault (`$.all[1].op`); `condition_to_json`
is its inverse. Both evaluators (`evaluate`, `compile`) and the rule language
(`rules`) work on these nodes only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from domain.enums import MemberKind
from domain.errors import InvalidInput

MAX_NODES = 500
MAX_DEPTH = 32
MAX_LIST = 1000
MAX_TEXT = 1000
MAX_WINDOW_DAYS = 3660

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}\Z")
KEY = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
WINDOW = re.compile(r"([1-9][0-9]{0,5})([dh])\Z")

Scalar = str | int | float | bool
Value = Scalar | list[Scalar]


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    EXISTS = "exists"
    BETWEEN = "between"


ORDERING_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})


class Agg(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    DISTINCT_DAYS = "distinct_days"
    DAYS_SINCE_LAST = "days_since_last"
    DAYS_SINCE_FIRST = "days_since_first"
    STREAK = "streak"
    DISTINCT = "distinct"
    TOP = "top"


#: Aggregates over a field (`sum(purchase.amount)`); the others take none.
FIELD_AGGS = frozenset({Agg.SUM, Agg.AVG, Agg.MIN, Agg.MAX})
#: Aggregates over the values of an event property (`distinct(purchase.store)`, `top(...)`): version 2.
PROPERTY_AGGS = frozenset({Agg.DISTINCT, Agg.TOP})
#: The operators `top` compares with (its value is a property value, not a number).
TOP_OPS = frozenset({Op.EQ, Op.NE, Op.IN, Op.NOT_IN})
#: The operators of a comparison between expressions (arithmetic, metric to metric).
EXPR_OPS = frozenset({Op.EQ, Op.NE, Op.GT, Op.GTE, Op.LT, Op.LTE})
#: Aggregates that may not stand inside arithmetic (`top` is not a number).
NOT_IN_ARITHMETIC = frozenset({Agg.TOP})
#: Aggregates that ignore the window: they look at the whole history.
WINDOWLESS_AGGS = frozenset({Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST, Agg.STREAK})
#: Aggregates that are absent (not 0) over no events.
ABSENT_WHEN_EMPTY = frozenset({Agg.AVG, Agg.MIN, Agg.MAX, Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST})

#: Attribute paths the engine computes instead of reading `attributes`.
BUILTIN_PATHS = frozenset(
    {
        *("pointsBalance", "lifecycle", "abcClass", "rfm.r", "rfm.f", "rfm.m", "rfm.label", "age"),
        *("createdAt", "churnRisk7d"),
        "channels",  # version 2: the member's accepted channels, a list of strings
    }
)

#: Version 2: a dotted version literal of `version(PATH)` (at most `MAX_VERSION_PARTS` numbers).
MAX_VERSION_PARTS = 4
VERSION = re.compile(rf"v?[0-9]{{1,18}}(\.[0-9]{{1,18}}){{0,{MAX_VERSION_PARTS - 1}}}\Z")
#: The built-in date of `days_since(joinedAt)`: when the member joined the program.
JOINED_AT = "joinedAt"


@dataclass(frozen=True)
class Window:
    """`n` days or hours before now; the whole history when the metric has no window."""

    amount: int
    unit: str  # "d" or "h"

    @property
    def seconds(self) -> int:
        return self.amount * (86_400 if self.unit == "d" else 3_600)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class Metric:
    event: str
    agg: Agg
    field: str | None = None  # "amount" or a numeric property name; only for FIELD_AGGS
    window: Window | None = None  # None: "all"
    where: tuple[tuple[str, WhereValue], ...] = ()

    @property
    def reads_raw_events(self) -> bool:
        """Whether daily buckets cannot answer it exactly (windows, filters, property fields)."""
        if self.where or self.field not in (None, "amount") or self.agg in PROPERTY_AGGS:
            return True
        return self.window is not None and self.agg not in WINDOWLESS_AGGS


@dataclass(frozen=True)
class WhereTest:
    """A version 2 `where` test other than equality: `store != "S9"`, `category in [..]`, `not in [..]`.

    Tree: `{"ne": V}`, `{"in": [..]}`, `{"not_in": [..]}`. It has `compare_value`'s semantics: a
    missing (or null) property, or one of another JSON type than the value(s), fails every test.
    """

    op: Op  # NE, IN or NOT_IN
    values: tuple[Scalar, ...]

    def to_json(self) -> dict[str, Any]:
        if self.op == Op.NE:
            return {"ne": self.values[0]}
        return {self.op.value: list(self.values)}


WhereValue = Scalar | WhereTest
WHERE_OPS = {"ne": Op.NE, "in": Op.IN, "not_in": Op.NOT_IN}


def _typename(value: WhereValue) -> str:
    if isinstance(value, WhereTest):
        return f"{value.op.value}:" + ",".join(type(v).__name__ for v in value.values)
    return type(value).__name__


def typed_where(where: tuple[tuple[str, WhereValue], ...]) -> tuple[tuple[str, str, WhereValue], ...]:
    """A `where` filter with each value's type: Python has True == 1, a condition does not.

    Use it (not the filter itself) as a key of sets and caches.
    """
    return tuple((name, _typename(value), value) for name, value in where)


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class AttrCompare:
    path: str
    op: Op
    value: Value


@dataclass(frozen=True)
class MetricCompare:
    metric: Metric
    op: Op
    value: Value


@dataclass(frozen=True)
class InSegment:
    key: str


@dataclass(frozen=True)
class HasTag:
    key: str


@dataclass(frozen=True)
class KindIs:
    kind: MemberKind


@dataclass(frozen=True)
class InOrganization:
    external_id: str


class LedgerKind(StrEnum):
    EARNED = "earned"
    REDEEMED = "redeemed"
    EXPIRING = "expiring"


@dataclass(frozen=True)
class Ledger:
    """A ledger operand (version 2): `points_earned(W)`, `points_redeemed(W)`, `points_expiring(W)`."""

    kind: LedgerKind
    window: Window | None = None  # None: "all"


@dataclass(frozen=True)
class LedgerCompare:
    ledger: Ledger
    op: Op
    value: Value


class DateFn(StrEnum):
    """Version 2: whole local days measured from a date held at a path."""

    DAYS_SINCE = "days_since"
    DAYS_TO_ANNIVERSARY = "days_to_anniversary"


@dataclass(frozen=True)
class DateCompare:
    """`days_since(PATH)` / `days_to_anniversary(PATH)` OP number (tree `{"date": PATH, "fn": ...}`)."""

    path: str
    fn: DateFn
    op: Op
    value: Value


@dataclass(frozen=True)
class InOrganizationTree:
    """The member's organization is `external_id` or one below it (`in_organization`, version 2).

    Tree `{"organization": ID, "descendants": true}`; `{"organization": ID}` stays
    `InOrganization`, the organization itself only (version 1).
    """

    external_id: str


@dataclass(frozen=True)
class OrgMetricCompare:
    """`org.AGG(...)`: the metric over the events of every member of the member's organization and
    of the organizations below it; absent for a member without an organization.

    Tree: a metric with `"scope": "organization"`.
    """

    metric: Metric
    op: Op
    value: Value


#: Operators of `version(PATH)`: versions are ordered; `exists` says whether PATH holds a version.
VERSION_OPS = frozenset({Op.EQ, Op.NE, Op.GT, Op.GTE, Op.LT, Op.LTE, Op.IN, Op.NOT_IN, Op.BETWEEN, Op.EXISTS})


@dataclass(frozen=True)
class VersionCompare:
    """`version(PATH)` OP "5.0" (tree `{"attr": PATH, "op": OP, "value": "5.0", "as": "version"}`)."""

    path: str
    op: Op
    value: Value


@dataclass(frozen=True)
class EventCompare:
    """`event.PATH OP value` (tree `{"event": PATH, "op": OP, "value": ...}`): the event being
    earned on, readable only by promotion conditions (docs/promotions.md). PATH is one of
    `EVENT_FIELDS` or a path into the event's properties."""

    path: str
    op: Op
    value: Value


#: The rule prefix of the event's own values: `event.amount`, `event.category`.
EVENT_PREFIX = "event."
#: The event's built-in values; any other `event.` path reads its properties.
EVENT_FIELDS = frozenset({"amount", "type", "weekday", "hour"})
EVENT_REFUSED = "only promotion conditions can read the event"


@dataclass(frozen=True)
class Number:
    """A number inside arithmetic."""

    value: int | float


@dataclass(frozen=True)
class Arith:
    """`left OP right` in exact decimals; OP: add, sub, mul, div (by zero: absent)."""

    op: str
    left: Expr
    right: Expr


Expr = Metric | Ledger | Number | Arith
ARITH_OPS = ("add", "sub", "mul", "div")


@dataclass(frozen=True)
class ExprCompare:
    """`left OP right` between expressions, at least one side reading a metric or the ledger."""

    left: Expr
    op: Op
    right: Expr


#: The value of a metric's "scope" that makes it an organization roll-up.
ORGANIZATION_SCOPE = "organization"
#: Aggregates organization roll-ups do not offer (yet): `org.distinct(...)`, `org.top(...)`.
NOT_ROLLED_UP = frozenset({Agg.DISTINCT, Agg.TOP})

Node = (
    All
    | AnyOf
    | Not
    | AttrCompare
    | MetricCompare
    | InSegment
    | HasTag
    | KindIs
    | InOrganization
    | LedgerCompare
    | ExprCompare
    | InOrganizationTree
    | OrgMetricCompare
    | DateCompare
    | VersionCompare
    | EventCompare
)
TRUE: Node = All(())
FALSE: Node = AnyOf(())


def cast_list(value: Value) -> list[Scalar]:
    """The list operand of in / not_in / between (validated by the parser)."""
    return cast(list[Scalar], value)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float))  # bool is an int


# ---------- JSON -> nodes ----------


class ConditionParser:
    """Reads JSON conditions; the rule parser reuses its value checks with columns instead of paths."""

    def __init__(self, *, events: bool = False) -> None:
        self.nodes = 0
        #: Whether `{"event": ...}` is allowed (promotion conditions only).
        self.events = events

    def fail(self, path: str, message: str) -> InvalidInput:
        return InvalidInput(f"condition {path}: {message}")

    def node(self, data: Any, path: str, depth: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(path, f"a condition has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise self.fail(path, f"a condition nests at most {MAX_DEPTH} levels")
        if not isinstance(data, dict):
            raise self.fail(path, 'expected an object such as {"all": [...]} or {"attr": ...}')
        if "all" in data or "any" in data:
            name = "all" if "all" in data else "any"
            self.only(data, {name}, path)
            items = data[name]
            if not isinstance(items, list):
                raise self.fail(f"{path}.{name}", "expected a list of conditions")
            children = tuple(self.node(c, f"{path}.{name}[{i}]", depth + 1) for i, c in enumerate(items))
            return All(children) if name == "all" else AnyOf(children)
        if "not" in data:
            self.only(data, {"not"}, path)
            return Not(self.node(data["not"], f"{path}.not", depth + 1))
        if "attr" in data and "as" in data:
            return self.version_compare(data, path)
        if "date" in data:
            return self.date_compare(data, path)
        if "event" in data:
            return self.event_compare(data, path)
        if "attr" in data:
            self.only(data, {"attr", "op", "value"}, path)
            attr = data["attr"]
            if not isinstance(attr, str) or not PATH.match(attr):
                raise self.fail(f"{path}.attr", 'expected an attribute path such as "city" or "device.os"')
            op = self.op(data, path)
            return AttrCompare(attr, op, self.attr_value(op, data.get("value"), f"{path}.value"))
        if "metric" in data and isinstance(data["metric"], dict) and "scope" in data["metric"]:
            return self.org_metric(data, path)
        if "metric" in data:
            self.only(data, {"metric", "op", "value"}, path)
            metric = self.metric(data["metric"], f"{path}.metric")
            op = self.op(data, path)
            if metric.agg == Agg.TOP:
                return MetricCompare(metric, op, self.top_value(op, data.get("value"), f"{path}.value"))
            return MetricCompare(metric, op, self.metric_value(op, data.get("value"), f"{path}.value"))
        if "ledger" in data:
            self.only(data, {"ledger", "window", "op", "value"}, path)
            ledger = self.ledger(data, path)
            op = self.op(data, path)
            return LedgerCompare(ledger, op, self.metric_value(op, data.get("value"), f"{path}.value"))
        if "left" in data or "right" in data:
            self.only(data, {"left", "op", "right"}, path)
            left = self.expr(data.get("left"), f"{path}.left", depth + 1)
            op = self.op(data, path)
            if op not in EXPR_OPS:
                raise self.fail(f"{path}.op", "comparing expressions takes eq, ne, gt, gte, lt or lte")
            right = self.expr(data.get("right"), f"{path}.right", depth + 1)
            if not (reads_measure(left) or reads_measure(right)):
                raise self.fail(path, "one side of a comparison must hold an aggregate or a ledger operand")
            return normalise_compare(left, op, right)
        if "segment" in data:
            self.only(data, {"segment"}, path)
            return InSegment(self.key(data["segment"], f"{path}.segment", "segment key"))
        if "tag" in data:
            self.only(data, {"tag"}, path)
            return HasTag(self.key(data["tag"], f"{path}.tag", "tag key"))
        if "kind" in data:
            self.only(data, {"kind"}, path)
            kind = data["kind"]
            if not isinstance(kind, str) or kind.upper() not in MemberKind.__members__:
                raise self.fail(f"{path}.kind", "expected CUSTOMER, DEALER or EMPLOYEE")
            return KindIs(MemberKind(kind.upper()))
        if "organization" in data:
            self.only(data, {"organization", "descendants"}, path)
            org = data["organization"]
            if not isinstance(org, str) or not 0 < len(org) <= 128:
                raise self.fail(f"{path}.organization", "expected an organization externalId")
            descendants = data.get("descendants", False)
            if not isinstance(descendants, bool):
                raise self.fail(f"{path}.descendants", "expected true or false")
            return InOrganizationTree(org) if descendants else InOrganization(org)
        known = "all, any, not, attr, metric, ledger, left, segment, tag, kind, organization, date, event"
        raise self.fail(path, f"unknown condition {sorted(data)!r}; expected one of: {known}")

    def org_metric(self, data: dict[str, Any], path: str) -> OrgMetricCompare:
        """A metric with `"scope": "organization"`: an organization roll-up."""
        self.only(data, {"metric", "op", "value"}, path)
        scope = data["metric"]["scope"]
        if scope != ORGANIZATION_SCOPE:
            expected = f'expected "{ORGANIZATION_SCOPE}"'
            raise self.fail(f"{path}.metric.scope", f"unknown scope {scope!r}; {expected}")
        unscoped = {k: v for k, v in data["metric"].items() if k != "scope"}
        metric = self.metric(unscoped, f"{path}.metric")
        if metric.agg in NOT_ROLLED_UP:
            raise self.fail(f"{path}.metric.agg", f"{metric.agg.value!r} is not an organization roll-up")
        op = self.op(data, path)
        return OrgMetricCompare(metric, op, self.metric_value(op, data.get("value"), f"{path}.value"))

    def event_compare(self, data: dict[str, Any], path: str) -> EventCompare:
        self.only(data, {"event", "op", "value"}, path)
        field = self.attr_path(data["event"], f"{path}.event")
        if not self.events:
            raise self.fail(f"{path}.event", f"{EVENT_PREFIX}{field}: {EVENT_REFUSED}")
        op = self.op(data, path)
        return EventCompare(field, op, self.attr_value(op, data.get("value"), f"{path}.value"))

    def attr_path(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not PATH.match(value):
            raise self.fail(path, 'expected an attribute path such as "city" or "device.os"')
        return value

    def date_compare(self, data: dict[str, Any], path: str) -> DateCompare:
        self.only(data, {"date", "fn", "op", "value"}, path)
        attr = self.attr_path(data["date"], f"{path}.date")
        raw = data.get("fn")
        try:
            fn = DateFn(raw if isinstance(raw, str) else "")
        except ValueError:
            known = ", ".join(f.value for f in DateFn)
            message = f"unknown date function {raw!r}; expected one of: {known}"
            raise self.fail(f"{path}.fn", message) from None
        op = self.op(data, path)
        return DateCompare(attr, fn, op, self.date_value(op, data.get("value"), f"{path}.value"))

    def date_value(self, op: Op, value: Any, path: str) -> Value:
        """A day count compares with numbers, like a metric."""
        return self.metric_value(op, value, path)

    def version_compare(self, data: dict[str, Any], path: str) -> VersionCompare:
        self.only(data, {"attr", "op", "value", "as"}, path)
        if data["as"] != "version":
            raise self.fail(f"{path}.as", f'unknown conversion {data["as"]!r}; expected "version"')
        attr = self.attr_path(data["attr"], f"{path}.attr")
        op = self.op(data, path)
        return VersionCompare(attr, op, self.version_value(op, data.get("value"), f"{path}.value"))

    def version_value(self, op: Op, value: Any, path: str) -> Value:
        if op not in VERSION_OPS:
            raise self.fail(path, f"{op.value} does not apply to versions")
        if op == Op.EXISTS:
            if not isinstance(value, bool):
                raise self.fail(path, "exists takes true or false")
            return value
        if op in (Op.IN, Op.NOT_IN, Op.BETWEEN):
            items = self.scalars(value, path)
            if op == Op.BETWEEN and len(items) != 2:
                raise self.fail(path, "between takes [low, high]")
            return [self.version_literal(v, f"{path}[{i}]") for i, v in enumerate(items)]
        return self.version_literal(value, path)

    def version_literal(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not VERSION.match(value):
            raise self.fail(
                path,
                f'expected a version such as "5.0" or "v10.2.1": 1 to {MAX_VERSION_PARTS} dotted numbers'
                " of at most 18 digits",
            )
        return value

    def only(self, data: dict[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            raise self.fail(path, f"unexpected key {extra[0]!r} beside {sorted(allowed & set(data))!r}")

    def key(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not KEY.match(value):
            raise self.fail(path, f"expected a {what} matching [A-Za-z0-9_-]{{1,64}}")
        return value

    def op(self, data: dict[str, Any], path: str) -> Op:
        raw = data.get("op")
        try:
            return Op(raw if isinstance(raw, str) else "")
        except ValueError:
            known = ", ".join(op.value for op in Op)
            raise self.fail(f"{path}.op", f"unknown operator {raw!r}; expected one of: {known}") from None

    def scalar(self, value: Any, path: str) -> Scalar:
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise self.fail(path, f"strings have at most {MAX_TEXT} characters")
            return value
        if isinstance(value, bool):
            return value
        if is_number(value):
            if not math.isfinite(value):
                raise self.fail(path, "expected a finite number")
            return value  # type: ignore[no-any-return]
        raise self.fail(path, "expected a string, a number or a boolean")

    def scalars(self, value: Any, path: str) -> list[Scalar]:
        if not isinstance(value, list):
            raise self.fail(path, "expected a list of values")
        if len(value) > MAX_LIST:
            raise self.fail(path, f"lists have at most {MAX_LIST} values")
        return [self.scalar(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def attr_value(self, op: Op, value: Any, path: str) -> Value:
        if op == Op.EXISTS:
            if not isinstance(value, bool):
                raise self.fail(path, "exists takes true or false")
            return value
        if op in (Op.IN, Op.NOT_IN):
            return self.scalars(value, path)
        if op == Op.BETWEEN:
            bounds = self.scalars(value, path)
            if len(bounds) != 2 or not (
                all(is_number(b) for b in bounds) or all(isinstance(b, str) for b in bounds)
            ):
                raise self.fail(path, "between takes [low, high]: two numbers or two strings")
            return bounds
        scalar = self.scalar(value, path)
        if op in ORDERING_OPS and isinstance(scalar, bool):
            raise self.fail(path, f"{op.value} compares numbers or strings, not booleans")
        return scalar

    def metric_value(self, op: Op, value: Any, path: str) -> Value:
        if op == Op.EXISTS:
            if not isinstance(value, bool):
                raise self.fail(path, "exists takes true or false")
            return value
        if op == Op.CONTAINS:
            raise self.fail(path, "contains applies to attributes, not to metrics")
        if op in (Op.IN, Op.NOT_IN, Op.BETWEEN):
            numbers = self.scalars(value, path)
            if not all(is_number(n) for n in numbers):
                raise self.fail(path, "a metric compares with numbers")
            if op == Op.BETWEEN and len(numbers) != 2:
                raise self.fail(path, "between takes [low, high]")
            return numbers
        number = self.scalar(value, path)
        if not is_number(number):
            raise self.fail(path, "a metric compares with a number")
        return number

    def top_value(self, op: Op, value: Any, path: str) -> Value:
        """What `top` compares with: property values (any scalar), with =, !=, in, not in only."""
        if op not in TOP_OPS:
            raise self.fail(path, "top compares only with eq, ne, in or not_in")
        if op in (Op.IN, Op.NOT_IN):
            return self.scalars(value, path)
        return self.scalar(value, path)

    def ledger(self, data: dict[str, Any], path: str) -> Ledger:
        raw = data.get("ledger")
        try:
            kind = LedgerKind(raw if isinstance(raw, str) else "")
        except ValueError:
            raise self.fail(f"{path}.ledger", "expected earned, redeemed or expiring") from None
        return Ledger(kind, parse_window(data.get("window"), lambda m: self.fail(f"{path}.window", m)))

    def expr(self, data: Any, path: str, depth: int) -> Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(path, f"a condition has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise self.fail(path, f"a condition nests at most {MAX_DEPTH} levels")
        if not isinstance(data, dict):
            raise self.fail(
                path, 'expected an expression: a metric, {"ledger": ..}, {"number": N} or {"add": [a, b]}'
            )
        if "number" in data:
            self.only(data, {"number"}, path)
            number = data["number"]
            if not is_number(number) or not math.isfinite(number):
                raise self.fail(f"{path}.number", "expected a finite number")
            return Number(number)
        if "ledger" in data:
            self.only(data, {"ledger", "window"}, path)
            return self.ledger(data, path)
        for name in ARITH_OPS:
            if name in data:
                self.only(data, {name}, path)
                items = data[name]
                if not isinstance(items, list) or len(items) != 2:
                    raise self.fail(f"{path}.{name}", "expected a list of two expressions")
                left = self.expr(items[0], f"{path}.{name}[0]", depth + 1)
                return Arith(name, left, self.expr(items[1], f"{path}.{name}[1]", depth + 1))
        metric = self.metric(data, path)
        if metric.agg in NOT_IN_ARITHMETIC:
            raise self.fail(f"{path}.agg", f"{metric.agg.value} cannot stand in arithmetic")
        return metric

    def where_value(self, value: Any, path: str) -> WhereValue:
        if not isinstance(value, dict):
            return self.scalar(value, path)
        if len(value) != 1 or next(iter(value)) not in WHERE_OPS:
            raise self.fail(path, 'expected a value, {"ne": V}, {"in": [..]} or {"not_in": [..]}')
        name, raw = next(iter(value.items()))
        if name == "ne":
            return WhereTest(Op.NE, (self.scalar(raw, f"{path}.ne"),))
        return WhereTest(WHERE_OPS[name], tuple(self.scalars(raw, f"{path}.{name}")))

    def metric(self, data: Any, path: str) -> Metric:
        if not isinstance(data, dict):
            raise self.fail(path, "expected an object with event and agg")
        self.only(data, {"event", "agg", "field", "window", "where"}, path)
        event = data.get("event")
        if not isinstance(event, str) or not EVENT_TYPE.match(event):
            raise self.fail(f"{path}.event", "expected an event type matching [a-z][a-z0-9_]{0,63}")
        raw_agg = data.get("agg")
        try:
            agg = Agg(raw_agg.lower() if isinstance(raw_agg, str) else "")
        except ValueError:
            known = ", ".join(a.value for a in Agg)
            raise self.fail(
                f"{path}.agg", f"unknown aggregate {raw_agg!r}; expected one of: {known}"
            ) from None
        field = data.get("field")
        if agg in PROPERTY_AGGS:
            if not isinstance(field, str) or not NAME.match(field) or field == "amount":
                raise self.fail(f"{path}.field", f"{agg.value} needs a property name (not amount)")
        elif agg in FIELD_AGGS:
            if not isinstance(field, str) or not NAME.match(field):
                raise self.fail(f"{path}.field", f'{agg.value} needs a field: "amount" or a property name')
        elif field is not None:
            raise self.fail(f"{path}.field", f"{agg.value} takes no field")
        window = parse_window(data.get("window"), lambda m: self.fail(f"{path}.window", m))
        where = data.get("where", {})
        if not isinstance(where, dict):
            raise self.fail(f"{path}.where", "expected an object of property: value")
        pairs: list[tuple[str, WhereValue]] = []
        for name, value in where.items():
            if not NAME.match(name):
                raise self.fail(f"{path}.where", f"{name!r} is not a property name")
            pairs.append((name, self.where_value(value, f"{path}.where.{name}")))
        if agg in WINDOWLESS_AGGS:
            window = None
        return Metric(event, agg, field, window, tuple(pairs))


def reads_measure(expr: Expr) -> bool:
    """Whether an expression holds an aggregate or a ledger operand."""
    if isinstance(expr, Arith):
        return reads_measure(expr.left) or reads_measure(expr.right)
    return isinstance(expr, (Metric, Ledger))


def normalise_compare(left: Expr, op: Op, right: Expr) -> Node:
    """A comparison of expressions; `metric OP number` (`ledger OP number`) is the version 1 form."""
    if isinstance(right, Number):
        if isinstance(left, Metric):
            return MetricCompare(left, op, right.value)
        if isinstance(left, Ledger):
            return LedgerCompare(left, op, right.value)
    return ExprCompare(left, op, right)


def operands(expr: Expr) -> list[Metric | Ledger]:
    """The metrics and ledger operands of an expression, left to right."""
    if isinstance(expr, Arith):
        return operands(expr.left) + operands(expr.right)
    return [expr] if isinstance(expr, (Metric, Ledger)) else []


def node_metrics(node: Node) -> list[Metric]:
    """The metrics a leaf reads (a comparison of one, or those inside arithmetic)."""
    if isinstance(node, MetricCompare):
        return [node.metric]
    if isinstance(node, ExprCompare):
        return [m for m in operands(node.left) + operands(node.right) if isinstance(m, Metric)]
    return []


def node_ledgers(node: Node) -> list[Ledger]:
    """The ledger operands a leaf reads."""
    if isinstance(node, LedgerCompare):
        return [node.ledger]
    if isinstance(node, ExprCompare):
        return [m for m in operands(node.left) + operands(node.right) if isinstance(m, Ledger)]
    return []


def parse_window(raw: Any, fail: Any) -> Window | None:
    if raw is None or (isinstance(raw, str) and raw.lower() == "all"):
        return None
    match = WINDOW.match(raw.lower()) if isinstance(raw, str) else None
    if match is None:
        raise fail(f'malformed window {raw!r}; expected "<n>d", "<n>h" or "all"')
    window = Window(int(match.group(1)), match.group(2))
    if window.seconds > MAX_WINDOW_DAYS * 86_400:
        raise fail(f"window {raw!r} is longer than {MAX_WINDOW_DAYS} days")
    return window


def parse_condition(data: Any, *, events: bool = False) -> Node:
    """The tree of a JSON condition; InvalidInput naming the JSON path of the first fault.
    `events`: the condition may read the event (`{"event": ...}`): promotion conditions only."""
    return ConditionParser(events=events).node(data, "$", 0)


# ---------- nodes -> JSON ----------


def condition_to_json(node: Node) -> dict[str, Any]:
    match node:
        case All(children):
            return {"all": [condition_to_json(c) for c in children]}
        case AnyOf(children):
            return {"any": [condition_to_json(c) for c in children]}
        case Not(child):
            return {"not": condition_to_json(child)}
        case AttrCompare(path, op, value):
            return {"attr": path, "op": op.value, "value": value}
        case MetricCompare(metric, op, value):
            return {"metric": metric_to_json(metric), "op": op.value, "value": value}
        case InSegment(key):
            return {"segment": key}
        case HasTag(key):
            return {"tag": key}
        case KindIs(kind):
            return {"kind": kind.value}
        case InOrganization(external_id):
            return {"organization": external_id}
        case LedgerCompare(ledger, op, value):
            return {**ledger_to_json(ledger), "op": op.value, "value": value}
        case ExprCompare(left, op, right):
            return {"left": expr_to_json(left), "op": op.value, "right": expr_to_json(right)}
        case InOrganizationTree(external_id):
            return {"organization": external_id, "descendants": True}
        case OrgMetricCompare(metric, op, value):
            scoped = {**metric_to_json(metric), "scope": ORGANIZATION_SCOPE}
            return {"metric": scoped, "op": op.value, "value": value}
        case DateCompare(path, fn, op, value):
            return {"date": path, "fn": fn.value, "op": op.value, "value": value}
        case VersionCompare(path, op, value):
            return {"attr": path, "op": op.value, "value": value, "as": "version"}
        case EventCompare(path, op, value):
            return {"event": path, "op": op.value, "value": value}
    raise AssertionError(node)


def ledger_to_json(ledger: Ledger) -> dict[str, Any]:
    data: dict[str, Any] = {"ledger": ledger.kind.value}
    if ledger.window is not None:
        data["window"] = str(ledger.window)
    return data


def expr_to_json(expr: Expr) -> dict[str, Any]:
    match expr:
        case Number(value):
            return {"number": value}
        case Ledger():
            return ledger_to_json(expr)
        case Arith(op, left, right):
            return {op: [expr_to_json(left), expr_to_json(right)]}
    return metric_to_json(expr)


def metric_to_json(metric: Metric) -> dict[str, Any]:
    data: dict[str, Any] = {"event": metric.event, "agg": metric.agg.value}
    if metric.field is not None:
        data["field"] = metric.field
    if metric.window is not None:
        data["window"] = str(metric.window)
    if metric.where:
        data["where"] = {
            name: value.to_json() if isinstance(value, WhereTest) else value for name, value in metric.where
        }
    return data


def reads_event(node: Node) -> bool:
    """Whether a condition reads the event being earned on (`event.`): promotions only."""
    return any(isinstance(n, EventCompare) for n in walk(node))


def walk(node: Node) -> list[Node]:
    """Every node of the tree, parents before children."""
    found: list[Node] = [node]
    match node:
        case All(children) | AnyOf(children):
            for child in children:
                found.extend(walk(child))
        case Not(child):
            found.extend(walk(child))
    return found
