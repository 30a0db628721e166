"""Organization trees in the condition language (issue 17): `in_organization` and `org.AGG` roll-ups.

The two evaluators agree on generated organization trees (a forest over four
organizations, members placed anywhere in it or nowhere), and explicit examples
pin the meaning: a roll-up counts the events of the member's organization and
of every one below it, never those above or beside; it is absent without an
organization; `{"organization": ID}` (version 1) still means that organization only.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from domain.models import Member, Organization
from domain.segments.conditions import condition_to_json, parse_condition
from domain.segments.evaluate import Evaluation, EventFact
from domain.segments.facts import Needs, load_facts
from domain.segments.horizon import next_change
from domain.segments.lifecycle import LifecycleThresholds
from tests.support.histories import TIMED_LEAVES, TIMED_METRICS, Case, cases, trees
from tests.support.histories import events as history_events
from tests.support.vocabulary import CONDITIONS, DAY, US, Json, metric_compares
from tests.test_evaluator_equivalence import (
    EXAMPLES,
    NOW,
    EventSpec,
    Harness,
    History,
    MemberSpec,
    both_evaluators,
    harness,
    histories,
    member,
    write_history,
)

__all__ = ["harness"]  # the module-scoped fixture, shared with the version 1 properties

TREE = ("org0", "org1", "org2", "org3")
#: Each organization's parent (None: at the top), and each member's organization, by position.
Placement = tuple[dict[str, str | None], tuple[str | None, ...]]


@st.composite
def forests(draw: st.DrawFn, members: int) -> Placement:
    """A forest over TREE (parents come earlier in a drawn order: no cycle) and a place per member."""
    order = draw(st.permutations(TREE))
    parents: dict[str, str | None] = {}
    for i, org in enumerate(order):
        parents[org] = draw(st.sampled_from([None, *order[:i]]))
    places = draw(st.lists(st.sampled_from([None, *TREE]), min_size=members, max_size=members))
    return parents, tuple(places)


@st.composite
def org_leaves(draw: st.DrawFn) -> Json:
    """An `org.AGG` comparison or an `in_organization` (descendants) over the tree."""
    if draw(st.booleans()):
        compared = draw(metric_compares())
        return {**compared, "metric": {**compared["metric"], "scope": "organization"}}
    return {"organization": draw(st.sampled_from([*TREE, "org9"])), "descendants": True}


ORG_CONDITIONS = st.recursive(
    st.one_of(org_leaves(), org_leaves(), CONDITIONS),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=5,
)


async def place(harness: Harness, program_id: int, member_ids: list[int], placement: Placement) -> None:
    """Add the tree's organizations the history lacks, set the parents, move the members."""
    parents, places = placement
    async with harness.db.unit_of_work() as uow:
        session = uow.session
        rows = await session.execute(
            select(Organization.external_id, Organization.id).where(Organization.program_id == program_id)
        )
        ids: dict[str, int] = {external_id: org_id for external_id, org_id in rows}  # noqa: C416
        for org in TREE:
            if org not in ids:
                row = Organization(
                    program_id=program_id, external_id=org, name=org, attributes={}, created_at=NOW
                )
                session.add(row)
                await session.flush()
                ids[org] = row.id
        for org, parent in parents.items():
            await session.execute(
                update(Organization)
                .where(Organization.id == ids[org])
                .values(parent_id=None if parent is None else ids[parent])
            )
        for member_id, placed_in in zip(member_ids, places, strict=True):
            await session.execute(
                update(Member).where(Member.id == member_id).values(organization_id=ids.get(placed_in or ""))
            )


def evaluate_in_tree(
    harness: Harness, history: History, placement: Placement, condition: Json
) -> tuple[list[bool], list[bool]]:
    node = parse_condition(condition)

    async def run() -> tuple[list[bool], list[bool]]:
        program_id, member_ids, segment_ids = await write_history(harness.db, history)
        await place(harness, program_id, member_ids, placement)
        in_memory, compiled = await both_evaluators(
            harness.db, program_id, member_ids, segment_ids, node, history.now
        )
        return [m in in_memory for m in member_ids], [m in compiled for m in member_ids]

    return harness.run(run())


@st.composite
def placed_histories(draw: st.DrawFn) -> tuple[History, Placement]:
    history = draw(histories())
    return history, draw(forests(len(history.members)))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=EXAMPLES)
@given(placed=placed_histories(), condition=ORG_CONDITIONS)
def test_evaluators_agree_on_organization_trees(
    harness: Harness, placed: tuple[History, Placement], condition: Json
) -> None:
    history, placement = placed
    in_memory, compiled = evaluate_in_tree(harness, history, placement, condition)
    assert in_memory == compiled, (condition, placement)


# ---------- explicit examples ----------


def sale(at: Any, amount: str) -> EventSpec:
    return EventSpec("sale", at, Decimal(amount))


def holds_in_tree(
    harness: Harness, members: list[MemberSpec], placement: Placement, condition: Json
) -> list[bool]:
    in_memory, compiled = evaluate_in_tree(harness, History(NOW, tuple(members)), placement, condition)
    assert in_memory == compiled, (condition, in_memory, compiled)
    return in_memory


#: group (org0) above dealers org1 and org2; org3 below org1 (a branch); members: one per organization
GROUP: dict[str, str | None] = {"org0": None, "org1": "org0", "org2": "org0", "org3": "org1"}


