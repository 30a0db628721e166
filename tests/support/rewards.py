"""GraphQL documents and helpers of the rewards tests: a catalogue item, points to spend, balances."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient

REWARD_FIELDS = "key name description costPoints stock active"
SET_REWARD = f"mutation($i: RewardInput!) {{ setReward(input: $i) {{ {REWARD_FIELDS} }} }}"
RESTOCK = "mutation($k: String!, $a: Int!) { restockReward(key: $k, add: $a) { key stock } }"
REWARD = f"query($k: String!) {{ reward(key: $k) {{ {REWARD_FIELDS} }} }}"
REWARDS = "query($a: Boolean!) { rewards(activeOnly: $a) { key active } }"
REDEEM = """
mutation($m: String!, $r: String!, $k: String!) {
  redeemReward(memberExternalId: $m, rewardKey: $r, idempotencyKey: $k) {
    id memberExternalId points idempotencyKey
    reward { key stock }
    ledgerEntry { points status kind reason }
  }
}"""
SET_WINDOW = """
mutation($r: String!, $b: String!, $p: LeaderboardPeriod!, $n: Int!, $s: DateTime!, $e: DateTime!) {
  setRewardWindow(rewardKey: $r, boardKey: $b, period: $p, topN: $n, startsAt: $s, endsAt: $e) {
    key windows { boardKey period topN startsAt endsAt frozen }
  }
}"""
REMOVE_WINDOW = """
mutation($r: String!, $s: DateTime!) { removeRewardWindow(rewardKey: $r, startsAt: $s) { windows { startsAt } } }"""
BALANCE = "query($id: String!) { member(externalId: $id) { pointsBalance } }"
ISSUE = "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }"


def reward_input(key: str = "mug", **overrides: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Mug",
        "description": "A ceramic mug",
        "costPoints": 300,
        "stock": 5,
    } | overrides


async def give_points(client: GraphQLClient, clock: ShiftableClock, points: dict[str, int]) -> None:
    """Each member gets exactly its points (one purchase of that amount, now by the service clock)."""
    await client.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": m} for m in points]},
    )
    at = (clock.now() - timedelta(seconds=1)).isoformat()
    stamp = clock.now().timestamp()
    events = [
        {
            "externalId": f"buy-{member}-{stamp}",
            "memberExternalId": member,
            "type": "purchase",
            "occurredAt": at,
            "amount": str(amount),
        }
        for member, amount in points.items()
    ]
    data = await client.data(
        "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status pointsAwarded } } }",
        {"e": events},
    )
    assert data["recordEvents"]["results"] == [
        {"status": "ACCEPTED", "pointsAwarded": amount} for amount in points.values()
    ]


async def balance(client: GraphQLClient, member: str) -> int:
    value: int = (await client.data(BALANCE, {"id": member}))["member"]["pointsBalance"]
    return value


async def stock(client: GraphQLClient, key: str) -> int:
    value: int = (await client.data(REWARD, {"k": key}))["reward"]["stock"]
    return value
