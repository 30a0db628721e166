"""Rewards by segment through the GraphQL endpoint: only members of a listed segment may redeem."""

from __future__ import annotations

from typing import Any

from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient
from tests.support.rewards import REDEEM, balance, give_points, reward_input, stock

SET_REWARD = "mutation($i: RewardInput!) { setReward(input: $i) { key segmentKeys } }"
SEGMENT = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"
DELETE_SEGMENT = "mutation($k: String!) { deleteSegment(key: $k) }"
TAG = 'mutation($m: String!) { addTag(memberExternalId: $m, tag: "vip") { externalId } }'


async def vip_segment(admin: GraphQLClient) -> None:
    rule: dict[str, Any] = {"key": "vip", "name": "VIPs", "kind": "DYNAMIC", "rule": 'has_tag("vip")'}
    await admin.data(SEGMENT, {"i": rule})


async def test_only_members_of_a_listed_segment_may_redeem(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a reward for the VIP segment, and ana a VIP while ben is not
    await give_points(integration, clock, {"ana": 500, "ben": 500})
    await vip_segment(admin)
    await admin.data(TAG, {"m": "ana"})
    stored = await admin.data(SET_REWARD, {"i": reward_input(segmentKeys=["vip"])})
    assert stored["setReward"] == {"key": "mug", "segmentKeys": ["vip"]}

    # when both redeem
    await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "a-1"})
    error = await integration.error(REDEEM, {"m": "ben", "r": "mug", "k": "b-1"})

    # then ben is refused and keeps his points; the stock moved once
    assert error["extensions"] == {"code": "FORBIDDEN", "reason": "NOT_ELIGIBLE"}
    assert error["message"] == "rewardKey: reward 'mug' is only for members of vip"
    assert (await balance(integration, "ana"), await balance(integration, "ben")) == (200, 500)
    assert await stock(admin, "mug") == 4


async def test_a_reward_listing_no_segment_is_for_everyone(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ben": 500})
    await vip_segment(admin)
    await admin.data(SET_REWARD, {"i": reward_input(segmentKeys=["vip"])})
    replaced = await admin.data(SET_REWARD, {"i": reward_input(segmentKeys=[])})
    assert replaced["setReward"]["segmentKeys"] == []
    await integration.data(REDEEM, {"m": "ben", "r": "mug", "k": "b-1"})
    assert await balance(integration, "ben") == 200


async def test_an_unknown_segment_is_refused_and_nothing_stored(admin: GraphQLClient) -> None:
    error = await admin.error(SET_REWARD, {"i": reward_input(segmentKeys=["nope"])})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "segmentKeys: no segment 'nope' in this program",
    )
    assert (await admin.data('{ reward(key: "mug") { key } }'))["reward"] is None


async def test_a_segment_a_reward_is_for_cannot_be_deleted(admin: GraphQLClient) -> None:
    await vip_segment(admin)
    await admin.data(SET_REWARD, {"i": reward_input(segmentKeys=["vip"])})
    error = await admin.error(DELETE_SEGMENT, {"k": "vip"})
    assert (error["extensions"]["code"], error["message"]) == (
        "CONFLICT",
        "key: segment 'vip' is what rewards mug are for; change those first",
    )
    await admin.data(SET_REWARD, {"i": reward_input(segmentKeys=None)})
    assert (await admin.data(DELETE_SEGMENT, {"k": "vip"}))["deleteSegment"] is True
