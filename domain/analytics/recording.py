"""Conversions and message reactions recorded as their events arrive, so a report counts instead of probing.

What is stored (migration 0011), for the goal type STORED_GOAL only:

- `segment_changes.first_goal_at` of an ENTERED row: the `first_at` of the member's first goal
  bucket (by day) on or after the entry's day whose last event is after the entry; null when there
  is none. A goal event within `days` after the entry exists, exactly as `goal_within` decides from
  the same buckets, if and only if `first_goal_at <= at + days`, for every `days`. It never
  decreases from an entry to a later one (a later entry's candidate buckets are a subset of an
  earlier one's), so a member's first entry in a range has the least value of their entries there.
- `messages.first_goal_at` likewise from `created_at`; `messages.opened` / `clicked`: an event
  `message_opened` / `message_clicked` of the member at or after the message naming it in
  `properties.messageId` (of any status, as the report's probe counts them).
- `goal_known` / `stats_known`: the row's stored figures are current. Whoever logs a row (the
  segment engine, triggers) leaves it unknown; `record_conversions` records the batch's members'
  unknown rows and keeps their known rows current; a report probes the rows still unknown.

Limits: exact only while every write of the goal buckets (accepted events, approvals, refunds)
calls `record_conversions` in its transaction, under the members' locks (the pipeline and the
review queue do). A process of an older release writes events without it: after running one on
this schema, `record_history(..., everything=True)` (`loyalty analytics record --all`) makes the
stored figures current again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    exists,
    false,
    or_,
    select,
    true,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.dialect import utc_date
from domain.db.engine import Database
from domain.events.refunds import REFUND_OF, REFUND_TYPE
from domain.members.service import lock_members
from domain.models import Event, EventAggregate, Message, SegmentChange

#: The goal type whose conversions are stored; reports for other goal types probe the buckets.
STORED_GOAL = "purchase"
OPENED = "message_opened"
CLICKED = "message_clicked"
ENTERED = "ENTERED"

changes = cast(Table, SegmentChange.__table__)
messages = cast(Table, Message.__table__)
buckets = cast(Table, EventAggregate.__table__)
events = cast(Table, Event.__table__)


class RecordedEvent(Protocol):
    """What `record_conversions` reads of an event (domain.events.validation.ValidEvent has it)."""

    @property
    def type(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def properties(self) -> Any: ...


async def record_conversions(
    session: AsyncSession, program_id: int, recorded: Iterable[tuple[int, RecordedEvent]]
) -> None:
    """Bring the stored figures of the members of `recorded` (member id, event) up to date.

    Call it in the transaction that stored the events, after segments and triggers ran (so the
    rows they logged are recorded too), holding the members' locks. Any events of the batch may
    be passed, of any status: they only say which rows to recompute, the values come from the
    database. Goal events and refunds of goal events recompute the rows whose answer may depend
    on the days they change; reactions recompute the member's messages not yet opened and clicked.
    """
    members: set[int] = set()
    goal_days: dict[int, set[date]] = {}
    refunds: dict[str, int] = {}
    reactions: dict[int, datetime] = {}
    for member_id, event in recorded:
        members.add(member_id)
        if event.type == STORED_GOAL:
            goal_days.setdefault(member_id, set()).add(event.occurred_at.astimezone(UTC).date())
        elif event.type == REFUND_TYPE and isinstance(event.properties, dict):
            refund_of = event.properties.get(REFUND_OF)
            if isinstance(refund_of, str):
                refunds[refund_of] = member_id
        elif event.type in (OPENED, CLICKED):
            reactions[member_id] = max(event.occurred_at, reactions.get(member_id, event.occurred_at))
    if not members:
        return
    for member_id, occurred_at in await _refunded_goals(session, program_id, refunds):
        goal_days.setdefault(member_id, set()).add(occurred_at.astimezone(UTC).date())
    await _refresh_changes(session, _changes_due(session, program_id, members, goal_days))
    await _refresh_messages(session, _messages_due(session, program_id, members, goal_days, reactions))


async def fill_conversions(
    session: AsyncSession,
    program_id: int,
    member_ids: Sequence[int] | None = None,
    *,
    everything: bool = False,
) -> None:
    """Record the program's unknown rows (or, with `everything`, recompute all of them), of the
    members `member_ids` (default: every member).

    Without `member_ids` it holds no member locks: run it offline (as bench/analytics.py does for
    its generated history); `record_history` runs it online, member by member under their locks.
    """
    known_ok = true() if everything else false()
    ids = None if member_ids is None else list(member_ids)
    change_members = true() if ids is None else _among(session, changes.c.member_id, ids)
    message_members = true() if ids is None else _among(session, messages.c.member_id, ids)
    await _refresh_changes(
        session,
        and_(
            changes.c.program_id == program_id,
            changes.c.change == ENTERED,
            change_members,
            or_(~changes.c.goal_known, known_ok),
        ),
    )
    await _refresh_messages(
        session,
        and_(messages.c.program_id == program_id, message_members, or_(~messages.c.stats_known, known_ok)),
    )


async def record_history(
    db: Database, program_id: int, *, everything: bool = False, chunk: int = 1000
) -> int:
    """Record the program's unknown rows (with `everything`: recompute every row) while it runs:
    `chunk` members per transaction, under their locks as the pipeline takes them. Rows the segment
    scheduler logs stay unknown until their member's next batch; this records them at once, and
    `everything` repairs the figures after a release without recording (an older one) wrote events.
    Returns the number of members visited."""
    after, visited = 0, 0
    while True:
        async with db.read() as session:
            found = await session.execute(_members_with_rows(program_id, after, everything).limit(chunk))
            ids = [int(row[0]) for row in found]
        if not ids:
            return visited
        async with db.unit_of_work() as uow:
            await lock_members(uow.session, ids)
            await fill_conversions(uow.session, program_id, ids, everything=everything)
        after, visited = ids[-1], visited + len(ids)


def _members_with_rows(program_id: int, after: int, everything: bool) -> Select[Any]:
    known_ok = true() if everything else false()
    entries = select(changes.c.member_id.label("member_id")).where(
        changes.c.program_id == program_id,
        changes.c.change == ENTERED,
        changes.c.member_id > after,
        or_(~changes.c.goal_known, known_ok),
    )
    sent = select(messages.c.member_id.label("member_id")).where(
        messages.c.program_id == program_id,
        messages.c.member_id > after,
        or_(~messages.c.stats_known, known_ok),
    )
    found = union(entries, sent).subquery()
    return select(found.c.member_id).order_by(found.c.member_id)


def first_goal(session: AsyncSession, member: Any, since: Any) -> ColumnElement[Any]:
    """The stored value for an entry (or message) of `member` at `since`: see the module docstring."""
    return (
        select(buckets.c.first_at)
        .where(
            buckets.c.member_id == member,
            buckets.c.event_type == STORED_GOAL,
            buckets.c.day >= utc_date(session, since),
            buckets.c.last_at > since,
        )
        .order_by(buckets.c.day)
        .limit(1)
        .scalar_subquery()
    )


def reacted(member: Any, message_id: Any, created_at: Any, kind: str) -> ColumnElement[bool]:
    """An event `kind` of the member at or after `created_at` whose properties.messageId names the message."""
    return exists().where(
        events.c.member_id == member,
        events.c.type == kind,
        events.c.occurred_at >= created_at,
        events.c.properties["messageId"].as_string().cast(String) == message_id.cast(String),
    )


async def _refunded_goals(
    session: AsyncSession, program_id: int, refunds: dict[str, int]
) -> Sequence[tuple[int, datetime]]:
    """The member and occurredAt of each goal event the batch's refunds name (whether they took or not)."""
    if not refunds:
        return []
    rows = await session.execute(
        select(events.c.member_id, events.c.occurred_at).where(
            events.c.program_id == program_id,
            _among(session, events.c.external_id, sorted(refunds), String()),
            events.c.type == STORED_GOAL,
        )
    )
    return [(member_id, occurred_at) for member_id, occurred_at in rows]


