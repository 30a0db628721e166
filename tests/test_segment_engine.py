"""The incremental engine agrees with the batch one, and the dependency index picks the right segments."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from decimal import Decimal

import pytest

from api.runtime import Services
from domain.errors import InvalidInput
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.segments.index import Definition, SegmentIndex, dependency_order
from domain.segments.rules import parse_rule
from domain.segments.service import SegmentDraft
from tests.support.graphql import new_program

RULES = {
    "visitors": ("count(visit, 7d) >= 3", "regular"),
    "spenders": ("sum(purchase.amount) > 100 and avg(purchase.amount, 30d) >= 20", None),
    "streakers": ("streak(login) >= 2", None),
    "coffee": ('count(purchase, 30d where category = "coffee") >= 2', None),
    "rich": ("pointsBalance >= 150", "rich"),
    "berlin": ('city = "Berlin" and not has_tag("rich")', None),
    "regular_spenders": ('in_segment("spenders") and has_tag("regular")', None),
    "lapsed": ("days_since_last(purchase) >= 3 or not exists(city)", None),
}


@pytest.mark.parametrize("seed", range(4))
async def test_incremental_membership_equals_a_full_recompute(services: Services, seed: int) -> None:
    # given a program with segments of every shape
    program = await new_program(services)
    rng = random.Random(seed)
    for key, (rule, tag) in RULES.items():
        await services.segments.create(
            program.id, SegmentDraft(key, key, "DYNAMIC", rule=rule, applies_tag=tag), actor="test"
        )
    members = [f"m{i}" for i in range(12)]
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in members])
    base = services.clock.now().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    for round_ in range(4):
        # when events, upserts and redemptions arrive in random batches
        await services.members.upsert_members(
            program.id,
            [
                MemberUpsert(m, attributes={"city": rng.choice(["Berlin", "Izmir", None])})
                for m in rng.sample(members, 5)
            ],
        )
        drafts = [
            EventDraft(
                f"e{seed}-{round_}-{i}",
                rng.choice(members),
                kind,
                base - timedelta(hours=rng.randint(0, 24 * 12)),
                Decimal(rng.randint(1, 6000)) / 100 if kind == "purchase" else None,
                {"category": rng.choice(["coffee", "tea"])},
            )
            for i, kind in enumerate(rng.choices(["visit", "purchase", "login"], k=40))
        ]
        outcomes = await services.events.record_events(program.id, drafts)
        assert all(o.status == "ACCEPTED" for o in outcomes), outcomes
        for m in rng.sample(members, 3):
            row = await services.members.get(program.id, m)
            assert row is not None
            if row.points_balance >= 50:
                await services.ledger.redeem(program.id, m, 50, "coffee", f"r{seed}-{round_}-{m}")

        # then recomputing everything from scratch changes nothing
        async with services.db.unit_of_work() as uow:
            results = await services.segments.engine.recompute(
                uow.session, program.id, None, services.clock.now()
            )
        drift = {key: r for key, r in results.items() if r.entered or r.left}
        assert drift == {}, f"round {round_}: the incremental engine missed {drift}"


def _definition(key: str, rule: str, tag: str | None = None, kind: str = "DYNAMIC") -> Definition:
    return Definition.of(len(key), key, kind, parse_rule(rule), tag)


def test_the_index_closes_over_segment_and_tag_references() -> None:
    index = SegmentIndex.build(
        [
            _definition("c", 'in_segment("b")'),
            _definition("b", 'has_tag("hot")'),
            _definition("a", "count(visit, 7d) >= 3", tag="hot"),
            _definition("d", 'city = "Berlin"'),
            _definition("e", "pointsBalance > 10"),
            _definition("s", "count(visit) > 1", kind="COMPUTED"),
        ]
    )
    assert [d.key for d in index.ordered][:3] == ["a", "b", "c"]
    assert [d.key for d in index.affected(["visit"])] == ["a", "b", "c"]
    assert [d.key for d in index.affected(["purchase"])] == []
    assert [d.key for d in index.affected(profile=True)] == ["d"]
    assert [d.key for d in index.affected(balance=True)] == ["e"]
    assert [d.key for d in index.affected(tags=["hot"])] == ["b", "c"]
    assert [d.key for d in index.dependents("a")] == ["b", "c"]


def test_cycles_through_tags_and_missing_references_are_refused() -> None:
    with pytest.raises(InvalidInput, match="cycle: a -> b -> a"):
        dependency_order(
            [_definition("a", 'has_tag("t")', tag="u"), _definition("b", 'has_tag("u")', tag="t")]
        )
    with pytest.raises(InvalidInput, match="in_segment\\('ghost'\\) names no segment"):
        dependency_order([_definition("a", 'in_segment("ghost")')])


async def test_concurrent_batches_over_the_same_members_neither_deadlock_nor_drift(
    services: Services,
) -> None:
    # given segments that read events and balances, and members shared by every batch
    program = await new_program(services)
    for key, (rule, tag) in RULES.items():
        await services.segments.create(
            program.id, SegmentDraft(key, key, "DYNAMIC", rule=rule, applies_tag=tag), actor="test"
        )
    members = [f"c{i}" for i in range(8)]
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in members])
    at = services.clock.now() - timedelta(hours=2)

    def batch(n: int) -> list[EventDraft]:
        order = members if n % 2 else list(reversed(members))  # opposite orders invite deadlocks
        return [
            EventDraft(f"cc{n}-{m}-{k}", m, kind, at, Decimal(30) if kind == "purchase" else None, {})
            for m in order
            for k, kind in enumerate(("visit", "purchase"))
        ]

    # when ten batches race
    results = await asyncio.gather(*(services.events.record_events(program.id, batch(n)) for n in range(10)))

    # then every event is accepted once and membership matches a full recompute
    assert all(o.status == "ACCEPTED" for outcomes in results for o in outcomes)
    async with services.db.unit_of_work() as uow:
        drift = await services.segments.engine.recompute(uow.session, program.id, None, services.clock.now())
    assert {k: r for k, r in drift.items() if r.entered or r.left} == {}
