"""Condition language v2, the metric operands (issue 17): `distinct`, `top`, `where` with `!=` / `in` /
`not in`, ledger operands (`points_earned`, `points_redeemed`, `points_expiring`) and arithmetic.

Both evaluators agree (in memory and compiled SQL, on the backend the run uses) on generated
conditions over generated histories with ledger entries and expiry lots; explicit examples pin the
prescribed outcomes (ties in `top`, mixed JSON types, division by zero, a missing property under
`!=`); rules round-trip; the parsers refuse what the spec refuses, naming the column.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from domain.errors import InvalidInput
from domain.models import LedgerEntry, PointsLot
from domain.segments.conditions import (
    Node,
    condition_to_json,
    parse_condition,
)
from domain.segments.rules import normalise, parse_rule, render_rule
from domain.settings import Settings
from tests.support.examples import examples
from tests.support.metrics_v2 import small_v2_leaves, v2_metric_leaves
from tests.support.strategies import conditions
from tests.support.vocabulary import DAY, EVENT_TYPES, NOWS, NUMBERS, US, Json
from tests.test_evaluator_equivalence import (
    EventSpec,
    Harness,
    History,
    MemberSpec,
    both_evaluators,
    histories,
    open_harness,
    write_history,
)

_keys = itertools.count(1)
V2_EXAMPLES = examples(int(os.environ.get("EQUIVALENCE_EXAMPLES", "120")))
NOW = NOWS[0]


@pytest.fixture(scope="module")
def harness(settings: Settings) -> Iterator[Harness]:
    with open_harness(settings.database_url) as opened:
        yield opened


# ---------- ledgers ----------


@dataclass(frozen=True)
class EntrySpec:
    """One ledger entry; `reverses` is the index of an earlier entry of the member it reverses."""

    kind: str
    points: int
    created_at: datetime
    status: str = "POSTED"
    reverses: int | None = None
    lot_expires_at: datetime | None = None
    lot_remaining: int | None = None


def ledger_times(now: datetime) -> st.SearchStrategy[datetime]:
    edges = [now, now - US, now + US, now - 30 * DAY, now - 30 * DAY + US, now - DAY, now - 7 * DAY]
    spread = st.integers(-2 * 86_400, 40 * 86_400).map(lambda s: now - s * (DAY / 86_400))
    return st.one_of(st.sampled_from(edges), spread)


@st.composite
def ledgers_of(draw: st.DrawFn, now: datetime) -> tuple[EntrySpec, ...]:
    found: list[EntrySpec] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["ACCRUAL", "ACCRUAL", "ADJUSTMENT", "REDEMPTION", "EXPIRY", "REVERSAL"]))
        at = draw(ledger_times(now))
        points = draw(st.integers(1, 50))
        if kind == "REVERSAL":
            targets = [i for i, e in enumerate(found) if e.kind != "REVERSAL" and e.status == "POSTED"]
            reversed_ = {e.reverses for e in found}
            targets = [i for i in targets if i not in reversed_]
            if not targets:
                continue
            target = draw(st.sampled_from(targets))
            found.append(EntrySpec(kind, -found[target].points, at, reverses=target))
            continue
        if kind in ("REDEMPTION", "EXPIRY") or (kind == "ADJUSTMENT" and draw(st.booleans())):
            points = -points
        status = draw(st.sampled_from(["POSTED"] * 5 + ["PENDING_REVIEW"])) if kind == "ACCRUAL" else "POSTED"
        lot_at = lot_left = None
        if points > 0 and status == "POSTED" and draw(st.booleans()):
            lot_at = draw(
                st.one_of(ledger_times(now), st.sampled_from([now + 30 * DAY, now + 30 * DAY + US]))
            )
            lot_left = draw(st.integers(0, points))
        found.append(EntrySpec(kind, points, at, status, None, lot_at, lot_left))
    return tuple(found)


async def write_ledgers(
    harness: Harness, program_id: int, member_ids: Sequence[int], ledgers: Sequence[tuple[EntrySpec, ...]]
) -> None:
    async with harness.db.unit_of_work() as uow:
        session = uow.session
        for member_id, entries in zip(member_ids, ledgers, strict=False):
            ids: list[int] = []
            for entry in entries:
                key = f"t:{next(_keys)}"
                row = await session.execute(
                    insert(LedgerEntry)
                    .values(
                        program_id=program_id,
                        member_id=member_id,
                        points=entry.points,
                        status=entry.status,
                        kind=entry.kind,
                        reason="test",
                        event_id=None,
                        idempotency_key=key,
                        request_hash="0" * 64,
                        reverses_entry_id=None if entry.reverses is None else ids[entry.reverses],
                        created_at=entry.created_at,
                    )
                    .returning(LedgerEntry.id)
                )
                ids.append(int(row.scalar_one()))
                if entry.lot_expires_at is not None:
                    await session.execute(
                        insert(PointsLot).values(
                            program_id=program_id,
                            member_id=member_id,
                            entry_id=ids[-1],
                            points=entry.points,
                            remaining=entry.lot_remaining,
                            earned_at=entry.created_at,
                            expires_at=entry.lot_expires_at,
                        )
                    )


def evaluate_both(
    harness: Harness, history: History, ledgers: Sequence[tuple[EntrySpec, ...]], condition: Json
) -> tuple[list[bool], list[bool]]:
    node = parse_condition(condition)

    async def run() -> tuple[list[bool], list[bool]]:
        program_id, member_ids, segment_ids = await write_history(harness.db, history)
        await write_ledgers(harness, program_id, member_ids, ledgers)
        try:
            in_memory, compiled = await both_evaluators(
                harness.db, program_id, member_ids, segment_ids, node, history.now
            )
        finally:  # no balance covers the written lots: the expiry sweep of a later test must not find them
            async with harness.db.unit_of_work() as uow:
                await uow.session.execute(delete(PointsLot).where(PointsLot.program_id == program_id))
        return [m in in_memory for m in member_ids], [m in compiled for m in member_ids]

    return harness.run(run())


def holds(
    harness: Harness, history: History, condition: Json, ledgers: Sequence[tuple[EntrySpec, ...]] = ()
) -> list[bool]:
    in_memory, compiled = evaluate_both(harness, history, ledgers, condition)
    assert in_memory == compiled, (condition, in_memory, compiled)
    return in_memory


# ---------- the equivalence property ----------

V2_LEAVES = small_v2_leaves(EVENT_TYPES, NUMBERS)
V2_CONDITIONS = conditions(max_leaves=4, leaf=V2_LEAVES).map(condition_to_json)


@st.composite
def histories_with_ledgers(draw: st.DrawFn) -> tuple[History, tuple[tuple[EntrySpec, ...], ...]]:
    history = draw(histories())
    return history, tuple(draw(ledgers_of(history.now)) for _ in history.members)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=V2_EXAMPLES)
@given(drawn=histories_with_ledgers(), condition=V2_CONDITIONS)
def test_evaluators_agree_on_v2_metric_conditions(
    harness: Harness, drawn: tuple[History, tuple[tuple[EntrySpec, ...], ...]], condition: Json
) -> None:
    history, ledgers = drawn
    in_memory, compiled = evaluate_both(harness, history, ledgers, condition)

    event("holds for " + ("none" if not any(in_memory) else "all" if all(in_memory) else "some"))
    assert in_memory == compiled, condition


# ---------- round trips ----------


@settings(max_examples=300)
@given(tree=conditions(max_leaves=6, leaf=v2_metric_leaves()))
def test_v2_trees_round_trip_through_json_and_rules(tree: Node) -> None:
    assert parse_condition(condition_to_json(tree)) == tree
    assert parse_rule(render_rule(tree)) == normalise(tree)


@pytest.mark.parametrize(
    "rule",
    [
        'count(purchase, 90d where category = "coffee") > count(purchase, 90d where category = "tea")',
        "count(message_opened, 90d) / count(message_sent, 90d) >= 0.2",
        "points_redeemed(30d) > 0",
        'top(purchase.store, 90d) = "S1"',
        "points_expiring(30d) > 0",
        'count(message_failed, 30d where template = "spring") + '
        'count(message_suppressed, 30d where template = "spring") >= 1',
        'count(purchase, 90d where category in ["coffee", "tea"], store != "S9") >= 1',
        "distinct(purchase.store, 30d) >= 3",
        'top(purchase.store) not in ["S1", 2, true]',
        "points_earned(30d) - points_redeemed(30d) * 2 > (count(visit) + 1) / 3",
        "5 < count(visit, 7d) - -3",
        "days_since_last(purchase) - days_since_first(login) * 2 >= streak(login)",
        "points_earned(all) >= 100",
        'count(purchase where store not in ["S1"]) = 0',
    ],
)
def test_spec_and_v2_rules_are_normal(rule: str) -> None:
    tree = parse_rule(rule)

    assert render_rule(tree) == rule
    assert parse_condition(condition_to_json(tree)) == tree


def test_a_metric_compared_with_a_number_is_the_version_1_tree() -> None:
    expression = {"left": {"event": "visit", "agg": "count"}, "op": "gt", "right": {"number": 2}}
    ledger = {"left": {"ledger": "earned", "window": "30d"}, "op": "gte", "right": {"number": 1}}

    assert condition_to_json(parse_condition(expression)) == {
        "metric": {"event": "visit", "agg": "count"},
        "op": "gt",
        "value": 2,
    }
    assert condition_to_json(parse_condition(ledger)) == {
        "ledger": "earned",
        "window": "30d",
        "op": "gte",
        "value": 1,
    }


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("top(purchase.store) > 1", "rule: column 23: top compares only with eq, ne, in or not_in"),
        (
            "top(purchase.store) + 1 > 1",
            "rule: column 1: top(...) cannot stand in arithmetic or be compared with an expression "
            "(top compares with =, !=, in or not in and a literal)",
        ),
        ("exists(top(purchase.store))", "rule: column 8: top compares only with =, !=, in or not in"),
        (
            "distinct(purchase) > 1",
            "rule: column 10: distinct needs a property: purchase.PROPERTY (not amount)",
        ),
        ("top(purchase.amount) = 1", "rule: column 5: top needs a property: purchase.PROPERTY (not amount)"),
        ("1 > 2", "rule: column 5: one side of a comparison must hold an aggregate or a ledger operand"),
        (
            "count(visit) / > 1",
            "rule: column 16: expected an aggregate, a ledger operand such as points_earned(30d), "
            "a number or '(', found '>'",
        ),
        (
            "count(visit) + 1 in [1]",
            "rule: column 18: 'in' does not compare expressions; use =, !=, >, >=, < or <=",
        ),
        (
            "count(visit) < top(visit.store)",
            "rule: column 16: top(...) cannot stand in arithmetic or be compared with an expression "
            "(top compares with =, !=, in or not in and a literal)",
        ),
        (
            "count(visit where a like 1) > 1",
            "rule: column 21: expected '=', '!=', 'in' or 'not in' after the property name, found 'like'",
        ),
        ("count(visit where a in 1) > 1", "rule: column 24: expected a [list] after 'in', found '1'"),
        (
            "points_earned(30x) > 1",
            'rule: column 15: malformed window \'30x\'; expected "<n>d", "<n>h" or "all"',
        ),
    ],
)
def test_malformed_v2_rules_name_the_column(rule: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(rule)

    assert caught.value.message == message


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"metric": {"event": "a", "agg": "top", "field": "s"}, "op": "gt", "value": 1},
            "condition $.value: top compares only with eq, ne, in or not_in",
        ),
        (
            {"left": {"number": 1}, "op": "lt", "right": {"number": 2}},
            "condition $: one side of a comparison must hold an aggregate or a ledger operand",
        ),
        (
            {"left": {"event": "a", "agg": "top", "field": "s"}, "op": "lt", "right": {"number": 1}},
            "condition $.left.agg: top cannot stand in arithmetic",
        ),
        (
            {"left": {"div": [{"number": 1}]}, "op": "lt", "right": {"event": "b", "agg": "count"}},
            "condition $.left.div: expected a list of two expressions",
        ),
        (
            {"metric": {"event": "a", "agg": "count", "where": {"s": {"like": 1}}}, "op": "gt", "value": 1},
            'condition $.metric.where.s: expected a value, {"ne": V}, {"in": [..]} or {"not_in": [..]}',
        ),
        (
            {"ledger": "spent", "op": "gt", "value": 1},
            "condition $.ledger: expected earned, redeemed or expiring",
        ),
    ],
)
def test_malformed_v2_trees_name_the_path(tree: Json, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_condition(tree)

    assert caught.value.message == message


# ---------- explicit examples ----------


def member(*events: EventSpec, **fields: Any) -> MemberSpec:
    fields.setdefault("created_at", NOW - 100 * DAY)
    fields.setdefault("joined_at", NOW - 100 * DAY)
    return MemberSpec(events=events, **fields)


def purchase(at: datetime, **properties: Any) -> EventSpec:
    return EventSpec("purchase", at, Decimal(1), properties)


def top(value: Any, op: str = "eq") -> Json:
    return {
        "metric": {"event": "purchase", "agg": "top", "field": "store", "window": "30d"},
        "op": op,
        "value": value,
    }


def test_top_breaks_ties_by_the_smallest_text_and_keeps_json_types_apart(harness: Harness) -> None:
    history = History(
        NOW,
        (
            member(purchase(NOW - DAY, store="S2"), purchase(NOW - DAY, store="S1")),  # tie: S1
            member(purchase(NOW - DAY, store=10), purchase(NOW - DAY, store=9)),  # "10" < "9"
            member(purchase(NOW - DAY, store=1), purchase(NOW - DAY, store="1"), purchase(NOW, store=1.0)),
            member(purchase(NOW - DAY, store=True), purchase(NOW - DAY, store="true"), purchase(NOW - DAY)),
            member(purchase(NOW - 31 * DAY, store="S1")),  # outside the window: absent
            member(purchase(NOW - DAY, store=None), purchase(NOW - DAY, store=["S1"])),  # no scalar: absent
        ),
    )

    assert holds(harness, history, top("S1")) == [True, False, False, False, False, False]
    assert holds(harness, history, top(10)) == [False, True, False, False, False, False]
    assert holds(harness, history, top(1)) == [False, False, True, False, False, False]
    assert holds(harness, history, top(True)) == [False, False, False, True, False, False]
    assert holds(harness, history, top("S1", "ne")) == [False, False, False, False, False, False]
    assert holds(harness, history, top("S9", "ne")) == [True, False, False, False, False, False]
    assert holds(harness, history, top(["S1", 10], "in")) == [True, True, False, False, False, False]
    assert holds(harness, history, {"not": top(["S1"], "in")}) == [False, True, True, True, True, True]


def test_distinct_counts_values_of_different_json_types_apart(harness: Harness) -> None:
    history = History(
        NOW,
        (
            member(
                purchase(NOW - DAY, store=1), purchase(NOW - DAY, store="1"), purchase(NOW - DAY, store=1.0)
            ),
            member(
                purchase(NOW - DAY, store=True), purchase(NOW - DAY, store=1), purchase(NOW - DAY, store=None)
            ),
            member(),
        ),
    )
    distinct = {"metric": {"event": "purchase", "agg": "distinct", "field": "store"}, "op": "eq"}

    assert holds(harness, history, {**distinct, "value": 2}) == [True, True, False]
    assert holds(harness, history, {**distinct, "value": 0}) == [False, False, True]


def test_a_missing_property_fails_every_where_test(harness: Harness) -> None:
    history = History(
        NOW,
        (
            member(purchase(NOW - DAY)),  # no store
            member(purchase(NOW - DAY, store="S9")),
            member(purchase(NOW - DAY, store="S1")),
            member(purchase(NOW - DAY, store=9)),  # another JSON type: fails != "S9" too
        ),
    )

    def counted(test: Any) -> Json:
        return {
            "metric": {"event": "purchase", "agg": "count", "where": {"store": test}},
            "op": "gte",
            "value": 1,
        }

    assert holds(harness, history, counted({"ne": "S9"})) == [False, False, True, False]
    assert holds(harness, history, counted({"not_in": ["S9", "S8"]})) == [False, False, True, False]
    assert holds(harness, history, counted({"in": ["S9", 9]})) == [False, True, False, True]
    assert holds(harness, history, counted({"not_in": []})) == [False, True, True, True]


def test_division_by_zero_and_absent_operands_are_false_under_every_operator(harness: Harness) -> None:
    opened = EventSpec("message_opened", NOW - DAY)
    sent = EventSpec("message_sent", NOW - DAY)
    history = History(
        NOW,
        (
            member(opened, sent, sent, sent, sent, sent),  # 1/5
            member(opened, sent, sent, sent, sent, sent, sent),  # 1/6
            member(opened),  # 1/0: absent
            member(),  # 0/0: absent
        ),
    )
    ratio = {
        "div": [
            {"event": "message_opened", "agg": "count", "window": "90d"},
            {"event": "message_sent", "agg": "count", "window": "90d"},
        ]
    }
    for op, expected in {
        "gte": [True, False, False, False],
        "lt": [False, True, False, False],
        "eq": [True, False, False, False],
        "ne": [False, True, False, False],
    }.items():
        condition = {"left": ratio, "op": op, "right": {"number": 0.2}}
        assert holds(harness, history, condition) == expected, op
        assert holds(harness, history, {"not": condition}) == [not e for e in expected], op
    avg = {"event": "purchase", "agg": "avg", "field": "amount"}  # absent without purchases
    plus = {"left": {"add": [avg, {"number": 1}]}, "op": "gte", "right": {"number": 0}}
    assert holds(harness, history, plus) == [False] * 4


def test_ledger_operands_count_what_the_spec_says(harness: Harness) -> None:
    history = History(NOW, (member(), member(), member()))
    ledgers = (
        (
            EntrySpec("ACCRUAL", 40, NOW - DAY),
            EntrySpec("ACCRUAL", 10, NOW - 2 * DAY),
            EntrySpec("REVERSAL", -10, NOW - DAY, reverses=1),  # less its reversal
            EntrySpec("EXPIRY", -5, NOW - DAY),  # expiry never lowers earned
            EntrySpec("ACCRUAL", 7, NOW - DAY, status="PENDING_REVIEW"),  # held: not counted
            EntrySpec("ACCRUAL", 3, NOW - 31 * DAY),  # outside 30d
        ),
        (
            EntrySpec("REDEMPTION", -25, NOW - 3 * DAY),
            EntrySpec("REDEMPTION", -5, NOW - 40 * DAY),
            EntrySpec("REDEMPTION", -8, NOW - 2 * DAY),
            EntrySpec("REVERSAL", 8, NOW - DAY, reverses=2),  # given back
        ),
        (
            EntrySpec("ACCRUAL", 30, NOW - DAY, lot_expires_at=NOW + 10 * DAY, lot_remaining=20),
            EntrySpec("ACCRUAL", 30, NOW - DAY, lot_expires_at=NOW + 30 * DAY + US, lot_remaining=30),
            EntrySpec("ACCRUAL", 30, NOW - DAY, lot_expires_at=NOW, lot_remaining=30),  # due: not unexpired
        ),
    )

    def ledger(kind: str, op: str, value: int, window: str = "30d") -> Json:
        return {"ledger": kind, "window": window, "op": op, "value": value}

    assert holds(harness, history, ledger("earned", "eq", 40), ledgers) == [True, False, False]
    assert holds(harness, history, ledger("earned", "eq", 43, "all"), ledgers) == [True, False, False]
    assert holds(harness, history, ledger("redeemed", "eq", 25), ledgers) == [False, True, False]
    assert holds(harness, history, ledger("redeemed", "eq", 30, "all"), ledgers) == [False, True, False]
    assert holds(harness, history, ledger("expiring", "eq", 20), ledgers) == [False, False, True]
    assert holds(harness, history, ledger("expiring", "eq", 50, "all"), ledgers) == [False, False, True]
    assert holds(harness, history, ledger("expiring", "eq", 0), ledgers) == [True, True, False]
