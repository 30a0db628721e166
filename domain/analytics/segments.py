"""What a segment did over a date range, and how two segments overlap (see docs/analytics.md).

Days are UTC calendar days, like the daily aggregates. Every figure is one grouped
query over an index: the change log by (segment, at), memberships by segment, the
aggregates by (member, type, day) and events by (member, type, occurredAt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import ColumnElement, String, Table, and_, case, func, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.conversion import goal_within
from domain.analytics.recording import CLICKED, OPENED, STORED_GOAL, reacted
from domain.campaigns.messages import MessageStatus, stored_channel
from domain.clock import Clock
from domain.db.dialect import plus_days, utc_date
from domain.db.engine import Database
from domain.db.types import units_to_amount
from domain.enums import Channel
from domain.errors import InvalidInput, NotFound
from domain.events.validation import EVENT_TYPE
from domain.models import EventAggregate, Member, Message, Segment, SegmentChange, SegmentMembership
from domain.segments.conditions import PATH
from domain.segments.sqljson import JsonPath

T = TypeVar("T")
MAX_DAYS = 366
MAX_CONVERSION_DAYS = 90
ENTERED = "ENTERED"
LEFT = "LEFT"


@dataclass(frozen=True)
class DaySize:
    day: date
    size: int
    entered: int
    left: int


@dataclass(frozen=True)
class Conversion:
    goal_event_type: str
    days: int
    entered: int
    converted: int

    @property
    def rate(self) -> float | None:
        return None if self.entered == 0 else self.converted / self.entered


@dataclass(frozen=True)
class MessageStats:
    """Messages a segment's triggers created in the range, per template and channel (None: the
    SUPPRESSED ones, whose members accepted no channel)."""

    template: str
    channel: Channel | None
    created: int
    sent: int
    suppressed: int
    opened: int
    clicked: int
    converted: int


@dataclass(frozen=True)
class SegmentReport:
    key: str
    start: date
    end: date
    size: int
    days: list[DaySize]
    entered: int
    left: int
    average_points_balance: float | None
    purchases_per_member: float | None
    purchase_amount_per_member: Decimal | None
    conversion: Conversion
    messages: list[MessageStats]
    #: Today's members' purchases in the range: their amount over the purchases with one (a decimal).
    average_transaction_value: Decimal | None = None


@dataclass(frozen=True)
class BreakdownRow:
    """Members of a segment whose attribute holds `value` (None: missing or null)."""

    value: Any
    count: int
    share: float


@dataclass(frozen=True)
class Overlap:
    a: str
    b: str
    size_a: int
    size_b: int
    both: int

    @property
    def jaccard(self) -> float | None:
        union = self.size_a + self.size_b - self.both
        return None if union == 0 else self.both / union


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def check_range(start: date, end: date, today: date) -> None:
    if end < start:
        raise InvalidInput(f"to: {end} is before from {start}")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput(f"to: at most {MAX_DAYS} days from {start}, got {(end - start).days + 1}")
    if start > today:
        raise InvalidInput(f"from: {start} is in the future")


def check_goal(goal_event_type: str, conversion_days: int) -> None:
    if not EVENT_TYPE.match(goal_event_type):
        raise InvalidInput(f"goalEventType: {goal_event_type[:70]!r} does not match [a-z][a-z0-9_]{{0,63}}")
    if not 1 <= conversion_days <= MAX_CONVERSION_DAYS:
        raise InvalidInput(f"conversionDays: between 1 and {MAX_CONVERSION_DAYS}, got {conversion_days}")


class SegmentAnalytics:
    """Segment reports, breakdowns and overlaps. The segment is found on the primary (one just
    created is found at once); the figures may lag (`Database.lagging_read`), so they run on the
    read replica when there is one, and can miss what was committed within the replication delay
    (the replica's `replay_lag`: well under a second when healthy), which only today's figures can
    show."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def report(
        self,
        program_id: int,
        key: str,
        start: date,
        end: date,
        goal_event_type: str = "purchase",
        conversion_days: int = 7,
    ) -> SegmentReport:
        now = self.clock.now()
        check_range(start, end, now.date())
        check_goal(goal_event_type, conversion_days)
        segment = await self._segment(program_id, key)
        async with self.db.lagging_read() as session:
            size = await segment_size(session, segment.id)
        # The parts read different tables: run them side by side, each in its own read
        # transaction (a report is a set of figures, not one snapshot).
        days, (balance, purchases, amount), conversion, messages, average = await asyncio.gather(
            self._part(daily_sizes, segment.id, start, end, size, now),
            self._part(_members_figures, segment.id, size, start, end),
            self._part(_conversion, segment.id, start, end, goal_event_type, conversion_days),
            self._part(_messages, segment.id, start, end, goal_event_type, conversion_days),
            self._part(average_transaction_value, segment.id, start, end),
        )
        return SegmentReport(
            key,
            start,
            end,
            size,
            days,
            sum(d.entered for d in days),
            sum(d.left for d in days),
            balance,
            purchases,
            amount,
            conversion,
            messages,
            average,
        )

    async def breakdown(self, program_id: int, key: str, path: str, limit: int = 100) -> list[BreakdownRow]:
        """The segment's members by the value of an attribute, most frequent first (at most `limit`
        values; the missing/null group is one of them); shares of the segment's size."""
        if not isinstance(path, str) or not PATH.match(path):
            raise InvalidInput(f"path: {path[:70]!r} is not an attribute path such as gender or device.os")
        segment = await self._segment(program_id, key)
        async with self.db.lagging_read() as session:
            return await attribute_breakdown(session, segment.id, path, limit)

    async def _segment(self, program_id: int, key: str) -> Segment:
        async with self.db.read() as session:
            return await _segment(session, program_id, key)

    async def _part(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self.db.lagging_read() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Analytics hash and sort hundreds of thousands of rows: more memory than OLTP's
                # default, and no JIT compilation (it costs more than it saves on these queries).
                await session.execute(text("SET LOCAL work_mem = '64MB'"))
                await session.execute(text("SET LOCAL jit = off"))
            return await query(session, *args)

    async def overlap(self, program_id: int, a: str, b: str) -> Overlap:
        first, second = await self._segment(program_id, a), await self._segment(program_id, b)
        async with self.db.lagging_read() as session:
            other = SegmentMembership.__table__.alias("other")
            both = await session.scalar(
                select(func.count())
                .select_from(SegmentMembership)
                .join(
                    other,
                    and_(other.c.member_id == SegmentMembership.member_id, other.c.segment_id == second.id),
                )
                .where(SegmentMembership.segment_id == first.id)
            )
            return Overlap(
                a, b, await segment_size(session, first.id), await segment_size(session, second.id), both or 0
            )


async def _segment(session: AsyncSession, program_id: int, key: str) -> Segment:
    segment = await session.scalar(
        select(Segment).where(Segment.program_id == program_id, Segment.key == key)
    )
    if segment is None:
        raise NotFound(f"key: no segment {key[:70]!r} in this program")
    return segment


async def segment_size(session: AsyncSession, segment_id: int) -> int:
    count = await session.scalar(
        select(func.count()).select_from(SegmentMembership).where(SegmentMembership.segment_id == segment_id)
    )
    return count or 0


async def daily_sizes(
    session: AsyncSession, segment_id: int, start: date, end: date, size: int, now: datetime
) -> list[DaySize]:
    """Entries and exits per day from `start` to `end` (at most today); sizes walked back from
    today's `size`: the size at the end of day D is today's size minus what entered after D plus
    what left after D. Only the change log from `start` on is read, so rows older than that may
    be pruned (domain/ops/retention.py)."""
    day = utc_date(session, SegmentChange.at)
    rows = await session.execute(
        select(
            day.label("day"),
            func.sum(case((SegmentChange.change == ENTERED, 1), else_=0)),
            func.sum(case((SegmentChange.change == LEFT, 1), else_=0)),
        )
        .where(SegmentChange.segment_id == segment_id, SegmentChange.at >= day_start(start))
        .group_by(day)
    )
    moves: dict[date, tuple[int, int]] = {}
    for found, entered, left in rows:
        moves[found if isinstance(found, date) else date.fromisoformat(str(found))] = (
            entered or 0,
            left or 0,
        )
    days: list[DaySize] = []
    running = size
    last = min(end, now.date())
    for offset in range((now.date() - start).days, -1, -1):  # today back to `start`
        current = start + timedelta(days=offset)
        entered, left = moves.get(current, (0, 0))
        if current <= last:
            days.append(DaySize(current, running, entered, left))
        running = running - entered + left  # the size at the end of the day before
    days.reverse()
    return days


async def _members_figures(
    session: AsyncSession, segment_id: int, size: int, start: date, end: date
) -> tuple[float | None, float | None, Decimal | None]:
    """Average balance of today's members, and their purchases in the range per member."""
    if size == 0:
        return None, None, None
    balance = await session.scalar(
        select(func.avg(Member.points_balance))
        .join(SegmentMembership, SegmentMembership.member_id == Member.id)
        .where(SegmentMembership.segment_id == segment_id)
    )
    count, amount = (
        await session.execute(
            select(
                func.coalesce(func.sum(EventAggregate.count), 0),
                func.coalesce(func.sum(EventAggregate.amount_sum), 0),
            )
            .join(SegmentMembership, SegmentMembership.member_id == EventAggregate.member_id)
            .where(
                SegmentMembership.segment_id == segment_id,
                EventAggregate.event_type == "purchase",
                EventAggregate.day >= start,
                EventAggregate.day <= end,
            )
        )
    ).one()
    return (
        float(balance) if balance is not None else None,
        int(count) / size,
        (units_to_amount(int(amount)) / size).quantize(Decimal("0.01")),
    )


async def average_transaction_value(
    session: AsyncSession, segment_id: int, start: date, end: date
) -> Decimal | None:
    """Today's members' purchase amount in the range over their purchases that have an amount."""
    total, measured = (
        await session.execute(
            select(
                func.coalesce(func.sum(EventAggregate.amount_sum), 0),
                func.coalesce(func.sum(EventAggregate.amount_count), 0),
            )
            .join(SegmentMembership, SegmentMembership.member_id == EventAggregate.member_id)
            .where(
                SegmentMembership.segment_id == segment_id,
                EventAggregate.event_type == "purchase",
                EventAggregate.day >= start,
                EventAggregate.day <= end,
            )
        )
    ).one()
    if not measured:
        return None
    return (units_to_amount(int(total)) / int(measured)).quantize(Decimal("0.01"))


async def attribute_breakdown(
    session: AsyncSession, segment_id: int, path: str, limit: int
) -> list[BreakdownRow]:
    """Group the members by (JSON type, text) of the attribute: values of different types stay apart."""
    dialect = session.get_bind().dialect.name
    members = cast(Table, Member.__table__)
    at = JsonPath(dialect, members.c.attributes, path)
    if dialect == "postgresql":
        kind: Any = func.jsonb_typeof(func.jsonb_extract_path(members.c.attributes, *at.parts))
        value: Any = func.jsonb_extract_path_text(members.c.attributes, *at.parts)
    else:
        kind = func.json_type(members.c.attributes, at._sqlite_path)
        value = func.json_extract(members.c.attributes, at._sqlite_path)
        value = case((kind.in_(["array", "object"]), value), else_=cast_text(value))
    rows = await session.execute(
        select(kind.label("kind"), value.label("value"), func.count().label("n"))
        .select_from(members.join(SegmentMembership, SegmentMembership.member_id == members.c.id))
        .where(SegmentMembership.segment_id == segment_id)
        .group_by(kind, value)
    )
    counts: dict[tuple[str, str], tuple[Any, int]] = {}
    for json_kind, text_value, n in rows:
        decoded = _decoded(json_kind, text_value)
        key = (_kind_of(decoded), orjson.dumps(decoded, option=orjson.OPT_SORT_KEYS).decode())
        known = counts.get(key)
        counts[key] = (decoded, n + (known[1] if known else 0))
    size = sum(n for _, n in counts.values())
    # most frequent first; ties by the value's JSON text (C order), the missing/null group last
    ordered = sorted(counts.items(), key=lambda item: (-item[1][1], item[1][0] is None, item[0][1]))[:limit]
    return [BreakdownRow(decoded, n, n / size) for _, (decoded, n) in ordered]


def cast_text(value: Any) -> Any:
    return sql_cast(value, String)


def _decoded(kind: str | None, text_value: str | None) -> Any:
    """The JSON value of a (type, text) group; None for a missing or null attribute."""
    if kind in (None, "null") or text_value is None:
        return None
    if kind in ("true", "false"):  # SQLite's json_type
        return kind == "true"
    if kind == "boolean":
        return text_value == "true"
    if kind in ("number", "integer", "real"):
        number = Decimal(str(text_value))
        return int(number) if number == number.to_integral_value() else float(number)
    if kind in ("array", "object"):
        return orjson.loads(text_value)
    return text_value


def _kind_of(value: Any) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__ if value is not None else "null"


async def _conversion(
    session: AsyncSession, segment_id: int, start: date, end: date, goal: str, days: int
) -> Conversion:
    """Members who entered in the range, and those of them with a goal event within `days` after entering.

    A member who entered several times counts once, from their first entry in the range. For the
    stored goal the recorded `first_goal_at` answers when all the member's entries in the range are
    recorded (it is least at the first entry); otherwise the daily buckets are probed.
    """
    stored = goal == STORED_GOAL
    first_entry = (
        select(
            SegmentChange.member_id,
            func.min(SegmentChange.at).label("at"),
            func.min(SegmentChange.first_goal_at).label("first_goal_at"),
            func.min(case((SegmentChange.goal_known, 1), else_=0)).label("known"),
        )
        .where(
            SegmentChange.segment_id == segment_id,
            SegmentChange.change == ENTERED,
            SegmentChange.at >= day_start(start),
            SegmentChange.at < day_start(end + timedelta(days=1)),
        )
        .group_by(SegmentChange.member_id)
        .subquery()
    )
    entry = first_entry.c
    goal_event = goal_within(session, entry.member_id, entry.at, goal, days)
    if stored:
        goal_event = case(
            (entry.known == 1, entry.first_goal_at <= plus_days(session, entry.at, days)), else_=goal_event
        )
    entered, converted = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(case((goal_event, 1), else_=0)), 0)).select_from(
                first_entry
            )
        )
    ).one()
    return Conversion(goal, days, entered or 0, int(converted or 0))