def test_a_roll_up_counts_its_organization_and_every_one_below_only(harness: Harness) -> None:
    members = [
        member(sale(NOW - DAY, "600000"), kind="DEALER"),  # org0, the group
        member(sale(NOW - DAY, "300000"), kind="DEALER"),  # org1
        member(sale(NOW - DAY, "200000"), kind="DEALER"),  # org2
        member(sale(NOW - 100 * DAY, "900000"), sale(NOW - 2 * DAY, "1"), kind="DEALER"),  # org3, old sale
        member(sale(NOW - DAY, "5000000"), kind="DEALER"),  # no organization
    ]
    placement = (GROUP, ("org0", "org1", "org2", "org3", None))
    rule = parse_condition(
        {
            "all": [
                {"kind": "DEALER"},
                {
                    "metric": {
                        "event": "sale",
                        "agg": "sum",
                        "field": "amount",
                        "window": "90d",
                        "scope": "organization",
                    },
                    "op": "gt",
                    "value": 1000000,
                },
            ]
        }
    )
    assert holds_in_tree(harness, members, placement, condition_to_json(rule)) == [
        True,
        False,
        False,
        False,
        False,
    ]
    count = {"metric": {"event": "sale", "agg": "count", "scope": "organization"}, "op": "gte", "value": 0}
    # absent without an organization, even where 0 would hold
    assert holds_in_tree(harness, members, placement, count) == [True, True, True, True, False]
    exact = {"metric": {"event": "sale", "agg": "count", "scope": "organization"}, "op": "eq", "value": 3}
    # org1: its own sale and org3's two; org0: all five but the unplaced member's
    assert holds_in_tree(harness, members, placement, exact) == [False, True, False, False, False]


def test_in_organization_means_the_organization_or_one_below_and_v1_stays_exact(harness: Harness) -> None:
    members = [member() for _ in range(5)]
    placement = (GROUP, ("org0", "org1", "org2", "org3", None))
    below_org1 = {"organization": "org1", "descendants": True}
    assert holds_in_tree(harness, members, placement, below_org1) == [False, True, False, True, False]
    assert holds_in_tree(harness, members, placement, {"organization": "org1"}) == [
        False,
        True,
        False,
        False,
        False,
    ]
    assert holds_in_tree(harness, members, placement, {"not": below_org1}) == [True, False, True, False, True]


def test_a_roll_up_window_flips_when_the_tree_s_event_leaves_it(harness: Harness) -> None:
    members = [member(), member(sale(NOW - 89 * DAY, "10"))]
    placement = (GROUP, ("org0", "org1"))
    condition = {
        "metric": {"event": "sale", "agg": "count", "window": "90d", "scope": "organization"},
        "op": "gte",
        "value": 1,
    }
    node = parse_condition(condition)

    async def run() -> list[Any]:
        program_id, member_ids, _ = await write_history(harness.db, History(NOW, tuple(members)))
        await place(harness, program_id, member_ids, placement)
        async with harness.db.read() as session:
            facts = await load_facts(session, program_id, member_ids, Needs.of([node]), NOW)
        return [next_change(node, facts[m], NOW, LifecycleThresholds()) for m in member_ids]

    leaves = NOW - 89 * DAY + 90 * DAY
    assert harness.run(run()) == [leaves, leaves]


# ---------- time flips of roll-ups (pure) ----------


def org_case(case: Case, draw_other: list[tuple[str, EventFact]]) -> Case:
    """The case's member in an organization whose tree holds its own events and another member's."""
    merged: dict[str, list[EventFact]] = {t: list(found) for t, found in case.member.events.items()}
    for event_type, fact in draw_other:
        merged.setdefault(event_type, []).append(fact)
    member = replace(case.member, organization="org1", organization_events=merged)
    return replace(case, member=member)


def trimmed(case: Case, condition: Any) -> Any:
    """The member as `load_facts` reads it: the tree's events only as far back as the roll-ups reach."""
    needs = Needs.of([condition])
    kept: dict[str, list[EventFact]] = {}
    for event_type, reach in needs.org_lookback.items():
        low = None if reach is None else case.now - timedelta(seconds=reach)
        found = case.member.organization_events.get(event_type, ())
        kept[event_type] = [e for e in found if low is None or e.occurred_at > low]
    return replace(case.member, organization_events=kept)


def _scoped(compared: Json) -> Json:
    return {**compared, "metric": {**compared["metric"], "scope": "organization"}}


ORG_TIMED = TIMED_METRICS.map(_scoped)


#: A property in Python alone: every example on either run (EXAMPLES is the SQL equivalence's, which
#: tests/support/examples.py halves on the SQLite run).
ROLL_UP_EXAMPLES = int(os.environ.get("EQUIVALENCE_EXAMPLES", "150"))


@st.composite
def org_cases(draw: st.DrawFn) -> Case:
    case = draw(cases())
    others = draw(st.lists(history_events(case.now), max_size=6))
    return org_case(case, others)


@settings(max_examples=ROLL_UP_EXAMPLES)
@given(
    case=org_cases(),
    condition=trees(st.one_of(ORG_TIMED.map(parse_condition), TIMED_LEAVES)),
    fractions=st.lists(st.floats(0, 1), min_size=1, max_size=6),
)
def test_a_roll_up_is_constant_until_its_next_change_and_differs_there(
    case: Case, condition: Any, fractions: list[float]
) -> None:
    change = next_change(condition, trimmed(case, condition), case.now, case.lifecycle)
    before = Evaluation(case.now, case.lifecycle).holds(condition, case.member)
    event("flips" if change else "never flips")
    end = change if change is not None else case.now + 120 * DAY
    times = [
        e.occurred_at + d
        for found in case.member.organization_events.values()
        for e in found
        for d in (-US, US * 0)
    ]
    probes = [min(case.now + (end - case.now) * f, end - US) for f in fractions] + times + [end - US]
    between = [t for t in probes if case.now < t < end]
    assert [Evaluation(t, case.lifecycle).holds(condition, case.member) for t in between] == [before] * len(
        between
    ), condition
    if change is not None:
        assert Evaluation(change, case.lifecycle).holds(condition, case.member) != before, condition
