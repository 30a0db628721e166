"""The vocabulary of the version 2 "dates" properties (issue 17): program timezones, local midnights,
date and version attributes, channels, and JSON conditions over them.

Zones have non-zero offsets, half- and quarter-hour offsets and DST (Istanbul +3, New York with its
March and November switches, Chatham +12:45/+13:45, St John's -3:30/-2:30, Kolkata +5:30); `now`
sits on and next to local midnights, DST switches and a leap day; events sit on local midnights
(and a microsecond either side) and at 01:30 local time. tests/test_conditions_v2_dates.py draws
from it for the equivalence of the evaluators (database) and for the time-flip property (pure).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st
from sqlalchemy import insert

from domain.db.engine import Database
from domain.enums import EventStatus
from domain.events.validation import ValidEvent
from domain.ledger.rows import add_to_aggregates
from domain.models import Event, Member, Program
from domain.segments.evaluate import Bucket, EventFact, MemberFacts

Json = dict[str, Any]
DAY = timedelta(days=1)
US = timedelta(microseconds=1)
ZONES = (
    "UTC",
    "Europe/Istanbul",
    "America/New_York",
    "Pacific/Chatham",
    "America/St_Johns",
    "Asia/Kolkata",
)
#: The pure time-flip property adds a zone whose clocks switch at midnight: America/Santiago goes back
#: from 24:00 to 23:00 (5 April 2026) and forward from 24:00 to 01:00 (6 September 2026). (Not in the
#: database equivalence: PostgreSQL's own tz database may disagree with Python's about Chile's future.)
FLIP_ZONES = (*ZONES, "America/Santiago")
#: Local dates around DST switches (New York 8 Mar / 1 Nov 2026, Chatham 5 Apr / 27 Sep 2026),
#: a leap day, the end of February of a common year and the end of a year.
LOCAL_DAYS = (
    date(2026, 3, 8),
    date(2026, 3, 9),
    date(2026, 11, 1),
    date(2026, 4, 5),
    date(2026, 9, 27),
    date(2028, 2, 29),
    date(2027, 3, 1),
    date(2026, 12, 31),
    date(2026, 6, 15),
    date(2026, 4, 4),
    date(2026, 9, 5),
)
LOCAL_TIMES = (time(0), time(1, 30), time(12), time(23, 59, 59, 999999), time(2, 30))
EVENT_TYPES = ("login", "visit")
PATHS = ("birthDate", "signup", "joinedAt")
FUNCTIONS = ("days_since", "days_to_anniversary")
CHANNELS = st.sampled_from([[], ["PUSH"], ["SMS", "PUSH"], ["EMAIL"], ["push"]])
VERSION_VALUES = st.sampled_from(
    [
        *("5", "5.0", "5.0.0", "v5.0.1", "10.2", "4.9.9", "05.00", "5.0.0.0.1", "5.0.0.0.0"),
        *("v", "", "5..0", "5.", ".5", "5.a", "V5", "99999999999999999999.1", "\uff15", "0", "v0.0"),
        *(5, 5.0, None, True),
    ]
)
VERSION_LITERALS = st.sampled_from(["5", "5.0", "4.9.9", "10", "v10.2", "0", "0.0.1", "5.0.0.1"])
DAY_COUNTS = st.sampled_from([0, 1, 2, 6, 7, 30, 364, 365, 366, -1, 0.5, 10_000, 9000])


def local(day: date, at: time, zone: str) -> datetime:
    """The UTC instant of a local wall time (the earlier one in a fold, past the gap in a gap)."""
    return datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def nows(zones: tuple[str, ...] = ZONES) -> st.SearchStrategy[tuple[str, datetime]]:
    """(zone, now): on and next to local midnights and DST switches."""

    @st.composite
    def draw_now(draw: st.DrawFn) -> tuple[str, datetime]:
        zone = draw(st.sampled_from(zones))
        instant = local(draw(st.sampled_from(LOCAL_DAYS)), draw(st.sampled_from(LOCAL_TIMES)), zone)
        return zone, instant + draw(st.sampled_from([timedelta(0), US, -US, timedelta(hours=3)]))

    return draw_now()


def event_times(zone: str, now: datetime) -> st.SearchStrategy[datetime]:
    """Local midnights of the last days (and a microsecond either side), 01:30 local, a spread."""
    today = now.astimezone(ZoneInfo(zone)).date()
    edges = []
    for back in range(-1, 6):
        midnight = local(today - back * DAY, time(0), zone)
        edges += [midnight, midnight - US, midnight + US, local(today - back * DAY, time(1, 30), zone)]
    spread = st.integers(-3600 * 10**6, 9 * 86_400 * 10**6).map(lambda us: now - timedelta(microseconds=us))
    return st.one_of(st.sampled_from(edges), spread)


def date_values(zone: str, now: datetime) -> st.SearchStrategy[Any]:
    """Attribute values for `days_since` / `days_to_anniversary`: dates near today's month and day
    (29 February included), DateTimes with offsets around local midnight, and non-dates."""
    today = now.astimezone(ZoneInfo(zone)).date()
    near = [today + k * DAY for k in (-7, -6, -1, 0, 1, 6, 7)]
    dates = [d.replace(year=1992 if (d.month, d.day) == (2, 29) else 1990).isoformat() for d in near]
    dates += [
        "2000-02-29",
        "1996-02-29",
        "2024-02-29",
        "2000-02-30",
        "2026-13-01",
        "0999-01-01",
        today.isoformat(),
    ]
    stamps = []
    for d in (today, today - DAY, today - 6 * DAY):
        stamps += [
            f"{d.isoformat()}T23:30:00+00:00",
            f"{d.isoformat()}T01:30:00+03:00",
            f"{d.isoformat()}T00:00:00Z",
            f"{d.isoformat()}T23:59:59.999999-05:00",
            f"{d.isoformat()}T12:15+0545",
            f"{d.isoformat()}T10:00:00",  # no offset: not a date
            f"{d.isoformat()}T10:00:00z",  # lower-case z: not a date
            f"{d.isoformat()} 10:00:00Z",  # a space: not a date
        ]
    return st.one_of(
        st.sampled_from(dates), st.sampled_from(stamps), st.sampled_from([None, 20260301, "soon", True])
    )


@st.composite
def attributes(draw: st.DrawFn, zone: str, now: datetime) -> Json:
    found: Json = {}
    for name in ("birthDate", "signup"):
        if draw(st.booleans()):
            found[name] = draw(date_values(zone, now))
    if draw(st.booleans()):
        found["device"] = {"appVersion": draw(VERSION_VALUES)}
    if draw(st.booleans()):
        found["appVersion"] = draw(VERSION_VALUES)
    return found


# ---------- conditions (JSON) ----------


def _numbers_for(op: str) -> st.SearchStrategy[Any]:
    if op == "exists":
        return st.booleans()
    if op in ("in", "not_in"):
        return st.lists(DAY_COUNTS, max_size=3)
    if op == "between":
        return st.lists(DAY_COUNTS, min_size=2, max_size=2)
    return DAY_COUNTS


@st.composite
def date_leaves(draw: st.DrawFn) -> Json:
    op = draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "between", "exists"]))
    fn = draw(st.sampled_from(FUNCTIONS))
    return {"date": draw(st.sampled_from(PATHS)), "fn": fn, "op": op, "value": draw(_numbers_for(op))}


@st.composite
def version_leaves(draw: st.DrawFn) -> Json:
    op = draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "between", "exists"]))
    value: Any
    if op == "exists":
        value = draw(st.booleans())
    elif op in ("in", "not_in"):
        value = draw(st.lists(VERSION_LITERALS, max_size=3))
    elif op == "between":
        value = draw(st.lists(VERSION_LITERALS, min_size=2, max_size=2))
    else:
        value = draw(VERSION_LITERALS)
    path = draw(st.sampled_from(["device.appVersion", "appVersion"]))
    return {"attr": path, "op": op, "value": value, "as": "version"}


@st.composite
def local_day_leaves(draw: st.DrawFn) -> Json:
    """streak, distinct_days (windows of hours and days) and age: the local-date aggregates."""
    agg = draw(st.sampled_from(["streak", "distinct_days", "distinct_days"]))
    metric: Json = {"event": draw(st.sampled_from(EVENT_TYPES)), "agg": agg}
    if agg == "distinct_days":
        window = draw(st.sampled_from([None, "1d", "2d", "7d", "36h", "all"]))
        if window is not None:
            metric["window"] = window
        if draw(st.integers(0, 4)) == 0:
            metric["where"] = {"source": "app"}
    op = draw(st.sampled_from(["eq", "gte", "lt", "between", "ne"]))
    value = draw(st.sampled_from([0, 1, 2, 3, 4]) if op != "between" else st.just([1, 3]))
    return {"metric": metric, "op": op, "value": value}


@st.composite
def other_leaves(draw: st.DrawFn) -> Json:
    """channels, age and exists = false."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        op = draw(st.sampled_from(["contains", "contains", "exists", "eq", "in"]))
        value: Any = {"exists": draw(st.booleans()), "in": ["PUSH"]}.get(op, "PUSH")
        return {"attr": "channels", "op": op, "value": value}
    if kind == 1:
        return {
            "attr": "age",
            "op": draw(st.sampled_from(["gte", "lt", "eq"])),
            "value": draw(st.sampled_from([0, 34, 36])),
        }
    return {"attr": draw(st.sampled_from(["birthDate", "device.appVersion"])), "op": "exists", "value": False}


