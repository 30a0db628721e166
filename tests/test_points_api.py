"""Redemptions and reversals through the GraphQL endpoint, including concurrent requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.graphql import GraphQLClient

REDEEM = """
mutation($m: String!, $p: Int!, $r: String!, $k: String!) {
  redeemPoints(memberExternalId: $m, points: $p, reason: $r, idempotencyKey: $k) {
    id points status kind reason eventExternalId
  }
}"""
REVERSE = """
mutation($id: ID!, $k: String!) {
  reverseLedgerEntry(id: $id, reason: "correction", idempotencyKey: $k) { id points status kind reversesEntryId }
}"""
BALANCE = "query($id: String!) { member(externalId: $id) { pointsBalance } }"
LEDGER = """
query($id: String!, $first: Int!, $after: String) {
  member(externalId: $id) {
    ledger(first: $first, after: $after) { edges { cursor node { points kind } } pageInfo { hasNextPage endCursor } }
  }
}"""


async def give_points(client: GraphQLClient, member: str, points: int) -> None:
    """A member with exactly `points` posted (a purchase of that amount)."""
    await client.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": member}]},
    )
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    data = await client.data(
        "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status pointsAwarded } } }",
        {
            "e": [
                {
                    "externalId": f"seed-{member}",
                    "memberExternalId": member,
                    "type": "purchase",
                    "occurredAt": at,
                    "amount": str(points),
                }
            ]
        },
    )
    assert data["recordEvents"]["results"] == [{"status": "ACCEPTED", "pointsAwarded": points}]


async def balance(client: GraphQLClient, member: str) -> int:
    value: int = (await client.data(BALANCE, {"id": member}))["member"]["pointsBalance"]
    return value


async def test_redeeming_spends_posted_points(integration: GraphQLClient) -> None:
    await give_points(integration, "ana", 100)
    data = await integration.data(REDEEM, {"m": "ana", "p": 30, "r": "coffee voucher", "k": "r-1"})
    assert data["redeemPoints"] | {"id": None} == {
        "id": None,
        "points": -30,
        "status": "POSTED",
        "kind": "REDEMPTION",
        "reason": "coffee voucher",
        "eventExternalId": None,
    }
    assert await balance(integration, "ana") == 70


async def test_redeeming_beyond_the_balance_is_refused_and_changes_nothing(
    integration: GraphQLClient,
) -> None:
    await give_points(integration, "ana", 100)
    error = await integration.error(REDEEM, {"m": "ana", "p": 101, "r": "tv", "k": "r-big"})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "points: the redemption of 101 exceeds the balance of 100"
    assert await balance(integration, "ana") == 100


@pytest.mark.parametrize(
    ("points", "reason", "key", "message"),
    [
        (0, "x", "k", "points: must be a positive whole number of points, got 0"),
        (-5, "x", "k", "points: must be a positive whole number of points, got -5"),
        (5, " ", "k", "reason: must not be empty"),
        (5, "x", "", "idempotencyKey: must not be empty"),
        (5, "x", "event:abc", "idempotencyKey: the prefix 'event:' is reserved for event accruals"),
        (
            5,
            "x",
            "experiment:1:2",
            "idempotencyKey: the prefix 'experiment:' is reserved for experiment bonuses",
        ),
        (5, "x", "refund:p1", "idempotencyKey: the prefix 'refund:' is reserved for refunds"),
    ],
)
async def test_bad_redemptions_name_the_field(
    integration: GraphQLClient, points: int, reason: str, key: str, message: str
) -> None:
    await give_points(integration, "ana", 10)
    error = await integration.error(REDEEM, {"m": "ana", "p": points, "r": reason, "k": key})
    assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)


async def test_an_idempotency_key_names_one_request(integration: GraphQLClient) -> None:
    await give_points(integration, "ana", 100)
    first = await integration.data(REDEEM, {"m": "ana", "p": 10, "r": "voucher", "k": "same"})
    replay = await integration.data(REDEEM, {"m": "ana", "p": 10, "r": "voucher", "k": "same"})
    assert replay["redeemPoints"]["id"] == first["redeemPoints"]["id"]
    conflict = await integration.error(REDEEM, {"m": "ana", "p": 20, "r": "voucher", "k": "same"})
    assert conflict["extensions"]["code"] == "CONFLICT"
    assert conflict["message"] == "idempotencyKey: 'same' was already used for a different request"
    assert await balance(integration, "ana") == 90


async def test_concurrent_redemptions_never_overdraw(
    client: httpx.AsyncClient, integration: GraphQLClient
) -> None:
    """Given 100 points, when 20 requests race to redeem 10 each, then exactly 10 succeed."""
    await give_points(integration, "ana", 100)
    results = await asyncio.gather(
        *(
            integration.execute(REDEEM, {"m": "ana", "p": 10, "r": "race", "k": f"race-{i}"})
            for i in range(20)
        )
    )
    succeeded = [r for r in results if "errors" not in r]
    refused = [r["errors"][0]["extensions"]["code"] for r in results if "errors" in r]
    assert len(succeeded) == 10
    assert refused == ["BAD_USER_INPUT"] * 10
    assert await balance(integration, "ana") == 0


async def test_concurrent_retries_of_one_key_redeem_once(integration: GraphQLClient) -> None:
    await give_points(integration, "ana", 100)
    results = await asyncio.gather(
        *(integration.execute(REDEEM, {"m": "ana", "p": 10, "r": "retry", "k": "one-key"}) for _ in range(8))
    )
    ids = {r["data"]["redeemPoints"]["id"] for r in results if "errors" not in r}
    assert len(ids) == 1
    assert await balance(integration, "ana") == 90


async def test_a_reversal_corrects_with_an_opposite_entry(admin: GraphQLClient) -> None:
    await give_points(admin, "ana", 50)
    spent = await admin.data(REDEEM, {"m": "ana", "p": 20, "r": "voucher", "k": "v1"})
    entry_id = spent["redeemPoints"]["id"]
    reversal = (await admin.data(REVERSE, {"id": entry_id, "k": "undo-v1"}))["reverseLedgerEntry"]
    assert reversal | {"id": None} == {
        "id": None,
        "points": 20,
        "status": "POSTED",
        "kind": "REVERSAL",
        "reversesEntryId": entry_id,
    }
    again = await admin.error(REVERSE, {"id": entry_id, "k": "undo-v1-again"})
    assert (again["extensions"]["code"], again["message"]) == (
        "CONFLICT",
        f"id: entry {entry_id} has already been reversed",
    )
    assert await balance(admin, "ana") == 50


async def test_reversing_spent_points_is_refused(admin: GraphQLClient) -> None:
    await give_points(admin, "ana", 50)
    ledger = (await admin.data(LEDGER, {"id": "ana", "first": 5}))["member"]["ledger"]
    await admin.data(REDEEM, {"m": "ana", "p": 40, "r": "voucher", "k": "v1"})
    accrual_id = await _entry_id(admin, "ana", kind="ACCRUAL")
    error = await admin.error(REVERSE, {"id": accrual_id, "k": "undo-accrual"})
    assert error["message"] == "points: the reversal of 50 exceeds the balance of 10"
    assert ledger["edges"][0]["node"] == {"points": 50, "kind": "ACCRUAL"}


async def test_an_integration_key_cannot_reverse(integration: GraphQLClient) -> None:
    error = await integration.error(REVERSE, {"id": "1", "k": "x"})
    assert error["extensions"]["code"] == "FORBIDDEN"


async def test_the_ledger_pages_newest_first(integration: GraphQLClient) -> None:
    await give_points(integration, "ana", 100)
    for i in range(5):
        await integration.data(REDEEM, {"m": "ana", "p": i + 1, "r": f"r{i}", "k": f"k{i}"})
    pages: list[list[int]] = []
    after = None
    while True:
        ledger = (await integration.data(LEDGER, {"id": "ana", "first": 2, "after": after}))["member"][
            "ledger"
        ]
        pages.append([e["node"]["points"] for e in ledger["edges"]])
        if not ledger["pageInfo"]["hasNextPage"]:
            break
        after = ledger["pageInfo"]["endCursor"]
    assert pages == [[-5, -4], [-3, -2], [-1, 100]]


async def test_a_foreign_cursor_is_bad_input(integration: GraphQLClient) -> None:
    await give_points(integration, "ana", 1)
    error = await integration.error(LEDGER, {"id": "ana", "first": 2, "after": "bm9wZQ"})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "after: 'bm9wZQ' is not a ledger cursor from this API"


async def _entry_id(client: GraphQLClient, member: str, kind: str) -> Any:
    query = (
        "query($id: String!) { member(externalId: $id) { ledger(first: 50) { edges { node { id kind } } } } }"
    )
    edges = (await client.data(query, {"id": member}))["member"]["ledger"]["edges"]
    return next(e["node"]["id"] for e in edges if e["node"]["kind"] == kind)
