"""Issuing coupon codes through the GraphQL endpoint: a trigger's ISSUE_COUPON, an experiment arm's
ISSUE_COUPON, and a coupon reward's redeemReward (docs/promotions.md)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import pytest

from tests.support import ShiftableClock
from tests.support.coupons import (
    POOL,
    SEGMENT,
    TRIGGERS,
    coupons_of,
    issue_on_joining,
    join,
    pool_with_codes,
)
from tests.support.graphql import GraphQLClient
from tests.support.rewards import REDEEM as REDEEM_REWARD
from tests.support.rewards import SET_REWARD, balance, give_points, reward_input, stock

EXPERIMENT = "mutation($i: ExperimentInput!) { createExperiment(input: $i) { key } }"
EXPOSE = """
mutation($k: String!, $m: String!) { exposeExperimentMember(key: $k, memberExternalId: $m) { variant } }"""
REDEEM_WITH_COUPON = """
mutation($m: String!, $r: String!, $k: String!) {
  redeemReward(memberExternalId: $m, rewardKey: $r, idempotencyKey: $k) {
    id points reward { key stock couponPoolKey } coupon { code poolKey status expiresAt }
  }
}"""


async def test_a_trigger_issues_one_code_per_entry_and_logs_an_exhausted_pool(
    admin: GraphQLClient, integration: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    # given two codes, and a trigger issuing one to each member entering `everyone`
    await pool_with_codes(admin, ["W-1", "W-2"])
    await issue_on_joining(admin)
    # when three members join
    with caplog.at_level(logging.WARNING):
        await join(integration, "ana", "ben", "cem")
    # then the first two hold a code each, the third none (logged), and the pool is used up
    assert [c["code"] for c in await coupons_of(integration, "ana")] == ["W-1"]
    assert [c["code"] for c in await coupons_of(integration, "ben")] == ["W-2"]
    assert await coupons_of(integration, "cem") == []
    assert "coupon pool 'welcome' has no code left" in caplog.text
    pool = (await admin.data(POOL, {"k": "welcome"}))["couponPool"]
    assert (pool["available"], pool["issued"], pool["redeemed"]) == (0, 2, 0)


async def test_a_trigger_code_expires_by_the_pool_rule(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await pool_with_codes(admin, ["W-1"], validDays=7)
    await issue_on_joining(admin)
    await join(integration, "ana")
    (coupon,) = await coupons_of(integration, "ana")
    issued, expires = coupon["issuedAt"], coupon["expiresAt"]
    assert datetime.fromisoformat(expires) - datetime.fromisoformat(issued) == timedelta(days=7)
    assert coupon["status"] == "ISSUED"


@pytest.mark.parametrize(
    ("trigger", "code", "message"),
    [
        (
            {"couponPoolKey": "nope"},
            "NOT_FOUND",
            "triggers[0].couponPoolKey: no coupon pool 'nope' in this program",
        ),
        ({}, "BAD_USER_INPUT", "triggers[0].couponPoolKey: required by ISSUE_COUPON"),
        (
            {"couponPoolKey": "welcome", "tag": "x"},
            "BAD_USER_INPUT",
            "triggers[0].tag: not used by ISSUE_COUPON",
        ),
    ],
)
async def test_an_issue_coupon_trigger_names_its_faulty_field(
    admin: GraphQLClient, trigger: dict[str, str], code: str, message: str
) -> None:
    await pool_with_codes(admin, ["W-1"])
    segment = {"key": "everyone", "name": "Everyone", "kind": "DYNAMIC", "rule": "pointsBalance >= 0"}
    await admin.data(SEGMENT, {"i": segment})
    error = await admin.error(
        TRIGGERS, {"k": "everyone", "t": [{"on": "ENTER", "action": "ISSUE_COUPON", **trigger}]}
    )
    assert (error["extensions"]["code"], error["message"]) == (code, message)


async def test_an_experiment_arm_issues_a_code_at_exposure(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given ten members in `everyone` and an experiment whose arm b issues a welcome code
    members = [f"m{i}" for i in range(10)]
    await pool_with_codes(admin, [f"W-{i}" for i in range(10)])
    segment = {"key": "everyone", "name": "Everyone", "kind": "DYNAMIC", "rule": "pointsBalance >= 0"}
    await admin.data(SEGMENT, {"i": segment})
    await join(integration, *members)
    variants = [
        {"key": "a", "weight": 50, "action": {"type": "NONE"}},
        {"key": "b", "weight": 50, "action": {"type": "ISSUE_COUPON", "couponPoolKey": "welcome"}},
    ]
    definition = {
        "key": "spring",
        "name": "Spring",
        "segmentKey": "everyone",
        "goalEventType": "purchase",
        "conversionDays": 7,
        "holdoutPercent": 0,
        "variants": variants,
    }
    await admin.data(EXPERIMENT, {"i": definition})
    # when each member is exposed twice
    arms = {
        m: (await integration.data(EXPOSE, {"k": "spring", "m": m}))["exposeExperimentMember"]
        for m in members
    }
    for m in members:
        await integration.data(EXPOSE, {"k": "spring", "m": m})
    # then each member of arm b holds exactly one code, arm a none
    for m, exposure in arms.items():
        held = await coupons_of(integration, m)
        assert len(held) == (1 if exposure["variant"] == "b" else 0), (m, exposure)
    assert 0 < sum(e["variant"] == "b" for e in arms.values()) < 10


async def test_an_experiment_naming_an_unknown_pool_is_not_found(admin: GraphQLClient) -> None:
    segment = {"key": "everyone", "name": "Everyone", "kind": "DYNAMIC", "rule": "pointsBalance >= 0"}
    await admin.data(SEGMENT, {"i": segment})
    definition = {
        "key": "spring",
        "name": "Spring",
        "segmentKey": "everyone",
        "goalEventType": "purchase",
        "conversionDays": 7,
        "holdoutPercent": 10,
        "variants": [{"key": "b", "weight": 1, "action": {"type": "ISSUE_COUPON", "couponPoolKey": "nope"}}],
    }
    error = await admin.error(EXPERIMENT, {"i": definition})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "variants[0].action.couponPoolKey: no coupon pool 'nope' in this program",
    )


async def test_redeem_reward_returns_a_code_once_per_key_and_refuses_when_the_pool_is_empty(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a coupon reward of 100 points backed by one code, and ana with 1000 points
    await pool_with_codes(admin, ["GIFT-1"], validDays=14)
    await give_points(integration, clock, {"ana": 1000})
    await admin.data(
        SET_REWARD, {"i": reward_input("voucher", costPoints=100, stock=5, couponPoolKey="welcome")}
    )
    # when ana redeems it, then retries with the same key
    first = (await integration.data(REDEEM_WITH_COUPON, {"m": "ana", "r": "voucher", "k": "k1"}))[
        "redeemReward"
    ]
    again = (await integration.data(REDEEM_WITH_COUPON, {"m": "ana", "r": "voucher", "k": "k1"}))[
        "redeemReward"
    ]
    # then she holds the code, returned both times
    assert first["coupon"]["code"] == "GIFT-1"
    assert (first["coupon"]["poolKey"], first["coupon"]["status"]) == ("welcome", "ISSUED")
    assert first["reward"]["couponPoolKey"] == "welcome"
    assert again["id"] == first["id"]
    assert again["coupon"] == first["coupon"]
    assert [c["code"] for c in await coupons_of(integration, "ana")] == ["GIFT-1"]
    # and a second redemption finds the pool empty: COUPON_POOL_EXHAUSTED, nothing spent or taken
    error = await integration.error(REDEEM_WITH_COUPON, {"m": "ana", "r": "voucher", "k": "k2"})
    assert (error["extensions"]["code"], error["message"]) == (
        "COUPON_POOL_EXHAUSTED",
        "coupon pool 'welcome' has no code left to issue",
    )
    assert await balance(integration, "ana") == 900
    assert await stock(admin, "voucher") == 4
    # a plain reward answers no coupon
    await admin.data(SET_REWARD, {"i": reward_input("mug", costPoints=100, stock=5)})
    plain = (await integration.data(REDEEM_REWARD, {"m": "ana", "r": "mug", "k": "k3"}))["redeemReward"]
    assert plain["reward"]["key"] == "mug"


async def test_a_reward_naming_an_unknown_pool_is_not_found(admin: GraphQLClient) -> None:
    error = await admin.error(SET_REWARD, {"i": reward_input("voucher", couponPoolKey="nope")})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "couponPoolKey: no coupon pool 'nope' in this program",
    )


async def test_parallel_redemptions_of_a_coupon_reward_share_out_the_codes(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given ten members with 1000 points each, and a coupon reward whose pool holds five codes
    members = [f"m{i}" for i in range(10)]
    await pool_with_codes(admin, [f"GIFT-{i}" for i in range(5)])
    await give_points(integration, clock, dict.fromkeys(members, 1000))
    await admin.data(
        SET_REWARD, {"i": reward_input("voucher", costPoints=100, stock=10, couponPoolKey="welcome")}
    )
    # when all ten redeem at once
    results = await asyncio.gather(
        *(integration.execute(REDEEM_WITH_COUPON, {"m": m, "r": "voucher", "k": f"k-{m}"}) for m in members)
    )
    # then five get a distinct code each, five are refused and pay nothing
    codes = [r["data"]["redeemReward"]["coupon"]["code"] for r in results if "errors" not in r]
    refused = [r["errors"][0]["extensions"]["code"] for r in results if "errors" in r]
    assert sorted(codes) == [f"GIFT-{i}" for i in range(5)]
    assert refused == ["COUPON_POOL_EXHAUSTED"] * 5
    assert await stock(admin, "voucher") == 5
    assert sorted([await balance(integration, m) for m in members]) == [900] * 5 + [1000] * 5
