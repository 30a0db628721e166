"""The SQL evaluator: a condition compiled to one set-based SELECT of member ids.

Every metric becomes one grouped derived table LEFT JOINed to `members`, so a
whole program is evaluated by the database in one statement, on PostgreSQL and
SQLite alike. Every leaf compiles to a boolean that is never NULL, so `not`
keeps the absent-value rule of segment-conditions.md. It must agree with
`evaluate.py` on every member (tests/test_evaluator_equivalence.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from fractions import Fraction
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    FromClause,
    Integer,
    Numeric,
    Select,
    String,
    Subquery,
    Time,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy import (
    exists as exists_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import Grouping

from domain.db.types import UtcDateTime
from domain.events.refunds import not_refunded
from domain.models import Event, EventAggregate, Member, MemberTag, Organization, PointsLot, SegmentMembership
from domain.segments.conditions import (
    JOINED_AT,
    Agg,
    All,
    AnyOf,
    Arith,
    AttrCompare,
    DateCompare,
    DateFn,
    EventCompare,
    Expr,
    ExprCompare,
    HasTag,
    InOrganization,
    InOrganizationTree,
    InSegment,
    KindIs,
    Ledger,
    LedgerCompare,
    LedgerKind,
    Metric,
    MetricCompare,
    Node,
    Not,
    Number,
    Op,
    OrgMetricCompare,
    Value,
    VersionCompare,
    cast_list,
    is_number,
    typed_where,
)
from domain.segments.evaluate import (
    DATE_ONLY,
    DATE_TIME,
    UNITS,
    EarnedEvent,
    event_values,
    is_utc,
    local_date,
    reads_raw,
    version_key,
)
from domain.segments.fact_queries import ledger_rows, where_test
from domain.segments.lifecycle import LifecycleThresholds
from domain.segments.sqlite_functions import LOCAL_DATE, VALUE_DATE, VERSION_CMP
from domain.segments.sqljson import NUMERIC, JsonPath, guarded, sql_number

DAY = timedelta(days=1)
EPOCH = date(1970, 1, 1)
MAX_DAYS = 100_000  # day counts beyond this are clamped: no timestamp is that far from now

members = Member.__table__.alias("m")
buckets = EventAggregate.__table__
events = Event.__table__


@dataclass
class Compilation:
    """Compiles conditions of one program as of `now`; collects the derived tables they join."""

    dialect: str
    program_id: int
    now: datetime
    segment_ids: Mapping[str, int]
    lifecycle: LifecycleThresholds = field(default_factory=LifecycleThresholds)
    joins: dict[object, Subquery] = field(default_factory=dict)
    #: The program's organization trees as (root_id, org_id) pairs: a recursive CTE, made once.
    organization_tree: Any = None

    #: Version 2: the program's timezone, whose calendar dates local-day aggregates count.
    zone: tzinfo = UTC
    #: A promotion condition's event (`event.PATH`), bound into the statement as a JSON document.
    event: EarnedEvent | None = None

    @property
    def today(self) -> date:
        return local_date(self.now, self.zone)

    @property
    def zone_name(self) -> str:
        return "UTC" if is_utc(self.zone) else str(getattr(self.zone, "key", "UTC"))

    def members_where(self, node: Node) -> Select[tuple[int]]:
        """SELECT the ids of the program's members for whom `node` holds (erased members never do)."""
        self.joins = {}
        condition = self.node(node)
        source: FromClause = members
        for derived in self.joins.values():
            source = source.outerjoin(derived, _joined_on(derived))
        return (
            select(members.c.id)
            .select_from(source)
            .where(members.c.program_id == self.program_id, members.c.erased_at.is_(None), condition)
        )

    def members_ranked(self, rungs: Sequence[Node]) -> Select[tuple[int, int]]:
        """SELECT each of the program's members' id and rank: the 1-based position of the last of
        `rungs` that holds for it, 0 when none does (a tier ladder: rung i is reaching tier i)."""
        self.joins = {}
        arms = [(self.node(rung), i) for i, rung in enumerate(rungs, start=1)]
        rank: ColumnElement[Any] = case(*reversed(arms), else_=0) if arms else literal(0)
        source: FromClause = members
        for derived in self.joins.values():
            source = source.outerjoin(derived, _joined_on(derived))
        return (
            select(members.c.id, rank.label("rank"))
            .select_from(source)
            .where(members.c.program_id == self.program_id, members.c.erased_at.is_(None))
        )

    # ---------- boolean structure ----------

    def node(self, node: Node) -> ColumnElement[bool]:
        match node:
            case All(children):
                return and_(*(self.node(c) for c in children)) if children else true()
            case AnyOf(children):
                return or_(*(self.node(c) for c in children)) if children else false()
            case Not(child):
                return not_(self.node(child))
            case AttrCompare(path, op, value):
                return self.attribute(path, op, value)
            case MetricCompare(metric, op, value):
                return self.metric(metric, op, value)
            case InSegment(key):
                chosen = select(SegmentMembership.member_id).where(
                    SegmentMembership.segment_id == self.segment_ids[key]
                )
                return members.c.id.in_(chosen)
            case HasTag(key):
                tagged = select(MemberTag.member_id).where(
                    MemberTag.program_id == self.program_id, MemberTag.key == key
                )
                return members.c.id.in_(tagged)
            case KindIs(kind):
                return members.c.kind == kind.value
            case InOrganization(external_id):
                organization = select(Organization.id).where(
                    Organization.program_id == self.program_id, Organization.external_id == external_id
                )
                return func.coalesce(members.c.organization_id.in_(organization), false())
            case LedgerCompare(ledger, op, value):
                return compare_integer(func.coalesce(self.ledger_table(ledger).c.total, 0), op, value)
            case ExprCompare(left, op, right):
                return self.expr_comparison(left, op, right)
            case InOrganizationTree(external_id):
                tree = self.org_tree()
                named = select(Organization.id).where(
                    Organization.program_id == self.program_id, Organization.external_id == external_id
                )
                below = select(tree.c.org_id).where(tree.c.root_id.in_(named))
                return func.coalesce(members.c.organization_id.in_(below), false())
            case OrgMetricCompare(metric, op, value):
                return self.org_metric(metric, op, value)
            case DateCompare(path, fn, op, value):
                return self.date_compare(path, fn, op, value)
            case VersionCompare(path, op, value):
                return self.version_compare(path, op, value)
            case EventCompare(path, op, value):
                return self.event_compare(path, op, value)
        raise AssertionError(node)

    def event_compare(self, path: str, op: Op, value: Value) -> ColumnElement[bool]:
        """`event.PATH OP value`: the event's document (`evaluate.event_values`) is a bound JSON
        literal, read with the same typed JSON predicates as attributes (absent without an event)."""
        if self.event is None:
            return compare_json(JsonPath(self.dialect, self.json_literal("{}"), path), op, value)
        values = event_values(self.event, self.zone)
        amount = values.pop("amount")
        text = json.dumps(values, default=str)
        if amount is not None:  # exact: the decimal's own digits, never through a float
            text = f'{text[:-1]}, "amount": {format(amount, "f")}}}'
        return compare_json(JsonPath(self.dialect, self.json_literal(text), path), op, value)

    def json_literal(self, text: str) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return cast(literal(text, String), JSONB)
        return literal(text, String)

    # ---------- version 2: ledger operands, arithmetic, distinct and top ----------

    def ledger_table(self, ledger: Ledger) -> Subquery:
        """member_id, total: the ledger operand per member (no row: 0)."""
        key = ("ledger", ledger)
        if key in self.joins:
            return self.joins[key]
        if ledger.kind == LedgerKind.EXPIRING:
            lots = PointsLot.__table__
            where = [
                lots.c.program_id == self.program_id,
                lots.c.remaining > 0,
                lots.c.expires_at > self.ago(0),
            ]
            if ledger.window is not None:
                where.append(lots.c.expires_at <= self.ago(0, -ledger.window.seconds))
            query = select(lots.c.member_id, func.sum(lots.c.remaining).label("total")).where(*where)
            self.joins[key] = query.group_by(lots.c.member_id).alias(f"l{len(self.joins)}")
            return self.joins[key]
        low = (
            literal(datetime(1, 1, 2, tzinfo=UTC), UtcDateTime())
            if ledger.window is None
            else self.ago(0, ledger.window.seconds)
        )
        rows = ledger_rows(self.dialect, self.program_id, low)[0].subquery()
        kind = "earned" if ledger.kind == LedgerKind.EARNED else "redeemed"
        where = [rows.c.kind == kind]
        if ledger.window is not None:
            where.append(rows.c.at <= self.ago(0))
        total = func.sum(rows.c.points) if kind == "earned" else -func.sum(rows.c.points)
        self.joins[key] = (
            select(rows.c.member_id, total.label("total"))
            .where(*where)
            .group_by(rows.c.member_id)
            .alias(f"l{len(self.joins)}")
        )
        return self.joins[key]

    def expr_comparison(self, left: Expr, op: Op, right: Expr) -> ColumnElement[bool]:
        """Exact: each side a fraction n / d (d > 0) of integers (NUMERIC on PostgreSQL), compared
        as n1 * d2 OP n2 * d1; no division is ever computed, so SQLite's float division never enters."""
        n1, d1, p1 = self.rational(left)
        n2, d2, p2 = self.rational(right)
        return guarded(and_(p1, p2), _apply(op, n1 * d2, n2 * d1))

    def rational(self, expr: Expr) -> tuple[Any, Any, ColumnElement[bool]]:
        """(numerator, positive denominator, present) of an expression."""
        match expr:
            case Number(value):
                exact = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
                return self.exact(exact.numerator), self.exact(exact.denominator), true()
            case Ledger():
                return self.numeric(func.coalesce(self.ledger_table(expr).c.total, 0)), self.exact(1), true()
            case Arith(op, left, right):
                a, b, p = self.rational(left)
                c, d, q = self.rational(right)
                present = and_(p, q)
                match op:
                    case "add":
                        return a * d + c * b, b * d, present
                    case "sub":
                        return a * d - c * b, b * d, present
                    case "mul":
                        return a * c, b * d, present
                negative = c < 0
                return (
                    case((negative, -(a * d)), else_=a * d),
                    case((negative, -(b * c)), else_=b * c),
                    and_(present, c != 0),
                )
        return self.metric_rational(expr)

    def metric_rational(self, metric: Metric) -> tuple[Any, Any, ColumnElement[bool]]:
        if metric.agg == Agg.STREAK:
            streak = self.streak_table(metric, MAX_DAYS).c.streak  # every day back: the exact streak
            return self.numeric(func.coalesce(streak, 0)), self.exact(1), true()
        table = self.source(metric)
        scale = UNITS if (metric.field or "amount") == "amount" else Fraction(1)
        unit = self.exact(scale)
        match metric.agg:
            case Agg.COUNT:
                return self.numeric(func.coalesce(table.c.count, 0)), self.exact(1), true()
            case Agg.DISTINCT_DAYS:
                return self.numeric(func.coalesce(table.c.days, 0)), self.exact(1), true()
            case Agg.DISTINCT:
                return self.numeric(func.coalesce(table.c.n, 0)), self.exact(1), true()
            case Agg.SUM:
                return self.numeric(func.coalesce(table.c.total, 0)), unit, true()
            case Agg.MIN | Agg.MAX:
                column = table.c.low if metric.agg == Agg.MIN else table.c.high
                return self.numeric(column), unit, column.is_not(None)
            case Agg.AVG:
                present = func.coalesce(table.c.measured, 0) > 0
                return self.numeric(table.c.total), self.numeric(table.c.measured) * unit, present
            case Agg.DAYS_SINCE_LAST | Agg.DAYS_SINCE_FIRST:
                at = table.c.last_at if metric.agg == Agg.DAYS_SINCE_LAST else table.c.first_at
                return self.numeric(self.whole_days(at)), self.exact(1), at.is_not(None)
        raise AssertionError(metric.agg)  # the parser keeps `top` out of arithmetic

    def whole_days(self, at: ColumnElement[Any]) -> ColumnElement[Any]:
        """floor((now - at) / 24 h) as an integer: the UTC date difference, less one when `at`'s time of
        day is later than now's (exact to the microsecond; `at` may be ahead of now)."""
        today = (self.now.date() - EPOCH).days
        if self.dialect == "postgresql":
            time_of_day: ColumnElement[Any] = cast(func.timezone("UTC", at), Time)
            now_time: ColumnElement[Any] = literal(self.now.astimezone(UTC).time().replace(tzinfo=None), Time)
        else:  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff': the time of day is the text from column 12
            time_of_day = func.substr(at, 12)
            now_time = literal(self.now.astimezone(UTC).strftime("%H:%M:%S.%f"))
        return literal(today) - self.day_number(at) - case((time_of_day > now_time, 1), else_=0)

    def exact(self, number: Fraction | int) -> ColumnElement[Any]:
        assert Fraction(number).denominator == 1
        return sql_number(self.dialect, int(number)) if self.dialect == "postgresql" else literal(int(number))

    def numeric(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """NUMERIC on PostgreSQL (products of counts would overflow bigint)."""
        return cast(column, NUMERIC) if self.dialect == "postgresql" else column

    def property_table(self, metric: Metric) -> Subquery:
        """distinct: member_id, n; top: member_id, kind, num, txt (the winning value)."""
        key = ("values", _metric_key(metric))
        if key in self.joins:
            return self.joins[key]
        at = JsonPath(self.dialect, events.c.properties, metric.field or "")
        is_number, is_string, is_bool = at.type_is("number"), at.type_is("string"), at.type_is("boolean")
        boolean_text = case((at.boolean_is(True), "true"), else_="false")
        raw_text = at.text() if self.dialect == "postgresql" else cast(at.number(), String)
        values = (
            select(
                events.c.member_id,
                case((is_number, "n"), (is_string, "s"), else_="b").label("kind"),
                case((is_number, at.number()), else_=None).label("num"),
                case((is_string, at.text()), (is_bool, boolean_text), else_=None).label("txt"),
                case((is_string, at.text()), (is_bool, boolean_text), else_=raw_text).label("tie"),
            )
            .where(*self.matching_events(metric), or_(is_number, is_string, is_bool))
            .subquery()
        )
        if metric.agg == Agg.DISTINCT:
            different = (
                select(values.c.member_id, values.c.kind, values.c.num, values.c.txt).distinct().subquery()
            )
            self.joins[key] = (
                select(different.c.member_id, func.count().label("n"))
                .group_by(different.c.member_id)
                .alias(f"v{len(self.joins)}")
            )
            return self.joins[key]
        tie = func.min(values.c.tie)
        groups = (
            select(
                values.c.member_id,
                values.c.kind,
                values.c.num,
                values.c.txt,
                func.count().label("c"),
                (tie.collate("C") if self.dialect == "postgresql" else tie).label("tie"),
            )
            .group_by(values.c.member_id, values.c.kind, values.c.num, values.c.txt)
            .subquery()
        )
        tie_order = groups.c.tie.collate("C") if self.dialect == "postgresql" else groups.c.tie
        ranked = select(
            groups.c.member_id,
            groups.c.kind,
            groups.c.num,
            groups.c.txt,
            func.row_number()
            .over(partition_by=groups.c.member_id, order_by=(groups.c.c.desc(), tie_order, groups.c.kind))
            .label("rn"),
        ).subquery()
        self.joins[key] = (
            select(ranked.c.member_id, ranked.c.kind, ranked.c.num, ranked.c.txt)
            .where(ranked.c.rn == 1)
            .alias(f"v{len(self.joins)}")
        )
        return self.joins[key]

    def top(self, metric: Metric, op: Op, value: Value) -> ColumnElement[bool]:
        """The winning value against literals, type-strict as `compare_value`."""
        table = self.property_table(metric)
        present = table.c.kind.is_not(None)

        def equals(v: Any) -> ColumnElement[bool]:
            if isinstance(v, bool):
                return guarded(table.c.kind == "b", table.c.txt == ("true" if v else "false"))
            if is_number(v):
                return guarded(table.c.kind == "n", table.c.num == sql_number(self.dialect, v))
            return guarded(table.c.kind == "s", table.c.txt == literal(v, String))

        def one(comparison: Op, v: Any) -> ColumnElement[bool]:
            if comparison == Op.EQ:
                return equals(v)
            kind = "b" if isinstance(v, bool) else "n" if is_number(v) else "s"
            return and_(table.c.kind == kind, not_(equals(v)))  # kind NULL: no row, guarded below

        return guarded(present, combine(one, op, value, present))

    # ---------- attributes ----------

    def attribute(self, path: str, op: Op, value: Value) -> ColumnElement[bool]:
        match path:
            case "pointsBalance":
                return compare_integer(members.c.points_balance, op, value)
            case "createdAt":
                return self.days_since(members.c.created_at, op, value)
            case "age":
                return compare_integer(self.age(), op, value)
            case "abcClass":
                return compare_text(self.dialect, members.c.abc_class, op, value)
            case "churnRisk7d":
                return compare_scaled(self.dialect, members.c.churn_risk_7d, op, value, Fraction(1))
            case "rfm.r" | "rfm.f" | "rfm.m":
                return compare_integer(members.c[f"rfm_{path[-1]}"], op, value)
            case "rfm.label":
                return compare_text(self.dialect, members.c.rfm_label, op, value)
            case "lifecycle":
                return compare_text(self.dialect, self.lifecycle_stage(), op, value)
            case "channels":
                return self.channels(op, value)
        return compare_json(JsonPath(self.dialect, members.c.attributes, path), op, value)

    def age(self) -> ColumnElement[Any]:
        birth = JsonPath(self.dialect, members.c.attributes, "birthDate")
        text = birth.text()
        pattern = (
            text.op("~")(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")
            if self.dialect == "postgresql"
            else text.op("GLOB")("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*")
        )
        today = self.today

        def part(start: int, length: int) -> ColumnElement[Any]:
            return cast(func.substr(text, start, length), Integer)

        before_birthday = case((part(6, 2) * 100 + part(9, 2) > today.month * 100 + today.day, 1), else_=0)
        return case(
            (and_(birth.type_is("string"), pattern), today.year - part(1, 4) - before_birthday), else_=None
        )

    def lifecycle_stage(self) -> ColumnElement[Any]:
        purchases = self.bucket_table("purchase")
        count = func.coalesce(purchases.c.count, 0)
        last = purchases.c.last_at
        return case(
            (and_(members.c.joined_at > self.ago(self.lifecycle.new_days), count < 2), "NEW"),
            (last.is_(None), "LOST"),
            (last > self.ago(self.lifecycle.at_risk_days), "ACTIVE"),
            (last > self.ago(self.lifecycle.lost_days), "AT_RISK"),
            else_="LOST",
        )

    def ago(self, days: int | float, seconds: int = 0) -> ColumnElement[Any]:
        clamped = max(-MAX_DAYS, min(MAX_DAYS, days))
        return literal(self.now - clamped * DAY - timedelta(seconds=seconds), UtcDateTime())

    def days_since(self, at: ColumnElement[Any], op: Op, value: Value) -> ColumnElement[bool]:
        """floor((now - at) / 24 h) OP value, as comparisons of `at` with instants (exact)."""
        if op == Op.EXISTS:
            return at.is_not(None) if value else at.is_(None)

        def at_least(n: int) -> ColumnElement[bool]:  # days >= n
            return guarded(at.is_not(None), at <= self.ago(n))

        return integer_comparison(at_least, op, value, present=at.is_not(None))

    # ---------- metrics ----------

    def metric(self, metric: Metric, op: Op, value: Value) -> ColumnElement[bool]:
        if metric.agg == Agg.TOP:
            return self.top(metric, op, value)
        if metric.agg == Agg.DISTINCT:
            return compare_integer(func.coalesce(self.property_table(metric).c.n, 0), op, value)
        if metric.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST):
            table = self.source(metric)
            column = table.c.last_at if metric.agg == Agg.DAYS_SINCE_LAST else table.c.first_at
            return self.days_since(column, op, value)
        if metric.agg == Agg.STREAK:
            streak = self.streak_table(metric, _streak_reach(value))
            return compare_integer(func.coalesce(streak.c.streak, 0), op, value)
        table = self.source(metric)
        if metric.agg in (Agg.COUNT, Agg.DISTINCT_DAYS):
            column = table.c.count if metric.agg == Agg.COUNT else table.c.days
            return compare_integer(func.coalesce(column, 0), op, value)
        scale = UNITS if (metric.field or "amount") == "amount" else Fraction(1)
        if metric.agg == Agg.SUM:
            return compare_scaled(self.dialect, func.coalesce(table.c.total, 0), op, value, scale)
        if metric.agg in (Agg.MIN, Agg.MAX):
            column = table.c.low if metric.agg == Agg.MIN else table.c.high
            return compare_scaled(self.dialect, column, op, value, scale)
        return self.average(table.c.total, table.c.measured, op, value, scale)

    def average(
        self, total: ColumnElement[Any], n: ColumnElement[Any], op: Op, value: Value, scale: Fraction
    ) -> ColumnElement[bool]:
        """total / n OP v, compared as total * den OP num * n: no division, exact on integers."""
        present = func.coalesce(n, 0) > 0
        if op == Op.EXISTS:
            return present if value else not_(present)

        def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
            if not is_number(threshold):
                return false()
            ratio = Fraction(str(threshold)) * scale
            left = total * ratio.denominator
            right = n * ratio.numerator
            return guarded(present, _apply(comparison, left, right))

        return combine(one, op, value, present)

    def source(self, metric: Metric) -> Subquery:
        if metric.agg in (Agg.DISTINCT, Agg.TOP):
            return self.property_table(metric)
        if reads_raw(metric, self.zone):
            return self.event_table(metric)
        return self.bucket_table(metric.event)

    def bucket_table(self, event_type: str) -> Subquery:
        key = ("buckets", event_type)
        if key not in self.joins:
            self.joins[key] = (
                select(
                    buckets.c.member_id,
                    func.sum(buckets.c.count).label("count"),
                    func.count().label("days"),
                    func.sum(buckets.c.amount_sum).label("total"),
                    func.sum(buckets.c.amount_count).label("measured"),
                    func.min(buckets.c.amount_min).label("low"),
                    func.max(buckets.c.amount_max).label("high"),
                    func.min(buckets.c.first_at).label("first_at"),
                    func.max(buckets.c.last_at).label("last_at"),
                )
                .where(buckets.c.program_id == self.program_id, buckets.c.event_type == event_type)
                .group_by(buckets.c.member_id)
                .alias(f"b{len(self.joins)}")
            )
        return self.joins[key]

    def matching_events(self, metric: Metric) -> list[ColumnElement[bool]]:
        where = [
            events.c.program_id == self.program_id,
            events.c.type == metric.event,
            events.c.status == "ACCEPTED",
            not_refunded(events.c),
        ]
        if metric.window is not None and metric.agg not in (
            Agg.DAYS_SINCE_FIRST,
            Agg.DAYS_SINCE_LAST,
            Agg.STREAK,
        ):
            where.append(events.c.occurred_at > self.ago(0, metric.window.seconds))
            where.append(events.c.occurred_at <= self.ago(0))
        for name, value in metric.where:
            where.append(where_test(self.dialect, events.c.properties, name, value))
        return where

    def event_table(self, metric: Metric) -> Subquery:
        key = _metric_key(metric)
        if key not in self.joins:
            name = metric.field or "amount"
            if name == "amount":
                measured = type_coerce(events.c.amount, BigInteger)  # the stored units, not Decimal
            else:
                prop = JsonPath(self.dialect, events.c.properties, name)
                measured = case((prop.type_is("number"), prop.number()), else_=None)  # type: ignore[assignment]
            columns = {
                Agg.COUNT: [func.count().label("count")],
                Agg.DISTINCT_DAYS: [
                    func.count(self.day_number(events.c.occurred_at).distinct()).label("days")
                ],
                Agg.SUM: [func.sum(measured).label("total")],
                Agg.AVG: [func.sum(measured).label("total"), func.count(measured).label("measured")],
                Agg.MIN: [func.min(measured).label("low")],
                Agg.MAX: [func.max(measured).label("high")],
                Agg.DAYS_SINCE_FIRST: [func.min(events.c.occurred_at).label("first_at")],
                Agg.DAYS_SINCE_LAST: [func.max(events.c.occurred_at).label("last_at")],
            }[metric.agg]  # only what the metric reads: a distinct count costs a sort
            self.joins[key] = (
                select(events.c.member_id, *columns)
                .where(*self.matching_events(metric))
                .group_by(events.c.member_id)
                .alias(f"e{len(self.joins)}")
            )
        return self.joins[key]

    def streak_table(self, metric: Metric, reach: int) -> Subquery:
        """Consecutive days up to today (or yesterday), counted up to `reach`: gaps and islands.

        Only the last `reach` days are read: a streak longer than that compares with the
        thresholds like one of exactly `reach` days (see `_streak_reach`).
        """
        key = ("streak", _metric_key(metric), reach)
        if key in self.joins:
            return self.joins[key]
        today = (self.today - EPOCH).days
        since = self.today - timedelta(days=reach)
        raw = reads_raw(metric, self.zone)
        if raw:
            # every event's day, not DISTINCT ones: a hash DISTINCT under a parallel Gather can take
            # minutes on PostgreSQL 15 (measured: bench/local_dates.py); dense_rank and a distinct
            # count below make duplicates harmless
            day = self.day_number(events.c.occurred_at)
            start = literal(local_midnight(since, self.zone), UtcDateTime())
            days = select(events.c.member_id, day.label("day")).where(
                *self.matching_events(metric), events.c.occurred_at >= start
            )
        else:
            day = self.date_number(buckets.c.day)
            days = select(buckets.c.member_id, day.label("day")).where(
                buckets.c.program_id == self.program_id,
                buckets.c.event_type == metric.event,
                buckets.c.day >= literal(since, Date),
            )
        past = days.subquery()
        rank = func.dense_rank() if raw else func.row_number()  # one bucket per day: the same, cheaper
        ranked = (
            select(
                past.c.member_id,
                past.c.day,
                rank.over(partition_by=past.c.member_id, order_by=past.c.day.desc()).label("rn"),
                func.max(past.c.day).over(partition_by=past.c.member_id).label("top"),
            )
            .where(past.c.day <= today)
            .subquery()
        )
        counted = func.count(ranked.c.day.distinct()) if raw else func.count()
        self.joins[key] = (
            select(ranked.c.member_id, counted.label("streak"))
            .where(ranked.c.top >= today - 1, ranked.c.day + ranked.c.rn - 1 == ranked.c.top)
            .group_by(ranked.c.member_id)
            .alias(f"s{len(self.joins)}")
        )
        return self.joins[key]

    # ---------- organization roll-ups ----------

    def org_tree(self) -> Any:
        """WITH RECURSIVE: every organization of the program paired with itself and each one below it."""
        if self.organization_tree is None:
            top = Organization.__table__
            below = Organization.__table__.alias("org_below")
            base = (
                select(top.c.id.label("root_id"), top.c.id.label("org_id"))
                .where(top.c.program_id == self.program_id)
                .cte("org_tree", recursive=True)
            )
            step = select(base.c.root_id, below.c.id).where(below.c.parent_id == base.c.org_id)
            self.organization_tree = base.union_all(step)
        return self.organization_tree

    def org_metric(self, metric: Metric, op: Op, value: Value) -> ColumnElement[bool]:
        """`org.AGG(...)` OP value: one derived table per metric, grouped by the tree's top
        organization and joined on the member's organization; absent without an organization."""
        has_organization = members.c.organization_id.is_not(None)

        def with_organization(x: ColumnElement[Any]) -> ColumnElement[Any]:
            return case((has_organization, x), else_=None)

        if metric.agg == Agg.STREAK:
            streak = self.org_streak_table(metric, _streak_reach(value))
            return compare_integer(with_organization(func.coalesce(streak.c.streak, 0)), op, value)
        table = self.org_event_table(metric)
        if metric.agg in (Agg.DAYS_SINCE_LAST, Agg.DAYS_SINCE_FIRST):
            column = table.c.last_at if metric.agg == Agg.DAYS_SINCE_LAST else table.c.first_at
            return self.days_since(column, op, value)
        if metric.agg in (Agg.COUNT, Agg.DISTINCT_DAYS):
            column = table.c.count if metric.agg == Agg.COUNT else table.c.days
            return compare_integer(with_organization(func.coalesce(column, 0)), op, value)
        scale = UNITS if (metric.field or "amount") == "amount" else Fraction(1)
        if metric.agg == Agg.SUM:
            total = with_organization(func.coalesce(table.c.total, 0))
            return compare_scaled(self.dialect, total, op, value, scale)
        if metric.agg in (Agg.MIN, Agg.MAX):
            column = table.c.low if metric.agg == Agg.MIN else table.c.high
            return compare_scaled(self.dialect, column, op, value, scale)
        return self.average(table.c.total, table.c.measured, op, value, scale)

    def org_events(self) -> tuple[FromClause, Any]:
        """Events joined to their member's organization trees, and the tree's top organization."""
        tree = self.org_tree()
        owner = Member.__table__.alias("org_member")
        source = events.join(owner, owner.c.id == events.c.member_id).join(
            tree, tree.c.org_id == owner.c.organization_id
        )
        return source, tree.c.root_id

    def org_event_table(self, metric: Metric) -> Subquery:
        key = ("org", *_metric_key(metric))
        if key not in self.joins:
            name = metric.field or "amount"
            if name == "amount":
                measured = type_coerce(events.c.amount, BigInteger)
            else:
                prop = JsonPath(self.dialect, events.c.properties, name)
                measured = case((prop.type_is("number"), prop.number()), else_=None)  # type: ignore[assignment]
            columns = {
                Agg.COUNT: [func.count().label("count")],
                Agg.DISTINCT_DAYS: [
                    func.count(self.day_number(events.c.occurred_at).distinct()).label("days")
                ],
                Agg.SUM: [func.sum(measured).label("total")],
                Agg.AVG: [func.sum(measured).label("total"), func.count(measured).label("measured")],
                Agg.MIN: [func.min(measured).label("low")],
                Agg.MAX: [func.max(measured).label("high")],
                Agg.DAYS_SINCE_FIRST: [func.min(events.c.occurred_at).label("first_at")],
                Agg.DAYS_SINCE_LAST: [func.max(events.c.occurred_at).label("last_at")],
            }[metric.agg]
            source, root = self.org_events()
            self.joins[key] = (
                select(root.label("organization_id"), *columns)
                .select_from(source)
                .where(*self.matching_events(metric))
                .group_by(root)
                .alias(f"g{len(self.joins)}")
            )
        return self.joins[key]

    def org_streak_table(self, metric: Metric, reach: int) -> Subquery:
        """`streak_table` over an organization tree's events (gaps and islands per top organization)."""
        key = ("org-streak", _metric_key(metric), reach)
        if key in self.joins:
            return self.joins[key]
        today = (self.now.date() - EPOCH).days
        since = self.now.date() - timedelta(days=reach)
        source, root = self.org_events()
        day = self.day_number(events.c.occurred_at)
        start = literal(datetime.combine(since, time(0), tzinfo=UTC), UtcDateTime())
        past = (
            select(root.label("organization_id"), day.label("day"))
            .select_from(source)
            .where(*self.matching_events(metric), events.c.occurred_at >= start)
            .distinct()
            .subquery()
        )
        ranked = (
            select(
                past.c.organization_id,
                past.c.day,
                func.row_number()
                .over(partition_by=past.c.organization_id, order_by=past.c.day.desc())
                .label("rn"),
                func.max(past.c.day).over(partition_by=past.c.organization_id).label("top"),
            )
            .where(past.c.day <= today)
            .subquery()
        )
        self.joins[key] = (
            select(ranked.c.organization_id, func.count().label("streak"))
            .where(ranked.c.top >= today - 1, ranked.c.day + ranked.c.rn - 1 == ranked.c.top)
            .group_by(ranked.c.organization_id)
            .alias(f"gs{len(self.joins)}")
        )
        return self.joins[key]

    def day_number(self, at: ColumnElement[Any]) -> ColumnElement[Any]:
        """Days since 1970-01-01 of the local date (in the program's zone) of a UTC timestamp."""
        if self.dialect == "postgresql":
            return cast(func.timezone(self.zone_name, at), Date) - literal(EPOCH, Date)
        if is_utc(self.zone):
            return cast(func.julianday(func.date(at)) - 2440587.5, Integer)
        return cast(func.julianday(_sqlite_call(LOCAL_DATE, at, self.zone_name)) - 2440587.5, Integer)

    # ---------- version 2: channels, date operands, versions ----------

    def channels(self, op: Op, value: Value) -> ColumnElement[bool]:
        """The built-in list `channels`: only `contains` and `exists` can hold for a list."""
        column = members.c.channels
        if op == Op.EXISTS:  # the facts read a missing list as empty: channels always exist
            return true() if value else false()
        if op != Op.CONTAINS or not isinstance(value, str):
            return false()
        if self.dialect == "postgresql":
            probe = cast(literal(f"[{_json_string(value)}]"), JSONB_TYPE)
            return func.coalesce(cast(column, JSONB_TYPE).bool_op("@>")(probe), false())
        items = func.json_each(column).table_valued("type", "value")
        return exists_(select(1).select_from(items).where(items.c.type == "text", items.c.value == value))

    def local_date(self, path: str) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
        """(days since 1970-01-01, month, day) of the local date at PATH; NULLs when absent.

        Computed once per member in a derived table (OFFSET 0 keeps both databases from
        inlining its expressions into each use of a part)."""
        key = ("local_date", path)
        if key not in self.joins:
            owner = Member.__table__.alias("md")
            number, month, day = self._local_date_parts(owner, path)
            self.joins[key] = (
                select(
                    owner.c.id.label("member_id"),
                    number.label("number"),
                    month.label("month"),
                    day.label("day"),
                )
                .where(owner.c.program_id == self.program_id)
                .offset(0)
                .alias(f"d{len(self.joins)}")
            )
        table = self.joins[key]
        return table.c.number, table.c.month, table.c.day

    def _local_date_parts(
        self, owner: FromClause, path: str
    ) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
        if path == JOINED_AT:
            at = owner.c.joined_at
            if self.dialect == "postgresql":
                return self._date_parts(cast(func.timezone(self.zone_name, at), Date))
            return self._text_date_parts(_sqlite_call(LOCAL_DATE, at, self.zone_name))
        attribute = JsonPath(self.dialect, owner.c.attributes, path)
        text = attribute.text()
        if self.dialect != "postgresql":
            held = _sqlite_call(VALUE_DATE, text, self.zone_name)
            found = case((attribute.type_is("string"), held), else_=None)
            return self._text_date_parts(found)
        year = cast(func.substr(text, 1, 4), Integer)
        month = cast(func.substr(text, 6, 2), Integer)
        day = cast(func.substr(text, 9, 2), Integer)
        valid_day = day <= _days_in_month(year, month)  # read only once a pattern has matched
        stamp = cast(text, UtcDateTime().impl)
        found_date = case(
            (not_(attribute.type_is("string")), None),
            (
                text.op("~")(_pg_regex(DATE_ONLY.pattern)),
                case((valid_day, func.make_date(year, month, day)), else_=None),
            ),
            (
                text.op("~")(_pg_regex(DATE_TIME.pattern)),
                case((valid_day, cast(func.timezone(self.zone_name, stamp), Date)), else_=None),
            ),
            else_=None,
        )
        return self._date_parts(found_date)

    def _date_parts(
        self, day: ColumnElement[Any]
    ) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
        return (
            day - literal(EPOCH, Date),
            cast(func.extract("month", day), Integer),
            cast(func.extract("day", day), Integer),
        )

    def _text_date_parts(
        self, text: ColumnElement[Any]
    ) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
        """SQLite: a 'YYYY-MM-DD' text (or NULL) as its parts."""
        return (
            cast(func.julianday(text) - 2440587.5, Integer),
            cast(func.substr(text, 6, 2), Integer),
            cast(func.substr(text, 9, 2), Integer),
        )

    def date_compare(self, path: str, fn: DateFn, op: Op, value: Value) -> ColumnElement[bool]:
        number, month, day = self.local_date(path)
        today = self.today
        if fn == DateFn.DAYS_SINCE:
            days = literal((today - EPOCH).days) - number
        else:
            days = _days_to_anniversary(month, day, today)
        return compare_integer(days, op, value)

    def version_compare(self, path: str, op: Op, value: Value) -> ColumnElement[bool]:
        attribute = JsonPath(self.dialect, members.c.attributes, path)
        text = attribute.text()
        present: ColumnElement[bool]
        if self.dialect == "postgresql":
            present = and_(attribute.type_is("string"), text.op("~")(r"^v?[0-9]+(\.[0-9]+)*$"))
            digits = case((func.substr(text, 1, 1) == "v", func.substr(text, 2)), else_=text)
            # read only inside `guarded(present, ...)`: never cast what is not a version
            parts = Grouping(cast(func.string_to_array(digits, "."), ARRAY(NUMERIC_TYPE)))  # ( )[i:j]

            def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
                return guarded(present, _version_order(comparison, parts, threshold))

        else:
            present = and_(attribute.type_is("string"), _sqlite_call(VERSION_CMP, text, "0").is_not(None))

            def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
                order = _sqlite_call(VERSION_CMP, text, threshold)
                return guarded(present, _apply(comparison, order, 0))

        if op == Op.EXISTS:
            return present if value else not_(present)
        return combine(one, op, value, present)

    def date_number(self, day: ColumnElement[Any]) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return day - literal(EPOCH, Date)
        return cast(func.julianday(day) - 2440587.5, Integer)


def _joined_on(derived: Subquery) -> ColumnElement[bool]:
    """A derived table's join to the member: by member, or by organization (`org.AGG` roll-ups)."""
    if "organization_id" in derived.c:
        return derived.c.organization_id == members.c.organization_id
    return derived.c.member_id == members.c.id


JSONB_TYPE = JSONB()
NUMERIC_TYPE = Numeric()
_CUMULATIVE_DAYS = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def local_midnight(day: date, zone: tzinfo) -> datetime:
    """The first instant of a local date (a midnight in a DST gap is the end of the gap), in UTC."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _version_order(op: Op, parts: ColumnElement[Any], threshold: Any) -> ColumnElement[bool]:
    """PostgreSQL: numeric[] `parts` (trailing zeros kept) OP the version `threshold`.

    With K the threshold's numbers without trailing zeros, array order gives `parts < K` exactly
    (parts = K plus zeros compares above K but is equal: not below either way), and equality
    is `parts[1:n] = K` with nothing but zeros after; the other operators follow."""
    key = version_key(threshold) or (0,)
    probe = cast(literal("{" + ",".join(str(n) for n in key) + "}"), ARRAY(NUMERIC_TYPE))
    zeros = cast(literal("{0}"), ARRAY(NUMERIC_TYPE))
    below = parts < probe
    tail = parts[len(key) + 1 : func.cardinality(parts)]
    equal = and_(parts[1 : len(key)] == probe, tail.op("<@")(zeros))
    match op:
        case Op.LT:
            return below
        case Op.GTE:
            return not_(below)
        case Op.EQ:
            return equal
        case Op.NE:
            return not_(equal)
        case Op.LTE:
            return or_(below, equal)
        case Op.GT:
            return not_(or_(below, equal))
    raise AssertionError(op)


def _sqlite_call(name: str, *arguments: Any) -> ColumnElement[Any]:
    """A call of one of the Python functions of sqlite_functions.py."""
    function: ColumnElement[Any] = getattr(func, name)(*arguments)
    return function


def _json_string(text: str) -> str:
    return json.dumps(text)


def _pg_regex(pattern: str) -> str:
    """A Python pattern of evaluate.py (anchored by match and \\Z) as a PostgreSQL one."""
    return "^" + pattern.removesuffix("\\Z") + "$"


def _leap(year: ColumnElement[Any]) -> ColumnElement[bool]:
    return or_(and_(year % 4 == 0, year % 100 != 0), year % 400 == 0)


def _days_in_month(year: ColumnElement[Any], month: ColumnElement[Any]) -> ColumnElement[Any]:
    return case(
        (month == 2, case((_leap(year), 29), else_=28)),
        (month.in_([4, 6, 9, 11]), 30),
        else_=31,
    )


def _day_of_year(year: int, month: ColumnElement[Any], day: ColumnElement[Any]) -> ColumnElement[Any]:
    """evaluate.anniversary_ordinal in SQL: 29 February is 1 March outside leap years."""
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    before = case(*((month == m, n) for m, n in enumerate(_CUMULATIVE_DAYS, start=1)), else_=0)
    return before + day + (case((month > 2, 1), else_=0) if leap else 0)


def _days_to_anniversary(
    month: ColumnElement[Any], day: ColumnElement[Any], today: date
) -> ColumnElement[Any]:
    current = today.timetuple().tm_yday
    year_length = 366 if (today.year % 4 == 0 and (today.year % 100 != 0 or today.year % 400 == 0)) else 365
    this_year = _day_of_year(today.year, month, day)
    return case(
        (month.is_(None), None),
        (this_year >= current, this_year - current),
        else_=year_length - current + _day_of_year(today.year + 1, month, day),
    )


def _metric_key(metric: Metric) -> tuple[object, ...]:
    """A metric as a key of derived tables: its `where` typed (True and 1 are equal in Python only)."""
    return (metric.event, metric.agg, metric.field, metric.window, typed_where(metric.where))


def _streak_reach(value: Value) -> int:
    """How many days back a streak must be counted for comparisons with `value` to stay exact.

    Counted over the last R days, a streak is min(streak, R) or more; every threshold t < R
    then compares the same way. Two days of margin keep that true whether or not today counts.
    """
    numbers = [abs(Fraction(str(v))) for v in (value if isinstance(value, list) else [value]) if is_number(v)]
    return min(MAX_DAYS, math.ceil(max(numbers, default=Fraction(0))) + 2)


# ---------- comparisons ----------


def _apply(op: Op, left: Any, right: Any) -> ColumnElement[bool]:
    match op:
        case Op.EQ:
            return left == right  # type: ignore[no-any-return]
        case Op.NE:
            return left != right  # type: ignore[no-any-return]
        case Op.GT:
            return left > right  # type: ignore[no-any-return]
        case Op.GTE:
            return left >= right  # type: ignore[no-any-return]
        case Op.LT:
            return left < right  # type: ignore[no-any-return]
        case Op.LTE:
            return left <= right  # type: ignore[no-any-return]
    raise AssertionError(op)


def combine(one: Any, op: Op, value: Value, present: ColumnElement[bool]) -> ColumnElement[bool]:
    """in / not_in / between in terms of single comparisons `one(op, threshold)`."""
    match op:
        case Op.IN:
            return or_(false(), *(one(Op.EQ, v) for v in value))  # type: ignore[union-attr]
        case Op.NOT_IN:
            return and_(present, *(one(Op.NE, v) for v in value))  # type: ignore[union-attr]
        case Op.BETWEEN:
            low, high = cast_list(value)
            return and_(one(Op.GTE, low), one(Op.LTE, high))
        case Op.CONTAINS:
            return false()
    return one(op, value)  # type: ignore[no-any-return]


def integer_comparison(
    at_least: Any, op: Op, value: Value, present: ColumnElement[bool]
) -> ColumnElement[bool]:
    """A comparison of an integer quantity x with any number, given `at_least(n)` meaning x >= n."""

    def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
        if isinstance(threshold, Fraction):
            v = threshold
        elif is_number(threshold):
            v = Fraction(str(threshold))
        else:
            return false()
        low, high = math.floor(v), math.ceil(v)
        match comparison:
            case Op.GTE:
                return at_least(high)  # type: ignore[no-any-return]
            case Op.GT:
                return at_least(low + 1)  # type: ignore[no-any-return]
            case Op.LT:
                return and_(present, not_(at_least(high)))
            case Op.LTE:
                return and_(present, not_(at_least(low + 1)))
            case Op.EQ:
                return and_(at_least(low), not_(at_least(low + 1))) if low == high else false()
            case Op.NE:
                return (
                    and_(present, not_(and_(at_least(low), not_(at_least(low + 1)))))
                    if low == high
                    else present
                )
        raise AssertionError(comparison)

    return combine(one, op, value, present)


def compare_integer(x: ColumnElement[Any], op: Op, value: Value) -> ColumnElement[bool]:
    """An integer column (or NULL: absent) against a number."""
    if op == Op.EXISTS:
        return x.is_not(None) if value else x.is_(None)
    return integer_comparison(lambda n: guarded(x.is_not(None), x >= n), op, value, x.is_not(None))


def compare_scaled(
    dialect: str, x: ColumnElement[Any], op: Op, value: Value, scale: Fraction
) -> ColumnElement[bool]:
    """x / scale OP value: amounts in integer units exactly, numeric properties as numbers (scale 1)."""
    if scale != 1:
        if op == Op.EXISTS:
            return x.is_not(None) if value else x.is_(None)

        def scaled(n: int) -> ColumnElement[bool]:
            return guarded(x.is_not(None), x >= n)

        scaled_value: Any = (
            [_scale(v, scale) for v in value] if isinstance(value, list) else _scale(value, scale)
        )
        return integer_comparison(scaled, op, scaled_value, x.is_not(None))
    if op == Op.EXISTS:
        return x.is_not(None) if value else x.is_(None)

    def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
        if not is_number(threshold):
            return false()
        return guarded(x.is_not(None), _apply(comparison, x, sql_number(dialect, threshold)))

    return combine(one, op, value, x.is_not(None))


def _scale(value: Any, scale: Fraction) -> Any:
    if not is_number(value):
        return value
    return Fraction(str(value)) * scale


def compare_text(dialect: str, x: ColumnElement[Any], op: Op, value: Value) -> ColumnElement[bool]:
    """A text column (or NULL: absent) against a value; only strings compare with it."""
    if op == Op.EXISTS:
        return x.is_not(None) if value else x.is_(None)
    present = x.is_not(None)
    text = x.collate("C") if dialect == "postgresql" else x

    def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
        if not isinstance(threshold, str):
            return false()
        return guarded(present, _apply(comparison, text, literal(threshold)))

    if op == Op.CONTAINS:
        if not isinstance(value, str):
            return false()
        position = func.strpos(x, value) if dialect == "postgresql" else func.instr(x, value)
        return guarded(present, position > 0)
    if op == Op.NOT_IN and not all(isinstance(v, str) for v in value):  # type: ignore[union-attr]
        return false()
    return combine(one, op, value, present)


def compare_json(at: JsonPath, op: Op, value: Value) -> ColumnElement[bool]:
    """A free-form attribute against a value, with JSON types kept apart."""
    if op == Op.EXISTS:
        return at.type_is("present") if value else not_(at.type_is("present"))
    scalar = or_(at.type_is("number"), at.type_is("string"), at.type_is("boolean"))

    def one(comparison: Op, threshold: Any) -> ColumnElement[bool]:
        if comparison == Op.EQ:
            return at.equals(threshold)
        if comparison == Op.NE:
            return _json_differs(at, threshold)
        if isinstance(threshold, bool):
            return false()
        if is_number(threshold):
            return guarded(
                at.type_is("number"), _apply(comparison, at.number(), sql_number(at.dialect, threshold))
            )
        return guarded(at.type_is("string"), _apply(comparison, at.text(), literal(threshold)))

    if op == Op.CONTAINS:
        if isinstance(value, str):
            text = at.text()
            position = func.strpos(text, value) if at.dialect == "postgresql" else func.instr(text, value)
            string = guarded(at.type_is("string"), position > 0)
        else:
            string = false()
        return or_(string, at.array_contains(value))  # type: ignore[arg-type]
    return combine(one, op, value, scalar)


def _json_differs(at: JsonPath, value: Any) -> ColumnElement[bool]:
    kind = "boolean" if isinstance(value, bool) else "number" if is_number(value) else "string"
    return and_(at.type_is(kind), not_(at.equals(value)))
