"""Did a member convert: a goal event within some days after a moment (entering a segment,
receiving a message, being exposed to an experiment)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, exists
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.dialect import plus_days, utc_date
from domain.models import EventAggregate


def goal_within(session: AsyncSession, member: Any, since: Any, goal: str, days: int) -> ColumnElement[bool]:
    """The member has an accepted, unrefunded `goal` event in (since, since + days], read from the
    daily buckets (which hold exactly those events) rather than from the events themselves.

    Exact: the buckets of the days from since's day to (since + days)'s day are the candidates;
    one holds such an event if and only if its last event is after `since` and its first is not
    after `since + days` (on the first day every event is before since + days, on the last every
    event is after since, and the days between hold only events in the window).
    """
    until = plus_days(session, since, days)
    return exists().where(
        EventAggregate.member_id == member,
        EventAggregate.event_type == goal,
        EventAggregate.day >= utc_date(session, since),
        EventAggregate.day <= utc_date(session, until),
        EventAggregate.last_at > since,
        EventAggregate.first_at <= until,
    )
