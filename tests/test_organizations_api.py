"""The organization hierarchy and its conditions through the real GraphQL endpoint (issue 17).

Parents (earlier in the list or stored), cycles refused with nothing stored, `parent` and
`children`; "dealer group over target" (`org.sum`) kept current as any dealer of the group
sells; `in_organization` reaching the organizations below.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.support import ShiftableClock
from tests.support.events import UPSERT, event, record_accepted
from tests.support.graphql import GraphQLClient
from tests.support.segments import create, members_of

ORGS = "mutation($o: [OrganizationInput!]!) { upsertOrganizations(organizations: $o) { upserted } }"
TREE = """
query($id: String!) {
  member(externalId: $id) {
    organization { externalId parent { externalId } children { externalId children { externalId } } }
  }
}"""


def org(external_id: str, parent: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"externalId": external_id, "name": external_id.title(), "parentExternalId": parent, **extra}


async def tree_of(admin: GraphQLClient, member: str) -> dict[str, Any]:
    found: dict[str, Any] = (await admin.data(TREE, {"id": member}))["member"]["organization"]
    return found


async def group_with_dealers(integration: GraphQLClient) -> None:
    """group > dealer1 > branch1, group > dealer2, and other (no parent); one dealer member in each."""
    await integration.data(
        ORGS,
        {
            "o": [
                org("group"),
                org("dealer1", "group"),
                org("dealer2", "group"),
                org("branch1", "dealer1"),
                org("other"),
            ]
        },
    )
    await integration.data(
        UPSERT,
        {
            "m": [
                {"externalId": f"m-{o}", "kind": "DEALER", "organizationExternalId": o}
                for o in ("group", "dealer1", "dealer2", "branch1", "other")
            ]
            + [{"externalId": "m-none", "kind": "DEALER"}]
        },
    )


async def test_parents_children_and_moves(admin: GraphQLClient, integration: GraphQLClient) -> None:
    await group_with_dealers(integration)

    assert await tree_of(admin, "m-dealer1") == {
        "externalId": "dealer1",
        "parent": {"externalId": "group"},
        "children": [{"externalId": "branch1", "children": []}],
    }
    group = await tree_of(admin, "m-group")
    assert group["parent"] is None
    assert [c["externalId"] for c in group["children"]] == ["dealer1", "dealer2"]

    # left out, the parent stays; null moves the organization to the top
    await integration.data(ORGS, {"o": [{"externalId": "dealer2", "name": "Dealer Two"}]})
    assert (await tree_of(admin, "m-dealer2"))["parent"] == {"externalId": "group"}
    await integration.data(ORGS, {"o": [org("dealer2", None)]})
    assert (await tree_of(admin, "m-dealer2"))["parent"] is None
    # a stored parent, named by a later call
    await integration.data(ORGS, {"o": [org("dealer2", "other")]})
    assert (await tree_of(admin, "m-dealer2"))["parent"] == {"externalId": "other"}


async def test_unknown_parents_and_cycles_are_refused_naming_the_item(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await group_with_dealers(integration)

    later = await integration.error(ORGS, {"o": [org("new1"), org("new2", "new3"), org("new3")]})
    assert later["extensions"]["code"] == "BAD_USER_INPUT"
    assert later["message"].startswith("organizations[1].parentExternalId: 'new3' is no organization")

    cycle = await integration.error(ORGS, {"o": [org("x"), org("group", "branch1")]})
    assert cycle["extensions"]["code"] == "BAD_USER_INPUT"
    assert cycle["message"] == (
        "organizations[1].parentExternalId: 'branch1' would put 'group' above itself: "
        "group -> branch1 -> dealer1 -> group"
    )
    itself = await integration.error(ORGS, {"o": [org("dealer2", "dealer2")]})
    assert "dealer2 -> dealer2" in itself["message"]
    # in the same list too
    pair = await integration.error(ORGS, {"o": [org("p", "q2"), org("q2", "p")]})
    assert pair["message"].startswith("organizations[0].parentExternalId: 'q2' is no organization")

    # nothing of a refused call is stored
    assert (await tree_of(admin, "m-group"))["parent"] is None
    await integration.data(UPSERT, {"m": [{"externalId": "probe", "organizationExternalId": "new1"}]})
    assert (await tree_of(admin, "probe"))["externalId"] == "new1"  # created by the member upsert only
    assert (await tree_of(admin, "probe"))["parent"] is None


async def test_dealer_group_over_target_follows_every_dealer_s_sales(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    for rule in ("single_accrual_cap", "daily_points_cap"):  # dealers' sales are large
        await admin.data(
            "mutation($r: String!) { setFraudRule(rule: $r, enabled: false) { name } }", {"r": rule}
        )
    await group_with_dealers(integration)
    await record_accepted(
        integration,
        [
            event("m-dealer2", "sale", now - timedelta(days=10), "400000"),
            event("m-branch1", "sale", now - timedelta(days=100), "900000"),  # outside 90d
            event("m-other", "sale", now - timedelta(days=1), "2000000"),
            event("m-none", "sale", now - timedelta(days=1), "2000000"),
        ],
    )
    rule = "kind = DEALER and org.sum(sale.amount, 90d) > 1000000"
    created = await create(admin, "dealer_group_over_target", rule)
    assert created["rule"] == rule
    assert created["condition"]["all"][1]["metric"]["scope"] == "organization"
    assert await members_of(admin, "dealer_group_over_target") == ["m-other"]

    # a branch's sale: the roll-ups of its dealer and of the group move, not the sibling's
    await record_accepted(integration, [event("m-branch1", "sale", now - timedelta(hours=1), "700000")])
    # group: 400,000 + 700,000; dealer1 and branch1: 700,000
    assert await members_of(admin, "dealer_group_over_target") == ["m-group", "m-other"]
    await record_accepted(integration, [event("m-branch1", "sale", now - timedelta(minutes=5), "350000")])
    # branch1 and dealer1: 1,050,000; group: 1,450,000; dealer2 alone: 400,000
    assert await members_of(admin, "dealer_group_over_target") == [
        "m-branch1",
        "m-dealer1",
        "m-group",
        "m-other",
    ]
    # branch1 moved to the top takes its sales out of dealer1's and the group's roll-ups
    await integration.data(ORGS, {"o": [org("branch1", None)]})
    assert await members_of(admin, "dealer_group_over_target") == ["m-branch1", "m-other"]
    # a member joining the group brings its sales into the roll-ups of the group's members
    await integration.data(
        UPSERT, {"m": [{"externalId": "m-other", "kind": "DEALER", "organizationExternalId": "dealer2"}]}
    )
    assert await members_of(admin, "dealer_group_over_target") == [
        "m-branch1",
        "m-dealer2",
        "m-group",
        "m-other",
    ]


async def test_in_organization_reaches_the_organizations_below(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await group_with_dealers(integration)
    created = await create(admin, "dealer1_network", 'in_organization("dealer1")')
    assert created["condition"] == {"organization": "dealer1", "descendants": True}
    assert await members_of(admin, "dealer1_network") == ["m-branch1", "m-dealer1"]
    await create(admin, "dealer1_itself", 'organization = "dealer1"')
    assert await members_of(admin, "dealer1_itself") == ["m-dealer1"]

    # a new branch below dealer1, and a member in it: in at once
    await integration.data(ORGS, {"o": [org("branch2", "dealer1")]})
    await integration.data(UPSERT, {"m": [{"externalId": "m-branch2", "organizationExternalId": "branch2"}]})
    assert await members_of(admin, "dealer1_network") == ["m-branch1", "m-branch2", "m-dealer1"]
    # dealer1 moves under dealer2: unchanged for dealer1's network; group's network keeps everyone
    await create(admin, "group_network", 'in_organization("group")')
    assert len(await members_of(admin, "group_network")) == 5
    await integration.data(ORGS, {"o": [org("dealer1", None)]})
    assert await members_of(admin, "group_network") == ["m-dealer2", "m-group"]


async def test_concurrent_batches_fanning_out_over_one_organization_never_deadlock(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    """Each batch locks its members and the members its roll-ups reach in one ordered statement:
    taken in two (its own members, then the fan-out) they deadlocked under concurrent batches."""
    await integration.data(ORGS, {"o": [org("chain"), org("store1", "chain"), org("store2", "chain")]})
    staff = [f"s{i:02d}" for i in range(12)]
    await integration.data(
        UPSERT,
        {
            "m": [
                {"externalId": m, "organizationExternalId": f"store{1 + i % 2}"} for i, m in enumerate(staff)
            ]
        },
    )
    await create(admin, "chain_selling", "org.sum(sale.amount, 30d) >= 50")
    at = clock.now() - timedelta(minutes=1)
    await asyncio.gather(*(record_accepted(integration, [event(m, "sale", at, "10")]) for m in staff))
    # each store sold 60 (>= 50): every member of both stores is in, whichever batch came last
    assert await members_of(admin, "chain_selling") == staff
    await integration.data(UPSERT, {"m": [{"externalId": "boss", "organizationExternalId": "chain"}]})
    assert await members_of(admin, "chain_selling") == ["boss", *staff]
