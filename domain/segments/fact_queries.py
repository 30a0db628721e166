"""The statements `load_facts` runs, built once per dialect and shape of needs, then reused.

Building a SELECT in SQLAlchemy costs more than running it for one member: the
statements here are made once (per dialect, and for raw events per shape of the
conditions' needs) with bound parameters: `program_id`, `ids` (the member ids,
one array on PostgreSQL), `types` (bucket types) and `since_<seconds>` (the start
of each window). Limits: the caches grow with the distinct shapes of needs, which
change only when segment definitions do.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Executable,
    Select,
    Table,
    and_,
    bindparam,
    case,
    false,
    func,
    null,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.types import BigInteger

from domain.db.arrays import in_parameter
from domain.db.types import UtcDateTime
from domain.enums import AccrualStatus, EntryKind
from domain.events.refunds import not_refunded
from domain.models import (
    Event,
    EventAggregate,
    LedgerEntry,
    Member,
    MemberTag,
    Organization,
    PointsLot,
    Segment,
    SegmentMembership,
)
from domain.segments.conditions import Op, WhereTest, WhereValue
from domain.segments.sqljson import JsonPath

_events = cast(Table, Event.__table__)
#: A metric's `where` filter as `typed_where` gives it: () selects every event.
Where = tuple[tuple[str, str, WhereValue], ...]
#: Raw events to read: per type, (seconds back or None, filter) pairs; then per type the filters
#: whose events' properties are read (None: all of them).
Shape = tuple[
    tuple[tuple[str, tuple[tuple[int | None, Where], ...]], ...],
    tuple[tuple[str, tuple[Where, ...] | None], ...],
]


def instants(column: Any, dialect: str) -> Any:
    """`_instants`, for the statements built elsewhere (organization roll-ups)."""
    return _instants(column, dialect)


def _instants(column: Any, dialect: str) -> Any:
    """A UTC timestamp column as asyncpg returns it (aware, UTC) on PostgreSQL, skipping the
    per-value conversion of `UtcDateTime`; SQLite needs that conversion."""
    return type_coerce(column, DateTime(timezone=True)) if dialect == "postgresql" else column


@lru_cache(maxsize=4)
def members(dialect: str) -> Executable:
    organization = (
        select(Organization.external_id).where(Organization.id == Member.organization_id).scalar_subquery()
    )
    return select(
        Member.id,
        Member.external_id,
        Member.kind,
        organization,
        Member.attributes,
        Member.points_balance,
        Member.created_at,
        Member.joined_at,
        Member.rfm_r,
        Member.rfm_f,
        Member.rfm_m,
        Member.rfm_label,
        Member.abc_class,
        Member.churn_risk_7d,
        Member.channels,  # version 2: the built-in path `channels`
    ).where(
        Member.program_id == bindparam("program_id"),
        in_parameter(Member.id, "ids", dialect),
        Member.erased_at.is_(None),  # an erased member is never evaluated, so never re-enters a segment
    )


@lru_cache(maxsize=4)
def tags(dialect: str) -> Executable:
    return select(MemberTag.member_id, MemberTag.key, MemberTag.source).where(
        in_parameter(MemberTag.member_id, "ids", dialect)
    )


@lru_cache(maxsize=4)
def memberships(dialect: str) -> Executable:
    return (
        select(SegmentMembership.member_id, Segment.key)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(in_parameter(SegmentMembership.member_id, "ids", dialect))
    )


@lru_cache(maxsize=4)
def buckets(dialect: str) -> Executable:
    table = EventAggregate
    return select(
        table.member_id,
        table.event_type,
        table.day,
        table.count,
        table.amount_count,
        table.amount_sum,
        table.amount_min,
        table.amount_max,
        _instants(table.first_at, dialect),
        _instants(table.last_at, dialect),
    ).where(in_parameter(table.member_id, "ids", dialect), in_parameter(table.event_type, "types", dialect))


def since(seconds: int) -> str:
    """The name of the parameter holding `now - seconds`."""
    return f"since_{seconds}"


def _where(dialect: str, where: Where) -> ColumnElement[bool]:
    """The events a metric's `where` selects, with the evaluator's type-strict equality."""
    return and_(true(), *(where_test(dialect, _events.c.properties, name, value) for name, _, value in where))


def where_test(dialect: str, properties: Any, name: str, value: WhereValue) -> ColumnElement[bool]:
    """One `where` test of an event property, never NULL: equality, or `!=` / `in` / `not in`
    with the evaluator's semantics (`compare_value`: a missing property fails every test)."""
    at = JsonPath(dialect, properties, name)
    if not isinstance(value, WhereTest):
        return at.equals(value)
    from domain.segments.compile import compare_json  # compile.py reads this module's tables

    if value.op == Op.NE:
        return compare_json(at, Op.NE, value.values[0])
    return compare_json(at, value.op, list(value.values))


