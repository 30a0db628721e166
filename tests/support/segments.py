"""Segments and their triggers through GraphQL, as the admin defines them."""

from __future__ import annotations

from typing import Any

from tests.support.graphql import GraphQLClient

CREATE = (
    "mutation($i: SegmentInput!) { createSegment(input: $i) { key kind rule condition appliesTag size } }"
)
SEGMENT = """
query($k: String!) {
  segment(key: $k) { key size members(first: 100) { totalCount edges { node { externalId } } } }
}"""
SET_TRIGGERS = """
mutation($k: String!, $t: [SegmentTriggerInput!]!) {
  setSegmentTriggers(segmentKey: $k, triggers: $t) {
    id on action points percentOfLifetimeValue minPoints maxPoints reason tag template preferredChannels webhookKey
  }
}"""


async def create(admin: GraphQLClient, key: str, rule: str, **extra: Any) -> dict[str, Any]:
    """A DYNAMIC segment named after its key (`extra` adds or overrides SegmentInput fields)."""
    segment: dict[str, Any] = (
        await admin.data(CREATE, {"i": {"key": key, "name": key, "kind": "DYNAMIC", "rule": rule, **extra}})
    )["createSegment"]
    return segment


async def members_of(admin: GraphQLClient, key: str) -> list[str]:
    """The segment's members' externalIds, sorted (at most 100; its size must agree)."""
    segment = (await admin.data(SEGMENT, {"k": key}))["segment"]
    found = sorted(edge["node"]["externalId"] for edge in segment["members"]["edges"])
    assert segment["size"] == segment["members"]["totalCount"] == len(found)
    return found


async def set_triggers(
    admin: GraphQLClient, key: str, triggers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Replace the segment's triggers; the stored ones."""
    data = await admin.data(SET_TRIGGERS, {"k": key, "t": triggers})
    result: list[dict[str, Any]] = data["setSegmentTriggers"]
    return result