LEAVES = st.one_of(date_leaves(), date_leaves(), version_leaves(), local_day_leaves(), other_leaves())
CONDITIONS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=5,
)


# ---------- histories ----------


@dataclass(frozen=True)
class EventSpec:
    type: str
    occurred_at: datetime
    properties: Json = field(default_factory=dict)


@dataclass(frozen=True)
class MemberSpec:
    joined_at: datetime
    attributes: Json
    channels: list[str]
    events: tuple[EventSpec, ...]


@dataclass(frozen=True)
class History:
    zone: str
    now: datetime
    members: tuple[MemberSpec, ...]


@st.composite
def histories(draw: st.DrawFn, max_members: int = 6, zones: tuple[str, ...] = ZONES) -> History:
    zone, now = draw(nows(zones))
    members = []
    for _ in range(draw(st.integers(1, max_members))):
        events = draw(
            st.lists(
                st.builds(
                    EventSpec,
                    st.sampled_from(EVENT_TYPES),
                    event_times(zone, now),
                    st.sampled_from([{}, {"source": "app"}]),
                ),
                max_size=10,
            )
        )
        members.append(
            MemberSpec(
                joined_at=draw(event_times(zone, now) | st.sampled_from([now - 400 * DAY, now - 366 * DAY])),
                attributes=draw(attributes(zone, now)),
                channels=draw(CHANNELS),
                events=tuple(events),
            )
        )
    return History(zone, now, tuple(members))