#: Entry kinds that points_earned never counts (nor reversals of them), as the POINTS board.
NOT_EARNED = (EntryKind.REDEMPTION.value, EntryKind.EXPIRY.value)


def ledger_rows(dialect: str, program_id: Any, since: Any) -> tuple[Select[Any], Any]:
    """member_id, at, points, kind ("earned" | "redeemed") of the POSTED entries ledger operands count.

    earned: what the `points` leaderboard counts (gamification/leaderboards/standings.py), dated as
    it dates them: the event's occurredAt, else the posting time. redeemed: REDEMPTION entries and
    reversals of them (points given back), dated when the redemption was posted.
    """
    entries = LedgerEntry.__table__.alias("le")
    original = LedgerEntry.__table__.alias("lo")
    event = _events.alias("lev")
    earned_at = func.coalesce(event.c.occurred_at, entries.c.created_at, type_=UtcDateTime())
    redeemed_at = func.coalesce(original.c.created_at, entries.c.created_at, type_=UtcDateTime())
    is_redemption = or_(
        entries.c.kind == EntryKind.REDEMPTION.value,
        and_(entries.c.kind == EntryKind.REVERSAL.value, original.c.kind == EntryKind.REDEMPTION.value),
    )
    is_earned = and_(
        entries.c.kind.not_in(NOT_EARNED), or_(original.c.id.is_(None), original.c.kind.not_in(NOT_EARNED))
    )
    at = case((is_redemption, redeemed_at), else_=earned_at)
    return (
        select(
            entries.c.member_id,
            _instants(type_coerce(at, UtcDateTime()), dialect).label("at"),
            entries.c.points,
            case((is_redemption, "redeemed"), else_="earned").label("kind"),
        )
        .select_from(
            entries.outerjoin(event, event.c.id == entries.c.event_id).outerjoin(
                original, original.c.id == entries.c.reverses_entry_id
            )
        )
        .where(
            entries.c.program_id == program_id,
            entries.c.status == AccrualStatus.POSTED.value,
            or_(is_redemption, is_earned),
            at > since,
        )
    ), entries


@lru_cache(maxsize=4)
def ledger(dialect: str) -> Executable:
    statement, entries = ledger_rows(
        dialect, bindparam("program_id"), bindparam("since", type_=UtcDateTime())
    )
    found: Executable = statement.where(in_parameter(entries.c.member_id, "ids", dialect))
    return found


@lru_cache(maxsize=4)
def lots(dialect: str) -> Executable:
    return select(PointsLot.member_id, _instants(PointsLot.expires_at, dialect), PointsLot.remaining).where(
        PointsLot.program_id == bindparam("program_id"),
        in_parameter(PointsLot.member_id, "ids", dialect),
        PointsLot.remaining > 0,
    )


@lru_cache(maxsize=256)
def events(dialect: str, shape: Shape) -> Executable:
    """The raw events some metric reads (its type, inside its window, passing its `where`), with the
    properties where a metric reads them and NULL elsewhere (nothing to decode)."""
    selections, properties = shape
    selected = or_(
        false(),
        *(
            and_(
                Event.type == event_type,
                true()
                if seconds is None
                else Event.occurred_at > bindparam(since(seconds), type_=UtcDateTime()),
                _where(dialect, where),
            )
            for event_type, chosen in selections
            for seconds, where in chosen
        ),
    )
    read = [
        and_(
            Event.type == event_type,
            true() if filters is None else or_(false(), *(_where(dialect, w) for w in filters)),
        )
        for event_type, filters in properties
    ]
    return select(
        Event.member_id,
        Event.type,
        _instants(Event.occurred_at, dialect),
        type_coerce(Event.amount, BigInteger),  # the stored units, not a Decimal
        case((or_(*read), Event.properties)) if read else null(),
    ).where(
        Event.program_id == bindparam("program_id"),
        in_parameter(Event.member_id, "ids", dialect),
        Event.status == "ACCEPTED",
        not_refunded(Event),
        selected,
    )