async def _messages(
    session: AsyncSession, segment_id: int, start: date, end: date, goal: str, days: int
) -> list[MessageStats]:
    """Per template and channel: created, SENT, SUPPRESSED (their channel is None), opened and
    clicked (events `message_opened` / `message_clicked` of the member whose properties.messageId
    is the message's id), and converted (a goal event within `days` after the message was
    created). Recorded messages answer from their row (opened, clicked, first_goal_at for the
    stored goal); the others probe."""
    known = Message.stats_known

    def reaction(event_type: str, recorded: Any) -> ColumnElement[bool]:
        probe = reacted(Message.member_id, Message.id, Message.created_at, event_type)
        return case((known, recorded), else_=probe)

    def counted(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    converted = goal_within(session, Message.member_id, Message.created_at, goal, days)
    if goal == STORED_GOAL:
        until = plus_days(session, Message.created_at, days)
        converted = case((known, Message.first_goal_at <= until), else_=converted)
    rows = await session.execute(
        select(
            Message.template,
            Message.channel,
            func.count(),
            counted(Message.status == MessageStatus.SENT.value),
            counted(Message.status == MessageStatus.SUPPRESSED.value),
            counted(reaction(OPENED, Message.opened)),
            counted(reaction(CLICKED, Message.clicked)),
            counted(converted),
        )
        .where(
            Message.segment_id == segment_id,
            Message.created_at >= day_start(start),
            Message.created_at < day_start(end + timedelta(days=1)),
        )
        .group_by(Message.template, Message.channel)
        .order_by(Message.template, Message.channel.asc().nulls_first())  # suppressed (no channel) first
    )
    return [
        MessageStats(t, stored_channel(c), n, int(s), int(x), int(o), int(k), int(v))
        for t, c, n, s, x, o, k, v in rows
    ]
