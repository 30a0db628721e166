"""Promotions through GraphQL (docs/promotions.md): documents, an input builder, and ledger reads."""

from __future__ import annotations

from typing import Any

from tests.support.graphql import GraphQLClient

FIELDS = (
    "key name eventType condition multiplier bonusPoints startsAt endsAt capPoints capPeriod "
    "budgetPoints spentPoints priority stacking active"
)
CREATE = f"mutation($i: PromotionInput!) {{ createPromotion(input: $i) {{ {FIELDS} }} }}"
UPDATE = f"mutation($i: PromotionInput!) {{ updatePromotion(input: $i) {{ {FIELDS} }} }}"
SET_ACTIVE = "mutation($k: String!, $a: Boolean!) { setPromotionActive(key: $k, active: $a) { key active } }"
LIST = f"{{ promotions {{ {FIELDS} }} }}"
SIMULATE = """
query($i: PromotionInput!, $d: Int!) {
  simulatePromotion(input: $i, days: $d) { days eventsReplayed events members points cost }
}"""
LEDGER = """
query($id: String!) {
  member(externalId: $id) {
    pointsBalance pendingPoints
    ledger(first: 200) { edges { node { points status kind reason promotions { key points } } } }
  }
}"""


def promotion(key: str = "double", **changes: Any) -> dict[str, Any]:
    """A PromotionInput: double points on purchases unless told otherwise."""
    return {"key": key, "name": key.title(), "eventType": "purchase", "multiplier": "2", **changes}


async def create(admin: GraphQLClient, key: str = "double", **changes: Any) -> dict[str, Any]:
    created: dict[str, Any] = (await admin.data(CREATE, {"i": promotion(key, **changes)}))["createPromotion"]
    return created


async def entries(client: GraphQLClient, member: str) -> list[dict[str, Any]]:
    """The member's ledger entries, newest first."""
    data = await client.data(LEDGER, {"id": member})
    return [edge["node"] for edge in data["member"]["ledger"]["edges"]]


async def balance(client: GraphQLClient, member: str) -> int:
    data = await client.data(LEDGER, {"id": member})
    points: int = data["member"]["pointsBalance"]
    return points
