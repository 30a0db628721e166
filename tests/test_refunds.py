"""Refunds through the GraphQL endpoint: a `refund` event reverses its original's accrual."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from api.runtime import Services
from domain.db.types import amount_to_units
from domain.models import EventAggregate, Member
from domain.segments.service import SegmentDraft
from tests.support.events import UPSERT, event_with_id, record_results
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.leaderboards import board, feed, ranking

LEDGER = """
query($id: String!) {
  member(externalId: $id) {
    pointsBalance
    segments { key }
    ledger { edges { node { points status kind reason eventExternalId reversesEntryId id } } }
  }
}"""
NOW = datetime.now(UTC).replace(microsecond=0)


def refund(external_id: str, of: str, member: str = "m1", **extra: Any) -> dict[str, Any]:
    return event_with_id(external_id, member, "refund", properties={"refundOf": of}, **extra)


async def member(client: GraphQLClient, external_id: str = "m1") -> dict[str, Any]:
    data: dict[str, Any] = (await client.data(LEDGER, {"id": external_id}))["member"]
    return data


async def setup(client: GraphQLClient) -> None:
    await client.data(UPSERT, {"m": [{"externalId": "m1"}, {"externalId": "m2"}]})


async def test_a_refund_reverses_the_purchase_points(
    integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    await setup(integration)
    await record_results(integration, event_with_id("p1", amount="120"), event_with_id("p2", amount="30"))
    results = await record_results(integration, refund("r1", "p1"))
    assert results == [
        {"externalId": "r1", "status": "ACCEPTED", "pointsAwarded": 0, "message": "refunded p1: -120 points"}
    ]
    shown = await member(integration)
    assert shown["pointsBalance"] == 30
    entries = [e["node"] for e in shown["ledger"]["edges"]]
    reversal = entries[0]
    accrual = next(e for e in entries if e["eventExternalId"] == "p1" and e["kind"] == "ACCRUAL")
    assert reversal == {
        "points": -120,
        "status": "POSTED",
        "kind": "REVERSAL",
        "reason": "refund r1",
        "eventExternalId": "p1",
        "reversesEntryId": accrual["id"],
        "id": reversal["id"],
    }
    # the purchase no longer counts in the member's daily buckets
    async with services.db.read() as session:
        buckets = (
            await session.execute(
                select(
                    EventAggregate.count,
                    EventAggregate.amount_sum,
                    EventAggregate.amount_min,
                    EventAggregate.amount_max,
                )
                .join(Member, Member.id == EventAggregate.member_id)
                .where(
                    Member.program_id == program.id,
                    Member.external_id == "m1",
                    EventAggregate.event_type == "purchase",
                )
            )
        ).all()
    thirty = amount_to_units(Decimal("30"))
    assert [tuple(b) for b in buckets] == [(1, thirty, thirty, thirty)]  # min/max recomputed exactly


async def test_rejected_refunds_name_their_reason(integration: GraphQLClient) -> None:
    await setup(integration)
    await record_results(
        integration,
        event_with_id("p1", amount="50"),
        event_with_id("p2", "m2", amount="40"),
        event_with_id("l1", type_="login"),
    )
    await record_results(integration, refund("r0", "p1"))
    results = await record_results(
        integration,
        refund("r1", "nope"),
        refund("r2", "p2"),
        refund("r3", "p1"),
        refund("r4", "l1"),
        event_with_id("r5", type_="refund"),
    )
    assert [(r["status"], r["message"]) for r in results] == [
        ("REJECTED", "refundOf: no event 'nope' in this program"),
        ("REJECTED", "refundOf: event 'p2' belongs to another member"),
        ("REJECTED", "refundOf: event 'p1' has already been refunded or reversed"),
        ("REJECTED", "refundOf: event 'l1' earned no points to refund"),
        ("REJECTED", "properties.refundOf: the externalId of the refunded event is required"),
    ]
    again = await record_results(integration, refund("r0", "p1"))
    assert again[0]["status"] == "DUPLICATE"
    assert (await member(integration))["pointsBalance"] == 0


async def test_a_refund_of_spent_points_is_rejected(
    integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    await setup(integration)
    await record_results(integration, event_with_id("p1", amount="100"))
    await services.ledger.redeem(program.id, "m1", 60, "coffee", "spend-1")
    results = await record_results(integration, refund("r1", "p1"))
    assert results[0]["status"] == "REJECTED"
    assert results[0]["message"] == "refund of p1 would take 100 points but the balance is 40"
    assert (await member(integration))["pointsBalance"] == 40


async def test_a_refund_in_the_same_batch_as_its_purchase(integration: GraphQLClient) -> None:
    await setup(integration)
    results = await record_results(
        integration, event_with_id("p1", amount="25"), refund("r1", "p1"), event_with_id("v1", type_="visit")
    )
    assert [(r["status"], r["pointsAwarded"]) for r in results] == [
        ("ACCEPTED", 25),
        ("ACCEPTED", 0),
        ("ACCEPTED", 10),
    ]
    assert results[1]["message"] == "refunded p1: -25 points"
    assert (await member(integration))["pointsBalance"] == 10


async def test_the_leaderboard_and_the_segment_lose_the_refunded_purchase(
    integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    await services.segments.create(
        program.id, SegmentDraft("big", "big", "DYNAMIC", rule="sum(purchase.amount) >= 100"), actor="test"
    )
    await services.segments.create(  # property filters read raw events, not the daily buckets
        program.id,
        SegmentDraft("tea", "tea", "DYNAMIC", rule='count(purchase, 30d where category = "tea") >= 1'),
        actor="test",
    )
    await setup(integration)
    await record_results(
        integration,
        event_with_id("p1", amount="80", properties={"category": "tea"}),
        event_with_id("p2", amount="30"),
        event_with_id("p3", "m2", amount="50"),
    )
    await feed(services)
    assert ranking((await board(integration))["top"]) == [(1, "m1", 110), (2, "m2", 50)]
    assert sorted(s["key"] for s in (await member(integration))["segments"]) == ["big", "tea"]

    await record_results(integration, refund("r1", "p1"))
    await feed(services)
    assert ranking((await board(integration))["top"]) == [(1, "m2", 50), (2, "m1", 30)]
    assert (await member(integration))["segments"] == []
    # and a full recompute agrees with the incremental engine
    async with services.db.unit_of_work() as uow:
        results = await services.segments.engine.recompute(
            uow.session, program.id, None, services.clock.now()
        )
    assert {key: r for key, r in results.items() if r.entered or r.left} == {}
