"""The rewards catalogue through the GraphQL endpoint: stock, redemptions, priority windows."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta, timezone
from typing import Any

import httpx
import pytest

from api.runtime import Services
from domain.auth.scopes import Scope
from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.rewards import (
    ISSUE,
    REDEEM,
    REMOVE_WINDOW,
    RESTOCK,
    REWARD,
    REWARDS,
    SET_REWARD,
    SET_WINDOW,
    balance,
    give_points,
    reward_input,
    stock,
)


async def member_client(client: httpx.AsyncClient, integration: GraphQLClient, member: str) -> GraphQLClient:
    token: str = (await integration.data(ISSUE, {"m": member}))["issueMemberToken"]["token"]
    return GraphQLClient(client, token)


# ---------- the catalogue ----------


async def test_set_reward_creates_then_replaces_by_key(admin: GraphQLClient) -> None:
    created = await admin.data(SET_REWARD, {"i": reward_input()})
    assert created["setReward"] == {
        "key": "mug",
        "name": "Mug",
        "description": "A ceramic mug",
        "costPoints": 300,
        "stock": 5,
        "active": True,
    }
    await admin.data(SET_REWARD, {"i": reward_input("cap", name=" Cap ", costPoints=100, stock=0)})
    updated = await admin.data(SET_REWARD, {"i": reward_input(name="Big mug", costPoints=450, active=False)})
    assert updated["setReward"] == {
        "key": "mug",
        "name": "Big mug",
        "description": "A ceramic mug",
        "costPoints": 450,
        "stock": 5,
        "active": False,
    }
    assert (await admin.data(REWARD, {"k": "cap"}))["reward"]["name"] == "Cap"
    assert (await admin.data(REWARDS, {"a": False}))["rewards"] == [
        {"key": "cap", "active": True},
        {"key": "mug", "active": False},
    ]
    assert (await admin.data(REWARDS, {"a": True}))["rewards"] == [{"key": "cap", "active": True}]
    assert (await admin.data(REWARD, {"k": "nope"}))["reward"] is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": "bad key"}, "key: 'bad key' does not match [A-Za-z0-9_-]{1,64}"),
        ({"key": "k" * 65}, f"key: {'k' * 65!r} does not match [A-Za-z0-9_-]{{1,64}}"),
        ({"name": "  "}, "name: must be 1 to 200 characters"),
        ({"costPoints": 0}, "costPoints: must be between 1 and 1000000000, got 0"),
        ({"costPoints": 1_000_000_001}, "costPoints: must be between 1 and 1000000000, got 1000000001"),
        ({"stock": -1}, "stock: must be between 0 and 1000000000, got -1"),
        ({"stock": 1_000_000_001}, "stock: must be between 0 and 1000000000, got 1000000001"),
        ({"description": "d" * 2001}, "description: longer than 2000 characters"),
    ],
)
async def test_bad_reward_input_names_the_field(
    admin: GraphQLClient, overrides: dict[str, Any], message: str
) -> None:
    error = await admin.error(SET_REWARD, {"i": reward_input(**overrides)})
    assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)
    assert (await admin.data(REWARDS, {"a": False}))["rewards"] == []


async def test_restocking_adds_and_removes_units_but_never_below_zero(admin: GraphQLClient) -> None:
    await admin.data(SET_REWARD, {"i": reward_input(stock=2)})
    assert (await admin.data(RESTOCK, {"k": "mug", "a": 8}))["restockReward"] == {"key": "mug", "stock": 10}
    assert (await admin.data(RESTOCK, {"k": "mug", "a": -10}))["restockReward"] == {"key": "mug", "stock": 0}
    error = await admin.error(RESTOCK, {"k": "mug", "a": -1})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "add: reward 'mug' has 0 in stock; adding -1 would leave it outside 0 to 1000000000",
    )
    zero = await admin.error(RESTOCK, {"k": "mug", "a": 0})
    assert zero["message"] == "add: must be a non-zero number of units between -1000000000 and 1000000000"
    unknown = await admin.error(RESTOCK, {"k": "nope", "a": 1})
    assert (unknown["extensions"]["code"], unknown["message"]) == (
        "NOT_FOUND",
        "key: no reward 'nope' in this program",
    )


async def test_catalogue_writes_need_program_write(integration: GraphQLClient) -> None:
    writes: list[tuple[str, dict[str, Any]]] = [
        (SET_REWARD, {"i": reward_input()}),
        (RESTOCK, {"k": "mug", "a": 1}),
        (SET_WINDOW, window_vars(ShiftableClock())),
        (REMOVE_WINDOW, {"r": "mug", "s": "2031-01-01T00:00:00+00:00"}),
    ]
    for query, variables in writes:
        error = await integration.error(query, variables)
        assert (error["extensions"]["code"], error["message"].split(" ", 1)[1]) == (
            "FORBIDDEN",
            "needs the marketing:write scope (roles OWNER, ADMIN, MARKETER); this API key lacks it",
        )


async def test_members_see_active_rewards_only(
    client: httpx.AsyncClient, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 10})
    await admin.data(SET_REWARD, {"i": reward_input("cap")})
    await admin.data(SET_REWARD, {"i": reward_input("mug", active=False)})
    ana = await member_client(client, integration, "ana")
    assert (await ana.data(REWARDS, {"a": False}))["rewards"] == [{"key": "cap", "active": True}]
    assert (await ana.data(REWARD, {"k": "mug"}))["reward"] is None
    assert (await ana.data(REWARD, {"k": "cap"}))["reward"]["costPoints"] == 300
    error = await ana.error(SET_REWARD, {"i": reward_input()})
    assert error["extensions"]["code"] == "FORBIDDEN"


# ---------- redeeming ----------


async def test_redeeming_spends_the_cost_and_one_unit(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 500})
    await admin.data(SET_REWARD, {"i": reward_input(stock=2)})
    data = await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "order-1"})
    assert data["redeemReward"] | {"id": None} == {
        "id": None,
        "memberExternalId": "ana",
        "points": 300,
        "idempotencyKey": "order-1",
        "reward": {"key": "mug", "stock": 1},
        "ledgerEntry": {
            "points": -300,
            "status": "POSTED",
            "kind": "REDEMPTION",
            "reason": "reward mug: Mug",
        },
    }
    assert await balance(integration, "ana") == 200
    assert await stock(admin, "mug") == 1


async def test_the_last_unit_goes_once_then_out_of_stock(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 500, "ben": 500})
    await admin.data(SET_REWARD, {"i": reward_input(stock=1)})
    await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "a-1"})
    error = await integration.error(REDEEM, {"m": "ben", "r": "mug", "k": "b-1"})
    assert error["extensions"] == {"code": "CONFLICT", "reason": "OUT_OF_STOCK"}
    assert error["message"] == "rewardKey: reward 'mug' is out of stock"
    assert (await balance(integration, "ana"), await balance(integration, "ben")) == (200, 500)
    assert await stock(admin, "mug") == 0


async def test_insufficient_points_change_neither_balance_nor_stock(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 299})
    await admin.data(SET_REWARD, {"i": reward_input(stock=3)})
    error = await integration.error(REDEEM, {"m": "ana", "r": "mug", "k": "a-1"})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "points: the redemption of 300 exceeds the balance of 299",
    )
    assert (await balance(integration, "ana"), await stock(admin, "mug")) == (299, 3)


async def test_an_idempotency_key_names_one_redemption(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 1000, "ben": 1000})
    await admin.data(SET_REWARD, {"i": reward_input(stock=2)})
    await admin.data(SET_REWARD, {"i": reward_input("cap", costPoints=10)})
    first = (await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "k1"}))["redeemReward"]
    replay = (await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "k1"}))["redeemReward"]
    assert replay["id"] == first["id"]
    assert replay["reward"] == {"key": "mug", "stock": 1}
    other = await integration.error(REDEEM, {"m": "ana", "r": "cap", "k": "k1"})
    assert (other["extensions"]["code"], other["message"]) == (
        "CONFLICT",
        "idempotencyKey: 'k1' was already used for a different request",
    )
    # another member's key is its own: the same text redeems again
    bens = (await integration.data(REDEEM, {"m": "ben", "r": "mug", "k": "k1"}))["redeemReward"]
    assert bens["id"] != first["id"]
    # stock is now 0, yet a replay still answers with the first redemption
    again = (await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "k1"}))["redeemReward"]
    assert again["id"] == first["id"]
    assert (await balance(integration, "ana"), await balance(integration, "ben")) == (700, 700)
    assert await stock(admin, "mug") == 0


async def test_concurrent_retries_of_one_key_redeem_once(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 1000})
    await admin.data(SET_REWARD, {"i": reward_input(stock=5)})
    results = await asyncio.gather(
        *(integration.execute(REDEEM, {"m": "ana", "r": "mug", "k": "retry"}) for _ in range(8))
    )
    assert {r["data"]["redeemReward"]["id"] for r in results} == {results[0]["data"]["redeemReward"]["id"]}
    assert (await balance(integration, "ana"), await stock(admin, "mug")) == (700, 4)


@pytest.mark.parametrize(
    ("member", "reward", "key", "code", "message"),
    [
        ("ana", "nope", "k", "NOT_FOUND", "rewardKey: no reward 'nope' in this program"),
        ("ana", "old", "k", "BAD_USER_INPUT", "rewardKey: reward 'old' is not active"),
        ("zed", "mug", "k", "NOT_FOUND", "memberExternalId: no member 'zed' in this program"),
        ("ana", "mug", " ", "BAD_USER_INPUT", "idempotencyKey: must not be empty"),
        ("ana", "mug", "k" * 201, "BAD_USER_INPUT", "idempotencyKey: longer than 200 characters"),
    ],
)
async def test_unknown_or_inactive_rewards_are_refused(
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
    member: str,
    reward: str,
    key: str,
    code: str,
    message: str,
) -> None:
    await give_points(integration, clock, {"ana": 1000})
    await admin.data(SET_REWARD, {"i": reward_input()})
    await admin.data(SET_REWARD, {"i": reward_input("old", active=False)})
    error = await integration.error(REDEEM, {"m": member, "r": reward, "k": key})
    assert (error["extensions"]["code"], error["message"]) == (code, message)
    assert await balance(integration, "ana") == 1000


async def test_redeem_points_may_not_use_the_reward_prefix(
    integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 10})
    error = await integration.error(
        'mutation { redeemPoints(memberExternalId: "ana", points: 1, reason: "x", idempotencyKey: "reward:x") '
        "{ id } }"
    )
    assert error["message"] == "idempotencyKey: the prefix 'reward:' is reserved for reward redemptions"


async def test_a_member_token_redeems_only_for_itself(
    client: httpx.AsyncClient, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 500, "ben": 500})
    await admin.data(SET_REWARD, {"i": reward_input()})
    ana = await member_client(client, integration, "ana")
    mine = await ana.data(REDEEM, {"m": "ana", "r": "mug", "k": "app-1"})
    assert mine["redeemReward"]["ledgerEntry"]["points"] == -300
    error = await ana.error(REDEEM, {"m": "ben", "r": "mug", "k": "app-2"})
    assert (error["extensions"]["code"], error["message"]) == (
        "FORBIDDEN",
        "a member token redeems only rewards for its own member",
    )
    assert (await balance(integration, "ana"), await balance(integration, "ben")) == (200, 500)


async def test_an_integration_needs_the_redeem_scope(
    client: httpx.AsyncClient,
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
) -> None:
    await give_points(integration, clock, {"ana": 500})
    await admin.data(SET_REWARD, {"i": reward_input()})
    reader = await services.auth.create_api_key(program.key, "reader", frozenset({Scope.MEMBERS_READ}))
    error = await GraphQLClient(client, reader.key).error(REDEEM, {"m": "ana", "r": "mug", "k": "x"})
    assert (error["extensions"]["code"], error["message"]) == (
        "FORBIDDEN",
        "redeemReward needs the points:redeem scope (roles OWNER, ADMIN); this API key lacks it",
    )
    assert await balance(integration, "ana") == 500


async def test_fifty_members_race_for_ten_units(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    """Given 50 members with 1000 points each and 10 units, when all 50 redeem at once,
    then exactly 10 succeed, the stock ends at 0 and only the winners paid."""
    members = [f"m{i:02d}" for i in range(50)]
    await give_points(integration, clock, dict.fromkeys(members, 1000))
    await admin.data(SET_REWARD, {"i": reward_input(costPoints=250, stock=10)})

    results = await asyncio.gather(
        *(integration.execute(REDEEM, {"m": m, "r": "mug", "k": f"race-{m}"}) for m in members)
    )

    winners = {m for m, r in zip(members, results, strict=True) if "errors" not in r}
    refusals = [r["errors"][0] for r in results if "errors" in r]
    assert len(winners) == 10
    assert {(e["extensions"]["code"], e["message"]) for e in refusals} == {
        ("CONFLICT", "rewardKey: reward 'mug' is out of stock")
    }
    assert len(refusals) == 40
    assert await stock(admin, "mug") == 0
    ledgers = await admin.data(
        """{ members(first: 100) { edges { node {
             externalId pointsBalance ledger(first: 10) { edges { node { points kind } } } } } } }"""
    )
    nodes = {e["node"]["externalId"]: e["node"] for e in ledgers["members"]["edges"]}
    assert sorted(nodes) == members
    for member, node in nodes.items():
        entries = [e["node"] for e in node["ledger"]["edges"]]
        expected = 750 if member in winners else 1000
        assert node["pointsBalance"] == expected, member
        assert sum(e["points"] for e in entries) == expected, member
        assert [e["kind"] for e in entries] == (
            ["REDEMPTION", "ACCRUAL"] if member in winners else ["ACCRUAL"]
        ), member


# ---------- priority windows ----------


def window_vars(clock: ShiftableClock, **overrides: Any) -> dict[str, Any]:
    starts = clock.now() + timedelta(minutes=10)
    return {
        "r": "mug",
        "b": "points",
        "p": "ALL_TIME",
        "n": 2,
        "s": starts.isoformat(),
        "e": (starts + timedelta(hours=1)).isoformat(),
    } | overrides


async def test_windows_are_listed_on_the_reward_and_replaced_by_start(
    admin: GraphQLClient, clock: ShiftableClock
) -> None:
    await admin.data(SET_REWARD, {"i": reward_input()})
    first = window_vars(clock)
    await admin.data(SET_WINDOW, first)
    # a year on, at midnight in UTC+1: stored and answered in UTC
    starts = (clock.now() + timedelta(days=365)).astimezone(timezone(timedelta(hours=1)))
    starts = starts.replace(hour=0, minute=0, second=0, microsecond=0)
    in_utc = starts.astimezone(UTC).isoformat()
    later = window_vars(clock, s=starts.isoformat(), e=(starts + timedelta(days=1)).isoformat(), p="DAILY")
    await admin.data(SET_WINDOW, later)
    replaced = (await admin.data(SET_WINDOW, first | {"n": 7}))["setRewardWindow"]
    assert replaced["windows"] == [
        {
            "boardKey": "points",
            "period": "ALL_TIME",
            "topN": 7,
            "startsAt": first["s"],
            "endsAt": first["e"],
            "frozen": False,
        },
        {
            "boardKey": "points",
            "period": "DAILY",
            "topN": 2,
            "startsAt": in_utc,
            "endsAt": (starts + timedelta(days=1)).astimezone(UTC).isoformat(),
            "frozen": False,
        },
    ]
    removed = await admin.data(REMOVE_WINDOW, {"r": "mug", "s": first["s"]})
    assert removed["removeRewardWindow"]["windows"] == [{"startsAt": in_utc}]
    error = await admin.error(REMOVE_WINDOW, {"r": "mug", "s": first["s"]})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        f"startsAt: reward 'mug' has no window starting at {first['s']}",
    )


async def test_bad_windows_name_the_field(admin: GraphQLClient, clock: ShiftableClock) -> None:
    await admin.data(SET_REWARD, {"i": reward_input()})
    base = window_vars(clock)
    await admin.data(SET_WINDOW, base)
    cases = [
        (window_vars(clock, e=base["s"]), "BAD_USER_INPUT", "endsAt: must be after startsAt"),
        (window_vars(clock, n=0), "BAD_USER_INPUT", "topN: must be between 1 and 10000, got 0"),
        (window_vars(clock, n=10_001), "BAD_USER_INPUT", "topN: must be between 1 and 10000, got 10001"),
        (window_vars(clock, b="nope"), "NOT_FOUND", "boardKey: no leaderboard 'nope' in this program"),
        (window_vars(clock, r="nope"), "NOT_FOUND", "rewardKey: no reward 'nope' in this program"),
        (
            window_vars(clock, s="2031-01-01T00:00:00", e="2031-01-02T00:00:00+00:00"),
            "BAD_USER_INPUT",
            "startsAt: needs a UTC offset, e.g. 2026-11-22T10:00:00+00:00",
        ),
        (
            base | {"s": (clock.now() + timedelta(minutes=30)).isoformat()},
            "BAD_USER_INPUT",
            f"startsAt: the window overlaps the one from {base['s']} to {base['e']}; "
            "a reward has at most one window at a time",
        ),
    ]
    for variables, code, message in cases:
        error = await admin.error(SET_WINDOW, variables)
        assert (error["extensions"]["code"], error["message"]) == (code, message)
    forbidden = await GraphQLClient(admin.http, None).error(SET_WINDOW, base)
    assert forbidden["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_priority_window_admits_the_top_n_as_ranked_at_its_start(
    client: httpx.AsyncClient, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    """Given ana 300, ben 200 and cy 100 points and a window for the top 2 of `points`,
    when cy earns 1000 more during the window, then cy is still refused until the window ends."""
    await give_points(integration, clock, {"ana": 300, "ben": 200, "cy": 100})
    await admin.data(SET_REWARD, {"i": reward_input(costPoints=50, stock=10)})
    window = window_vars(clock)
    await admin.data(SET_WINDOW, window)

    clock.shift(timedelta(minutes=20))  # inside the window
    await give_points(integration, clock, {"cy": 1000})  # after the window's start: does not count
    assert (await integration.data(REDEEM, {"m": "ana", "r": "mug", "k": "w-ana"}))["redeemReward"][
        "points"
    ] == 50
    refused = await integration.error(REDEEM, {"m": "cy", "r": "mug", "k": "w-cy"})
    assert refused["extensions"] == {"code": "FORBIDDEN", "reason": "PRIORITY_WINDOW", "retryAt": window["e"]}
    assert refused["message"] == (
        f"reward 'mug' is reserved for the top 2 of board 'points' (ALL_TIME) until {window['e']}; "
        f"at the window start ({window['s']}) your rank was 3"
    )
    cy = await member_client(client, integration, "cy")  # the same answer for the member's own app
    assert (await cy.error(REDEEM, {"m": "cy", "r": "mug", "k": "w-cy"}))["extensions"]["reason"] == (
        "PRIORITY_WINDOW"
    )
    ben = await member_client(client, integration, "ben")
    assert (await ben.data(REDEEM, {"m": "ben", "r": "mug", "k": "w-ben"}))["redeemReward"]["points"] == 50
    listed = (await admin.data('{ reward(key: "mug") { windows { frozen } } }'))["reward"]["windows"]
    assert listed == [{"frozen": True}]
    assert (await balance(integration, "cy"), await stock(admin, "mug")) == (1100, 8)

    clock.shift(timedelta(hours=1))  # past the window's end: everyone may redeem
    after = await integration.data(REDEEM, {"m": "cy", "r": "mug", "k": "w-cy"})
    assert after["redeemReward"]["ledgerEntry"]["points"] == -50
    assert (await balance(integration, "cy"), await stock(admin, "mug")) == (1050, 7)


async def test_before_a_window_opens_everyone_may_redeem(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await give_points(integration, clock, {"ana": 300, "ben": 200, "cy": 100})
    await admin.data(SET_REWARD, {"i": reward_input(costPoints=50, stock=10)})
    await admin.data(SET_WINDOW, window_vars(clock, n=1))
    data = await integration.data(REDEEM, {"m": "cy", "r": "mug", "k": "early"})
    assert data["redeemReward"]["points"] == 50


async def test_a_member_who_had_not_scored_at_the_start_is_refused(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await admin.data(SET_REWARD, {"i": reward_input(costPoints=50, stock=10)})
    window = window_vars(clock, n=5)
    await admin.data(SET_WINDOW, window)
    clock.shift(timedelta(minutes=15))
    await give_points(integration, clock, {"dan": 100})  # nobody had scored by the window's start
    refused = await integration.error(REDEEM, {"m": "dan", "r": "mug", "k": "d-1"})
    assert refused["extensions"] == {"code": "FORBIDDEN", "reason": "PRIORITY_WINDOW", "retryAt": window["e"]}
    assert await balance(integration, "dan") == 100
