"""The two evaluators of segment-conditions.md agree: in memory (`evaluate.py`) and compiled SQL (`compile.py`).

For generated conditions over a small shared vocabulary and generated member histories
(events on window edges and day boundaries, mixed JSON attribute types, tags, segments,
held and blocked events), the members for whom `Evaluation.holds` is true are exactly the
ids `Compilation.members_where` selects. Explicit examples pin the tricky cases to the
outcome the spec prescribes, so that both evaluators agreeing on a wrong answer fails too.

Like tests/test_ledger_properties.py, these are sync tests with a private event loop and
engine (a `Harness`): hypothesis cannot re-enter pytest-asyncio's session loop. Every
example writes a fresh program, so examples never see each other's rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from domain.db.engine import Database, create_engine
from domain.enums import EventStatus
from domain.events.validation import ValidEvent
from domain.ledger.rows import add_to_aggregates
from domain.models import Event, Member, MemberTag, Organization, Program, Segment, SegmentMembership
from domain.segments.compile import Compilation
from domain.segments.conditions import Node, parse_condition
from domain.segments.evaluate import EarnedEvent, Evaluation
from domain.segments.facts import Needs, load_facts
from domain.settings import Settings
from tests.support.examples import examples
from tests.support.vocabulary import (
    CONDITIONS,
    DAY,
    EVENT_TYPES,
    LEAVES,
    NOWS,
    ORGANIZATIONS,
    SEGMENTS,
    US,
    Json,
    attributes_of,
    comparison,
    edge_times,
    instants_near,
)

T = TypeVar("T")
_serial = itertools.count(1)
EXAMPLES = examples(int(os.environ.get("EQUIVALENCE_EXAMPLES", "150")))


# ---------- harness ----------


@dataclass
class Harness:
    """A private event loop with its own engine, for sync (hypothesis) tests."""

    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    db: Database

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(step)


@contextmanager
def open_harness(database_url: str) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    engine = create_engine(database_url)
    try:
        yield Harness(loop, engine, Database(engine))
    finally:
        loop.run_until_complete(engine.dispose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(scope="module")
def harness(settings: Settings) -> Iterator[Harness]:
    with open_harness(settings.database_url) as opened:
        yield opened


# ---------- histories ----------


@dataclass(frozen=True)
class EventSpec:
    type: str
    occurred_at: datetime
    amount: Decimal | None = None
    properties: Json = field(default_factory=dict)
    status: str = EventStatus.ACCEPTED


@dataclass(frozen=True)
class MemberSpec:
    created_at: datetime
    joined_at: datetime
    kind: str = "CUSTOMER"
    organization: str | None = None
    attributes: Json = field(default_factory=dict)
    points_balance: int = 0
    rfm: tuple[int, int, int, str] | None = None
    abc_class: str | None = None
    churn_risk_7d: float | None = None
    tags: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    events: tuple[EventSpec, ...] = ()


@dataclass(frozen=True)
class History:
    now: datetime
    members: tuple[MemberSpec, ...]


def event_times(now: datetime) -> st.SearchStrategy[datetime]:
    spread = st.integers(0, 40 * 86_400 * 10**6).map(lambda us: now - timedelta(microseconds=us))
    return st.one_of(st.sampled_from(edge_times(now)), spread)


AMOUNTS = st.one_of(
    st.none(),
    st.sampled_from(
        [Decimal(0), Decimal(1), Decimal("2.5"), Decimal(10), Decimal("12.3456"), Decimal("0.0001")]
    ),
    st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False),
)
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "category": st.sampled_from(["coffee", "tea", 1, True]),
        "qty": st.one_of(st.integers(0, 5), st.sampled_from(["3", 2.5, 0.25, False])),
    },
)
STATUSES = st.sampled_from(
    [EventStatus.ACCEPTED] * 6 + [EventStatus.HELD_FOR_REVIEW, EventStatus.BLOCKED]
).map(str)


def events_of(now: datetime) -> st.SearchStrategy[EventSpec]:
    return st.builds(
        EventSpec,
        type=st.sampled_from(EVENT_TYPES),
        occurred_at=event_times(now),
        amount=AMOUNTS,
        properties=PROPERTIES,
        status=STATUSES,
    )


RFM = st.one_of(
    st.none(),
    st.tuples(
        st.integers(1, 5),
        st.integers(1, 5),
        st.integers(1, 5),
        st.sampled_from(["champions", "at_risk", "lost"]),
    ),
)


#: Stored churn scores: on and around the thresholds vocabulary.NUMBERS draws (0.5, 1, 0.0001), and floats
#: whose shortest repr is long, so that both evaluators must compare the same double.
CHURN_RISKS = st.one_of(
    st.sampled_from([None, 0.0, 0.5, 0.7, 0.7000000000000001, 0.49999999999999994, 1.0, 0.0001, 1 / 3]),
    st.floats(0, 1),
)


@st.composite
def histories(draw: st.DrawFn) -> History:
    now = draw(st.sampled_from(NOWS))
    members = draw(
        st.lists(
            st.builds(
                MemberSpec,
                created_at=instants_near(now),
                joined_at=instants_near(now),
                kind=st.sampled_from(["CUSTOMER", "DEALER", "EMPLOYEE"]),
                organization=st.sampled_from([None, *ORGANIZATIONS]),
                attributes=attributes_of(now),
                points_balance=st.integers(0, 12),
                rfm=RFM,
                abc_class=st.sampled_from([None, "A", "B", "C"]),
                churn_risk_7d=CHURN_RISKS,
                tags=st.lists(st.sampled_from(["vip", "new"]), unique=True).map(tuple),
                segments=st.lists(st.sampled_from(SEGMENTS[:1]), unique=True).map(tuple),
                events=st.lists(events_of(now), max_size=15).map(tuple),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return History(now, tuple(members))


# ---------- writing a history, running both evaluators ----------


async def write_history(db: Database, history: History) -> tuple[int, list[int], dict[str, int]]:
    """A fresh program holding `history`; its id, the member ids (in order) and segment ids by key."""
    now = history.now
    async with db.unit_of_work() as uow:
        session = uow.session
        key = f"eq-{uuid.uuid4().hex[:16]}"
        program_id = await _insert_id(
            session, Program, key=key, name=key, kind="B2C", settings={}, created_at=now
        )
        organizations = {
            external_id: await _insert_id(
                session,
                Organization,
                program_id=program_id,
                external_id=external_id,
                name=external_id,
                attributes={},
                created_at=now,
            )
            for external_id in ORGANIZATIONS
        }
        segment_ids = {
            segment: await _insert_id(
                session,
                Segment,
                program_id=program_id,
                key=segment,
                name=segment,
                kind="STATIC",
                condition=None,
                applies_tag=None,
                created_at=now,
                updated_at=now,
            )
            for segment in SEGMENTS
        }
        member_ids: list[int] = []
        accepted: list[tuple[int, ValidEvent]] = []
        event_rows: list[Json] = []
        for n, spec in enumerate(history.members):
            rfm = spec.rfm or (None, None, None, None)
            member_id = await _insert_id(
                session,
                Member,
                program_id=program_id,
                external_id=f"m{n}",
                kind=spec.kind,
                organization_id=organizations.get(spec.organization or ""),
                attributes=spec.attributes,
                channels=[],
                joined_at=spec.joined_at,
                created_at=spec.created_at,
                updated_at=now,
                points_balance=spec.points_balance,
                pending_points=0,
                rfm_r=rfm[0],
                rfm_f=rfm[1],
                rfm_m=rfm[2],
                rfm_label=rfm[3],
                abc_class=spec.abc_class,
                churn_risk_7d=spec.churn_risk_7d,
            )
            member_ids.append(member_id)
            for tag in spec.tags:
                await session.execute(
                    insert(MemberTag).values(
                        member_id=member_id, key=tag, source="manual", program_id=program_id, since=now
                    )
                )
            for segment in spec.segments:
                await session.execute(
                    insert(SegmentMembership).values(
                        program_id=program_id, segment_id=segment_ids[segment], member_id=member_id, since=now
                    )
                )
            for event in spec.events:
                external_id = f"e{next(_serial)}"
                digest = hashlib.sha256(external_id.encode()).hexdigest()
                event_rows.append(
                    {
                        "program_id": program_id,
                        "external_id": external_id,
                        "member_id": member_id,
                        "type": event.type,
                        "occurred_at": event.occurred_at,
                        "amount": event.amount,
                        "properties": event.properties,
                        "status": event.status,
                        "points_awarded": 0,
                        "message": None,
                        "content_hash": digest,
                        "received_at": now,
                    }
                )
                if event.status == EventStatus.ACCEPTED:
                    valid = ValidEvent(
                        external_id,
                        f"m{n}",
                        event.type,
                        event.occurred_at,
                        event.amount,
                        event.properties,
                        digest,
                    )
                    accepted.append((member_id, valid))
        if event_rows:
            await session.execute(insert(Event), event_rows)
        await add_to_aggregates(session, program_id, accepted)
    return program_id, member_ids, segment_ids


async def _insert_id(session: AsyncSession, model: Any, **values: Any) -> int:
    result = await session.execute(insert(model).values(**values).returning(model.id))
    return int(result.scalar_one())


async def both_evaluators(
    db: Database,
    program_id: int,
    member_ids: Sequence[int],
    segment_ids: dict[str, int],
    node: Node,
    now: datetime,
    earned: EarnedEvent | None = None,
) -> tuple[set[int], set[int]]:
    """(ids for which Evaluation.holds, ids Compilation.members_where selects); `earned`: the event a
    promotion condition reads (`event.`)."""
    async with db.read() as session:
        facts = await load_facts(session, program_id, member_ids, Needs.of([node]), now)
        evaluation = Evaluation(now, event=earned)
        in_memory = {member_id for member_id, member in facts.items() if evaluation.holds(node, member)}
        dialect = session.get_bind().dialect.name
        compilation = Compilation(dialect, program_id, now, segment_ids, event=earned)
        selected = await session.execute(compilation.members_where(node))
        compiled = {cast(int, member_id) for member_id in selected.scalars()}  # Select[tuple[int]] rows
    return in_memory, compiled


def evaluate_both(
    harness: Harness, history: History, condition: Json, earned: EarnedEvent | None = None
) -> tuple[list[bool], list[bool]]:
    """Per member of `history` in order: (holds in memory, selected by SQL)."""
    node = parse_condition(condition, events=earned is not None)

    async def run() -> tuple[list[bool], list[bool]]:
        program_id, member_ids, segment_ids = await write_history(harness.db, history)
        in_memory, compiled = await both_evaluators(
            harness.db, program_id, member_ids, segment_ids, node, history.now, earned
        )
        return [m in in_memory for m in member_ids], [m in compiled for m in member_ids]

    return harness.run(run())


def holds(harness: Harness, history: History, condition: Json) -> list[bool]:
    """Per member: whether `condition` holds, after checking that both evaluators say so."""
    in_memory, compiled = evaluate_both(harness, history, condition)
    assert in_memory == compiled, (condition, in_memory, compiled)
    return in_memory


# ---------- the property ----------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=EXAMPLES)
@given(history=histories(), condition=CONDITIONS)
def test_evaluators_agree_on_generated_conditions_and_histories(
    harness: Harness, history: History, condition: Json
) -> None:
    in_memory, compiled = evaluate_both(harness, history, condition)

    event(
        "holds for " + ("no member" if not any(in_memory) else "every member" if all(in_memory) else "some")
    )
    assert in_memory == compiled, condition


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(history=histories(), condition=CONDITIONS)
def test_a_tree_reading_a_segment_agrees(harness: Harness, history: History, condition: Json) -> None:
    tree = {"any": [{"all": [{"segment": "base"}, condition]}, {"not": {"segment": "base"}}]}

    in_memory, compiled = evaluate_both(harness, history, tree)

    assert in_memory == compiled, tree


# ---------- promotion conditions: `event.` (docs/promotions.md) ----------

EVENT_PATHS = st.sampled_from(
    ["amount", "type", "weekday", "hour", "category", "qty", "missing", "device.os"]
)


@st.composite
def event_compares(draw: st.DrawFn) -> Json:
    op, value = comparison(draw, metric=False)
    return {"event": draw(EVENT_PATHS), "op": op, "value": value}


@st.composite
def earned_events(draw: st.DrawFn) -> EarnedEvent:
    properties = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "category": st.sampled_from(["coffee", "tea", 1, True, ""]),
                "qty": st.sampled_from([3, "3", 1.5, 0]),
                "amount": st.just("a property named amount: the built-in wins"),
                "device": st.sampled_from([{"os": "Android"}, {"os": 3}, "Android"]),
            },
        )
    )
    amount = draw(st.one_of(st.none(), st.sampled_from(["0", "5", "12.3456", "29.99", "30", "0.0001"])))
    at = draw(st.sampled_from(NOWS)) - timedelta(minutes=draw(st.integers(0, 7 * 24 * 60)))
    return EarnedEvent(
        draw(st.sampled_from(["purchase", "visit"])),
        at,
        None if amount is None else Decimal(amount),
        properties,
    )


EVENT_CONDITIONS = st.recursive(
    st.one_of(event_compares(), event_compares(), LEAVES),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=5,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=max(20, EXAMPLES // 3))
@given(history=histories(), condition=EVENT_CONDITIONS, earned=earned_events())
def test_evaluators_agree_on_conditions_reading_the_event(
    harness: Harness, history: History, condition: Json, earned: EarnedEvent
) -> None:
    in_memory, compiled = evaluate_both(harness, history, condition, earned)

    assert in_memory == compiled, (condition, earned)


def test_event_values_are_typed_and_local(harness: Harness) -> None:
    # given a purchase of 29.99 on a Saturday at 23:30 UTC, category coffee, qty "3"
    earned = EarnedEvent("purchase", datetime(2026, 3, 7, 23, 30, tzinfo=UTC), Decimal("29.99"), {"qty": "3"})
    history = History(NOW, (member(),))

    # then amount compares exactly, a string "3" is not the number 3, and weekday/hour are UTC's here
    assert holds_with(harness, history, {"event": "amount", "op": "gt", "value": 29.98}, earned) == [True]
    assert holds_with(harness, history, {"event": "amount", "op": "eq", "value": 29.99}, earned) == [True]
    assert holds_with(harness, history, {"event": "qty", "op": "eq", "value": 3}, earned) == [False]
    assert holds_with(harness, history, {"event": "weekday", "op": "eq", "value": 6}, earned) == [True]
    assert holds_with(harness, history, {"event": "hour", "op": "eq", "value": 23}, earned) == [True]
    assert holds_with(harness, history, {"event": "type", "op": "eq", "value": "purchase"}, earned) == [True]
    absent = {"not": {"event": "nothing", "op": "eq", "value": 1}}
    assert holds_with(harness, history, absent, earned) == [True]


def holds_with(harness: Harness, history: History, condition: Json, earned: EarnedEvent) -> list[bool]:
    in_memory, compiled = evaluate_both(harness, history, condition, earned)
    assert in_memory == compiled, (condition, in_memory, compiled)
    return in_memory


# ---------- explicit examples ----------

NOW = NOWS[0]


def member(*events: EventSpec, **fields: Any) -> MemberSpec:
    fields.setdefault("created_at", NOW - 100 * DAY)
    fields.setdefault("joined_at", NOW - 100 * DAY)
    return MemberSpec(events=events, **fields)


def purchase(at: datetime, amount: str | None = None, **properties: Any) -> EventSpec:
    return EventSpec("purchase", at, None if amount is None else Decimal(amount), properties)


def test_a_window_excludes_its_start_and_includes_the_next_microsecond(harness: Harness) -> None:
    history = History(
        NOW,
        (
            member(purchase(NOW - 30 * DAY)),
            member(purchase(NOW - 30 * DAY + US)),
            member(purchase(NOW)),
            member(purchase(NOW + US)),
        ),
    )
    count = {"metric": {"event": "purchase", "agg": "count", "window": "30d"}, "op": "gte", "value": 1}
    days = {"metric": {"event": "purchase", "agg": "distinct_days", "window": "30d"}, "op": "eq", "value": 1}

    assert holds(harness, history, count) == [False, True, True, False]
    assert holds(harness, history, days) == [False, True, True, False]


def test_a_streak_counts_up_to_yesterday_when_nothing_today(harness: Harness) -> None:
    midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    login = [EventSpec("login", midnight - k * DAY - US) for k in range(3)]  # the last µs of 3 past days
    history = History(
        NOW,
        (
            member(*login),
            member(*login, EventSpec("login", midnight)),
            member(*login[1:]),
            member(),
        ),
    )
    streak = {"metric": {"event": "login", "agg": "streak"}, "op": "eq", "value": 3}

    assert holds(harness, history, streak) == [True, False, False, False]
    assert holds(harness, history, {**streak, "value": 4}) == [False, True, False, False]
    assert holds(harness, history, {**streak, "value": 0}) == [False, False, True, True]


def test_days_since_last_is_absent_without_events(harness: Harness) -> None:
    history = History(NOW, (member(), member(purchase(NOW - 5 * DAY)), member(purchase(NOW - DAY))))
    at_least_3 = {"metric": {"event": "purchase", "agg": "days_since_last"}, "op": "gte", "value": 3}

    assert holds(harness, history, at_least_3) == [False, True, False]
    assert holds(harness, history, {"not": at_least_3}) == [True, False, True]
    assert holds(harness, history, {**at_least_3, "op": "exists", "value": False}) == [True, False, False]


def test_avg_skips_events_without_an_amount(harness: Harness) -> None:
    history = History(
        NOW,
        (
            member(purchase(NOW - DAY, "10"), purchase(NOW - DAY), purchase(NOW - 2 * DAY, "2.5")),
            member(purchase(NOW - DAY)),
            member(),
        ),
    )
    for window in ("all", "7d"):
        avg = {"metric": {"event": "purchase", "agg": "avg", "field": "amount", "window": window}}

        assert holds(harness, history, {**avg, "op": "eq", "value": 6.25}) == [True, False, False]
        assert holds(harness, history, {**avg, "op": "lt", "value": 100}) == [True, False, False]
        assert holds(harness, history, {"not": {**avg, "op": "lt", "value": 100}}) == [False, True, True]


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "between", "contains"])
def test_a_string_never_compares_with_a_number(harness: Harness, op: str) -> None:
    history = History(NOW, (member(attributes={"score": "5"}), member(attributes={"score": 5})))
    value: Any = {"in": [5], "not_in": [4], "between": [4, 6], "ne": 4, "lt": 6, "gt": 4}.get(op, 5)
    condition = {"attr": "score", "op": op, "value": value}

    assert holds(harness, history, condition) == [False, op != "contains"]
    assert holds(harness, history, {"not": condition}) == [True, op == "contains"]


def test_exists_false_holds_for_missing_and_null_attributes(harness: Harness) -> None:
    history = History(
        NOW,
        (
            member(attributes={}),
            member(attributes={"city": None}),
            member(attributes={"city": "Istanbul"}),
            member(attributes={"city": False}),
            member(attributes={"city": []}),
        ),
    )
    absent = {"attr": "city", "op": "exists", "value": False}

    assert holds(harness, history, absent) == [True, True, False, False, False]
    assert holds(harness, history, {"attr": "city", "op": "exists", "value": True}) == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert holds(harness, history, {"not": absent}) == [False, False, True, True, True]
    assert holds(harness, history, {"not": {"attr": "city", "op": "ne", "value": 0}}) == [True] * 5
    assert holds(harness, history, {"not": {"attr": "city", "op": "eq", "value": False}}) == [True] * 3 + [
        False,
        True,
    ]


def test_true_is_not_the_string_true(harness: Harness) -> None:
    history = History(NOW, (member(attributes={"city": "true"}), member(attributes={"city": True})))

    assert holds(harness, history, {"attr": "city", "op": "eq", "value": True}) == [False, True]
    assert holds(harness, history, {"attr": "city", "op": "in", "value": [True]}) == [False, True]
    assert holds(harness, history, {"attr": "city", "op": "eq", "value": "true"}) == [True, False]


def test_held_and_blocked_events_do_not_count(harness: Harness) -> None:
    held = EventSpec("purchase", NOW - DAY, Decimal(5), status=EventStatus.HELD_FOR_REVIEW)
    blocked = EventSpec("purchase", NOW - DAY, Decimal(5), status=EventStatus.BLOCKED)
    history = History(NOW, (member(held, blocked), member(purchase(NOW - DAY, "5"), held)))

    for window in ("all", "7d"):
        count = {"metric": {"event": "purchase", "agg": "count", "window": window}, "op": "eq", "value": 1}
        assert holds(harness, history, count) == [False, True]


def test_a_where_on_true_is_not_a_where_on_1(harness: Harness) -> None:
    history = History(NOW, (member(purchase(NOW - DAY, qty=True)), member(purchase(NOW - DAY, qty=1))))

    def counted(qty: object) -> Json:
        return {
            "metric": {"event": "purchase", "agg": "count", "where": {"qty": qty}},
            "op": "gte",
            "value": 1,
        }

    assert holds(harness, history, {"all": [counted(True), {"not": counted(1)}]}) == [True, False]
    assert holds(harness, history, {"all": [counted(1), {"not": counted(True)}]}) == [False, True]