def member_facts(spec: MemberSpec, member_id: int = 1) -> MemberFacts:
    """The facts `load_facts` reads for a member of a history (every event, raw and bucketed by UTC day)."""
    by_type: dict[str, list[EventFact]] = {}
    for event in spec.events:
        by_type.setdefault(event.type, []).append(EventFact(event.occurred_at, None, event.properties))
    buckets: dict[str, list[Bucket]] = {}
    for event_type, facts in by_type.items():
        days: dict[date, list[EventFact]] = {}
        for fact in facts:
            days.setdefault(fact.occurred_at.astimezone(UTC).date(), []).append(fact)
        buckets[event_type] = [
            Bucket(
                day,
                len(found),
                0,
                0,
                None,
                None,
                min(f.occurred_at for f in found),
                max(f.occurred_at for f in found),
            )
            for day, found in sorted(days.items())
        ]
    return MemberFacts(
        member_id=member_id,
        external_id=f"m{member_id}",
        kind="CUSTOMER",
        organization=None,
        attributes=spec.attributes,
        points_balance=0,
        created_at=spec.joined_at,
        joined_at=spec.joined_at,
        buckets=buckets,
        events=by_type,
        channels=tuple(spec.channels),
    )


_serial = itertools.count(1)


async def write_history(db: Database, history: History) -> tuple[int, list[int]]:
    """A fresh program in the history's timezone holding its members; (program id, member ids in order)."""
    now = history.now
    async with db.unit_of_work() as uow:
        session = uow.session
        key = f"v2d-{uuid.uuid4().hex[:16]}"
        program_id = (
            await session.execute(
                insert(Program)
                .values(key=key, name=key, kind="B2C", settings={"timezone": history.zone}, created_at=now)
                .returning(Program.id)
            )
        ).scalar_one()
        member_ids: list[int] = []
        accepted: list[tuple[int, ValidEvent]] = []
        rows: list[Json] = []
        for n, spec in enumerate(history.members):
            member_id = (
                await session.execute(
                    insert(Member)
                    .values(
                        program_id=program_id,
                        external_id=f"m{n}",
                        kind="CUSTOMER",
                        attributes=spec.attributes,
                        channels=spec.channels,
                        joined_at=spec.joined_at,
                        created_at=spec.joined_at,
                        updated_at=now,
                        points_balance=0,
                        pending_points=0,
                    )
                    .returning(Member.id)
                )
            ).scalar_one()
            member_ids.append(member_id)
            for event in spec.events:
                external_id = f"v2d{next(_serial)}-{uuid.uuid4().hex[:8]}"
                rows.append(
                    {
                        "program_id": program_id,
                        "external_id": external_id,
                        "member_id": member_id,
                        "type": event.type,
                        "occurred_at": event.occurred_at,
                        "amount": None,
                        "properties": event.properties,
                        "status": EventStatus.ACCEPTED,
                        "points_awarded": 0,
                        "message": None,
                        "content_hash": external_id,
                        "received_at": now,
                    }
                )
                valid = ValidEvent(
                    external_id,
                    f"m{n}",
                    event.type,
                    event.occurred_at,
                    None,
                    event.properties,
                    external_id,
                )
                accepted.append((member_id, valid))
        if rows:
            await session.execute(insert(Event), rows)
        await add_to_aggregates(session, program_id, accepted)
    return program_id, member_ids


#: Conditions weighted towards leaves that move with time (the time-flip property).
TIMED_CONDITIONS = st.recursive(
    st.one_of(date_leaves(), date_leaves(), local_day_leaves(), other_leaves()),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=3,
)
