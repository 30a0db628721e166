"""Tier ladders through the real GraphQL endpoint: set, read, Member.tier, refusals, delete."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.support import ShiftableClock
from tests.support.events import event, join, record_accepted
from tests.support.graphql import GraphQLClient

LADDER_FIELDS = "qualifier tiers { key name threshold earnMultiplier } downgrade graceDays"
SET = f"mutation($i: TierLadderInput!) {{ setTierLadder(input: $i) {{ {LADDER_FIELDS} }} }}"
READ = f"{{ tierLadder {{ {LADDER_FIELDS} }} }}"
DELETE = "mutation { deleteTierLadder }"
MEMBER_TIER = """
query($id: String!) {
  member(externalId: $id) {
    tier { tier { key } since qualifyingValue next { key threshold } toNext keptUntil }
    segments { key kind }
  }
}"""
CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"


def ladder(**changes: Any) -> dict[str, Any]:
    return {
        "qualifier": "sum(purchase.amount, 365d)",
        "tiers": [
            {"key": "bronze", "name": "Bronze", "threshold": "0"},
            {"key": "silver", "name": "Silver", "threshold": "100"},
            {"key": "gold", "name": "Gold", "threshold": "500", "earnMultiplier": "1.5"},
        ],
        "downgrade": "ONE_DOWN",
        "graceDays": 30,
        **changes,
    }


async def test_a_ladder_is_set_read_and_held_by_every_member(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given members, one who spent 120.5
    await join(integration, "a", "b")
    await record_accepted(integration, [event("a", "purchase", clock.now() - timedelta(minutes=1), "120.5")])

    # when the admin sets a ladder and reads it back, and the members are read
    set_ = (await admin.data(SET, {"i": ladder()}))["setTierLadder"]
    read = (await admin.data(READ))["tierLadder"]
    a = (await admin.data(MEMBER_TIER, {"id": "a"}))["member"]
    b = (await admin.data(MEMBER_TIER, {"id": "b"}))["member"]

    # then the ladder is as given (defaults filled), and each member holds one tier
    assert (
        set_
        == read
        == {
            "qualifier": "sum(purchase.amount, 365d)",
            "tiers": [
                {"key": "bronze", "name": "Bronze", "threshold": "0", "earnMultiplier": "1"},
                {"key": "silver", "name": "Silver", "threshold": "100", "earnMultiplier": "1"},
                {"key": "gold", "name": "Gold", "threshold": "500", "earnMultiplier": "1.5"},
            ],
            "downgrade": "ONE_DOWN",
            "graceDays": 30,
        }
    )
    assert a["tier"]["tier"] == {"key": "silver"}
    assert a["tier"]["qualifyingValue"] == "120.5"
    assert a["tier"]["next"] == {"key": "gold", "threshold": "500"}
    assert a["tier"]["toNext"] == "379.5"
    assert a["tier"]["keptUntil"] is None
    assert {"key": "tier-silver", "kind": "TIER"} in a["segments"]
    assert b["tier"]["tier"] == {"key": "bronze"}
    assert (b["tier"]["qualifyingValue"], b["tier"]["toNext"]) == ("0", "100")


async def test_the_top_tier_has_no_next_and_deleting_the_ladder_clears_member_tier(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a gold member
    await join(integration, "g")
    await admin.data(SET, {"i": ladder()})
    await record_accepted(integration, [event("g", "purchase", clock.now() - timedelta(minutes=1), "600")])
    top = (await admin.data(MEMBER_TIER, {"id": "g"}))["member"]["tier"]

    # when the ladder is deleted
    deleted = (await admin.data(DELETE))["deleteTierLadder"]

    # then Member.tier and tierLadder are null, and the TIER segments are gone
    assert top["tier"] == {"key": "gold"}
    assert (top["next"], top["toNext"]) == (None, None)
    assert deleted is True
    after = (await admin.data(MEMBER_TIER, {"id": "g"}))["member"]
    assert after == {"tier": None, "segments": []}
    assert (await admin.data(READ))["tierLadder"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"qualifier": "sum(purchase.amount, 365x)"}, "qualifier: column 22: "),
        ({"graceDays": -1}, "graceDays: "),
        ({"tiers": []}, "tiers: a ladder needs at least one tier"),
        ({"tiers": [{"key": "a", "name": "A", "threshold": "5"}]}, "tiers[0].threshold: "),
        (
            {"tiers": [{"key": "a", "name": "A", "threshold": "0", "earnMultiplier": "0"}]},
            "tiers[0].earnMultiplier",
        ),
    ],
)
async def test_a_bad_ladder_is_bad_user_input_naming_the_argument_and_stores_nothing(
    admin: GraphQLClient, changes: dict[str, Any], message: str
) -> None:
    error = await admin.error(SET, {"i": ladder(**changes)})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith(message), error["message"]
    assert (await admin.data(READ))["tierLadder"] is None
    segments = (await admin.data("{ segments { key } }"))["segments"]
    assert segments == []


async def test_tier_keys_are_refused_to_create_segment_and_an_integration_key_cannot_set_a_ladder(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await admin.data(SET, {"i": ladder()})
    refused = await admin.error(
        CREATE, {"i": {"key": "tier-x", "name": "X", "kind": "DYNAMIC", "rule": "true"}}
    )
    assert refused["extensions"]["code"] == "BAD_USER_INPUT"
    assert refused["message"].startswith("key: 'tier-x': keys starting with 'tier-'")
    forbidden = await integration.error(SET, {"i": ladder()})
    assert forbidden["extensions"]["code"] == "FORBIDDEN"


async def test_a_tier_segment_has_triggers_a_change_log_and_analytics(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a ladder and a welcome bonus on entering tier-gold, set through GraphQL
    await join(integration, "w")
    await admin.data(SET, {"i": ladder()})
    await admin.data(
        """mutation($t: [SegmentTriggerInput!]!) {
             setSegmentTriggers(segmentKey: "tier-gold", triggers: $t) { on }
           }""",
        {"t": [{"on": "ENTER", "action": "AWARD_POINTS", "points": 100, "reason": "welcome to Gold"}]},
    )

    # when a purchase of 500 lifts the member to gold
    await record_accepted(integration, [event("w", "purchase", clock.now() - timedelta(minutes=1), "500")])

    # then the segment logged the change, the bonus was paid, and analytics count the entry
    gold = (
        await admin.data(
            '{ segment(key: "tier-gold") { kind size rule changes { memberExternalId change } } }'
        )
    )["segment"]
    assert gold == {
        "kind": "TIER",
        "size": 1,
        "rule": None,
        "changes": [{"memberExternalId": "w", "change": "ENTERED"}],
    }
    member = (await admin.data('{ member(externalId: "w") { pointsBalance } }'))["member"]
    assert member["pointsBalance"] == 500 + 100
    today = clock.now().date().isoformat()
    analytics = (
        await admin.data(
            f'{{ segmentAnalytics(key: "tier-gold", from: "{today}", to: "{today}") {{ size entered }} }}'
        )
    )["segmentAnalytics"]
    assert analytics == {"size": 1, "entered": 1}
