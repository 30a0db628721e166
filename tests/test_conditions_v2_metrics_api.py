"""The spec's version 2 metric examples through the real GraphQL endpoint: segments created from their
rules hold exactly the members the rules describe, and ledger operands follow the ledger (a redemption
and the expiry sweep re-evaluate the segments that read them, before the commit)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from api.runtime import Services
from tests.support import ShiftableClock
from tests.support.events import UPSERT, event, record_accepted
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token
from tests.support.segments import create, members_of

REDEEM = """
mutation($m: String!, $p: Int!, $k: String!) {
  redeemPoints(memberExternalId: $m, points: $p, reason: "voucher", idempotencyKey: $k) { id points }
}"""
SET_EXPIRY = "mutation($d: Int) { setPointsExpiry(afterDays: $d) { key pointsExpiryDays } }"
RULES = {
    "coffee_over_tea": 'count(purchase, 90d where category = "coffee") > count(purchase, 90d where category = "tea")',
    "opens_a_fifth": "count(message_opened, 90d) / count(message_sent, 90d) >= 0.2",
    "favourite_s1": 'top(purchase.store, 90d) = "S1"',
    "not_reached": 'count(message_failed, 30d where template = "spring") + '
    'count(message_suppressed, 30d where template = "spring") >= 1',
    "two_stores": 'distinct(purchase.store, 90d) >= 2 and count(purchase, 90d where store not in ["S9"]) >= 1',
}


async def test_the_spec_examples_hold_exactly_the_members_they_describe(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    ago = [now - timedelta(days=d, minutes=1) for d in range(40)]
    await integration.data(UPSERT, {"m": [{"externalId": e} for e in ("ana", "bo", "cem", "dee")]})
    await record_accepted(
        integration,
        [
            event("ana", "purchase", ago[1], "5", category="coffee", store="S1"),
            event("ana", "purchase", ago[2], "5", category="coffee", store="S2"),
            event("ana", "purchase", ago[3], "5", category="tea", store="S2"),
            event("ana", "purchase", ago[4], "5", category="coffee", store="S1"),
            event("bo", "purchase", ago[1], "5", category="tea", store="S2"),
            event("bo", "purchase", ago[2], "5", category="coffee", store="S1"),  # tie S1/S2: S1
            event("cem", "purchase", ago[1], "5", category="tea", store="S9"),
            *[event("ana", "message_sent", ago[i + 1], template="spring") for i in range(5)],
            event("ana", "message_opened", ago[1]),  # 1 / 5
            *[event("bo", "message_sent", ago[i + 1], template="spring") for i in range(6)],
            event("bo", "message_opened", ago[1]),  # 1 / 6
            event("cem", "message_opened", ago[1]),  # 1 / 0: absent
            event("dee", "message_failed", ago[2], template="spring"),
            event("cem", "message_suppressed", ago[35], template="spring"),  # outside 30d
            event("bo", "message_failed", ago[2], template="autumn"),
        ],
    )

    for key, rule in RULES.items():
        created = await create(admin, key, rule)
        assert created["rule"] == rule

    assert await members_of(admin, "coffee_over_tea") == ["ana"]
    assert await members_of(admin, "opens_a_fifth") == ["ana"]
    assert await members_of(admin, "favourite_s1") == ["ana", "bo"]
    assert await members_of(admin, "not_reached") == ["dee"]
    assert await members_of(admin, "two_stores") == ["ana", "bo"]
    # an event recorded afterwards re-evaluates the members it concerns (in memory)
    await record_accepted(integration, [event("bo", "purchase", ago[0], "5", category="coffee", store="S2")])
    assert await members_of(admin, "favourite_s1") == ["ana"]
    assert await members_of(admin, "coffee_over_tea") == ["ana", "bo"]


async def test_ledger_operands_follow_redemptions_and_the_expiry_sweep(
    admin: GraphQLClient,
    integration: GraphQLClient,
    client: httpx.AsyncClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    await admin.data(SET_EXPIRY, {"d": 30})
    spent = await create(admin, "spent_last_month", "points_redeemed(30d) > 0")
    expiring = await create(admin, "expiring_soon", "points_expiring(30d) > 0")
    earned = await create(admin, "earned_twice_spent", "points_earned(30d) >= 2 * points_redeemed(30d) + 1")
    assert [spent["size"], expiring["size"], earned["size"]] == [0, 0, 0]
    now = clock.now()
    await integration.data(UPSERT, {"m": [{"externalId": e} for e in ("eda", "fay")]})
    await record_accepted(
        integration,
        [event("eda", "purchase", now - timedelta(minutes=1), "100"), event("fay", "purchase", now, "40")],
    )
    assert await members_of(admin, "expiring_soon") == ["eda", "fay"]
    assert await members_of(admin, "earned_twice_spent") == ["eda", "fay"]
    # a redemption re-evaluates what reads the ledger
    await integration.data(REDEEM, {"m": "fay", "p": 30, "k": "r1"})
    assert await members_of(admin, "spent_last_month") == ["fay"]
    assert await members_of(admin, "earned_twice_spent") == ["eda"]
    # the sweep takes what is left of eda's lot: nothing of hers expires any more
    clock.shift(timedelta(days=30, seconds=1))
    assert (await services.expiry.pass_once(program.id)).lots >= 1
    later = GraphQLClient(client, await admin_token(client, program, clock))
    assert await members_of(later, "expiring_soon") == []
