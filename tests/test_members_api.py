"""Members and organizations through GraphQL: upserts, pagination, and one query per relation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.runtime import Services
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient
from tests.support.statements import counting_statements

ORGS = "mutation($o: [OrganizationInput!]!) { upsertOrganizations(organizations: $o) { upserted } }"
MEMBER = """
query($id: String!) {
  member(externalId: $id) {
    externalId kind attributes channels joinedAt pointsBalance pendingPoints
    organization { externalId name attributes }
  }
}"""


async def test_upsert_creates_then_merges_attributes(integration: GraphQLClient) -> None:
    joined = "2025-01-15T10:00:00+00:00"
    await integration.data(
        UPSERT,
        {
            "m": [
                {
                    "externalId": "d1",
                    "kind": "DEALER",
                    "organizationExternalId": "acme",
                    "attributes": {"city": "Izmir", "tier": "gold", "seats": 4},
                    "channels": ["EMAIL", "SMS"],
                    "joinedAt": joined,
                }
            ]
        },
    )
    await integration.data(
        UPSERT, {"m": [{"externalId": "d1", "kind": "DEALER", "attributes": {"tier": None, "seats": 5}}]}
    )
    member = (await integration.data(MEMBER, {"id": "d1"}))["member"]
    assert member == {
        "externalId": "d1",
        "kind": "DEALER",
        "attributes": {"city": "Izmir", "seats": 5},
        "channels": ["EMAIL", "SMS"],
        "joinedAt": joined,
        "pointsBalance": 0,
        "pendingPoints": 0,
        "organization": {"externalId": "acme", "name": "acme", "attributes": {}},
    }


async def test_organizations_are_upserted_and_list_their_members(integration: GraphQLClient) -> None:
    await integration.data(
        ORGS, {"o": [{"externalId": "dept-7", "name": "Sales", "attributes": {"floor": 3}}]}
    )
    await integration.data(ORGS, {"o": [{"externalId": "dept-7", "name": "Sales EMEA"}]})
    await integration.data(
        UPSERT,
        {
            "m": [
                {"externalId": f"e{i}", "kind": "EMPLOYEE", "organizationExternalId": "dept-7"}
                for i in range(3)
            ]
        },
    )
    query = '{ member(externalId: "e0") { organization { name attributes members(first: 2) { totalCount edges { node { externalId } } pageInfo { hasNextPage } } } } }'
    organization = (await integration.data(query))["member"]["organization"]
    assert organization == {
        "name": "Sales EMEA",
        "attributes": {"floor": 3},
        "members": {
            "totalCount": 3,
            "edges": [{"node": {"externalId": "e0"}}, {"node": {"externalId": "e1"}}],
            "pageInfo": {"hasNextPage": True},
        },
    }


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ({"externalId": ""}, "members[0].externalId: must not be empty"),
        ({"externalId": "x" * 129}, "members[0].externalId: longer than 128 characters"),
        ({"externalId": "a", "attributes": [1]}, "members[0].attributes: must be a JSON object"),
        ({"externalId": "a", "channels": ["SMS", "SMS"]}, "members[0].channels: a channel is listed twice"),
        (
            {"externalId": "a", "attributes": {"blob": "x" * 17_000}},
            "members[0].attributes: more than 16384 bytes once merged",
        ),
    ],
)
async def test_bad_members_are_refused_whole_with_the_field_named(
    integration: GraphQLClient, member: dict[str, Any], message: str
) -> None:
    error = await integration.error(UPSERT, {"m": [member]})
    assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)
    assert (await integration.data("{ members { totalCount } }"))["members"]["totalCount"] == 0


async def test_an_unknown_enum_value_is_bad_input(integration: GraphQLClient) -> None:
    error = await integration.error(UPSERT, {"m": [{"externalId": "a", "kind": "ROBOT"}]})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "ROBOT" in error["message"]


async def test_members_page_in_creation_order(integration: GraphQLClient) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": f"m{i:02d}"} for i in range(7)]})
    seen: list[str] = []
    after = None
    query = "query($after: String) { members(first: 3, after: $after) { totalCount edges { node { externalId } } pageInfo { hasNextPage endCursor } } }"
    while True:
        page = (await integration.data(query, {"after": after}))["members"]
        assert page["totalCount"] == 7
        seen += [e["node"]["externalId"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"m{i:02d}" for i in range(7)]


async def test_pages_are_at_most_500(integration: GraphQLClient) -> None:
    error = await integration.error("{ members(first: 501) { totalCount } }")
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "first: must be between 0 and 500, got 501",
    )


async def test_filtering_by_an_unknown_segment_is_not_found(integration: GraphQLClient) -> None:
    error = await integration.error('{ members(segmentKey: "vip") { totalCount } }')
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "segmentKey: no segment 'vip' in this program",
    )


async def test_a_page_of_members_costs_a_fixed_number_of_queries(
    integration: GraphQLClient, services: Services
) -> None:
    """Given 100 members with organizations and ledgers, one page reads each relation once."""
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    await integration.data(
        UPSERT,
        {"m": [{"externalId": f"n{i:03d}", "organizationExternalId": f"org{i % 7}"} for i in range(100)]},
    )
    await integration.data(
        "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status } } }",
        {
            "e": [
                {"externalId": f"ev{i}", "memberExternalId": f"n{i:03d}", "type": "visit", "occurredAt": at}
                for i in range(100)
            ]
        },
    )
    query = """query($first: Int!) { members(first: $first) { totalCount edges { node {
        externalId organization { externalId members(first: 2) { totalCount edges { node { externalId } } } }
        ledger(first: 3) { edges { node { points reason } } }
        tags { key } segments { key } lifecycle rfm { label } abcClass } } } }"""
    with counting_statements(services) as small:
        await integration.data(query, {"first": 10})
    with counting_statements(services) as large:
        page = (await integration.data(query, {"first": 100}))["members"]
    assert len(page["edges"]) == 100
    assert page["edges"][0]["node"]["ledger"]["edges"] == [{"node": {"points": 10, "reason": "visit ev0"}}]
    assert page["edges"][0]["node"]["organization"]["members"]["totalCount"] == 15
    # authenticate + page + count + organizations + their member pages + member counts + ledgers
    # + tags + segments + lifecycle (program settings, purchase buckets)
    assert len(large) == len(small) == 11, large