def _changes_due(
    session: AsyncSession, program_id: int, members: set[int], goal_days: dict[int, set[date]]
) -> ColumnElement[bool]:
    due = ~changes.c.goal_known
    if goal_days:
        c = changes.c
        due = or_(due, _depends(session, c.member_id, c.at, c.first_goal_at, goal_days))
    return and_(
        changes.c.program_id == program_id,
        changes.c.change == ENTERED,
        _among(session, changes.c.member_id, sorted(members)),
        due,
    )


def _messages_due(
    session: AsyncSession,
    program_id: int,
    members: set[int],
    goal_days: dict[int, set[date]],
    reactions: dict[int, datetime],
) -> ColumnElement[bool]:
    due = ~messages.c.stats_known
    if goal_days:
        m = messages.c
        due = or_(due, _depends(session, m.member_id, m.created_at, m.first_goal_at, goal_days))
    if reactions:
        due = or_(
            due,
            and_(
                _among(session, messages.c.member_id, sorted(reactions)),
                messages.c.created_at <= max(reactions.values()),
                or_(~messages.c.opened, ~messages.c.clicked),
            ),
        )
    return and_(
        messages.c.program_id == program_id, _among(session, messages.c.member_id, sorted(members)), due
    )


def _depends(
    session: AsyncSession, member: Any, at: Any, stored: Any, goal_days: dict[int, set[date]]
) -> ColumnElement[bool]:
    """Rows whose stored value may change with the goal buckets of `goal_days`: a bucket of day d
    can only be a candidate for a row at or before the end of d, and only moves a value that is
    null or not before d's start (one window over all the batch's days: a superset)."""
    days = [day for found in goal_days.values() for day in found]
    since = datetime.combine(min(days), time.min, tzinfo=UTC)
    until = datetime.combine(max(days), time.min, tzinfo=UTC) + timedelta(days=1)
    return and_(
        _among(session, member, sorted(goal_days)),
        at < until,
        or_(stored.is_(None), stored >= since),
    )


async def _refresh_changes(session: AsyncSession, where: ColumnElement[bool]) -> None:
    await session.execute(
        update(changes)
        .where(where)
        .values(first_goal_at=first_goal(session, changes.c.member_id, changes.c.at), goal_known=True)
        .execution_options(synchronize_session=False)
    )


async def _refresh_messages(session: AsyncSession, where: ColumnElement[bool]) -> None:
    member, created_at = messages.c.member_id, messages.c.created_at
    await session.execute(
        update(messages)
        .where(where)
        .values(
            first_goal_at=first_goal(session, member, created_at),
            opened=reacted(member, messages.c.id, created_at, OPENED),
            clicked=reacted(member, messages.c.id, created_at, CLICKED),
            stats_known=True,
        )
        .execution_options(synchronize_session=False)
    )


def _among(session: AsyncSession, column: Any, values: list[Any], kind: Any = None) -> ColumnElement[bool]:
    """`column = ANY(:array)` on PostgreSQL (one plan whatever the count), IN elsewhere."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, values, type_=ARRAY(kind if kind is not None else BigInteger()))
        return cast(ColumnElement[bool], column == any_(array))
    return cast(ColumnElement[bool], column.in_(values))
