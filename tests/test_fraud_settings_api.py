"""Configuring the fraud rules through GraphQL: `fraudRules` and `setFraudRule`."""

from __future__ import annotations

from typing import Any

import httpx

from api.runtime import Services
from domain.auth.scopes import Scope
from domain.events.service import EventOutcome
from tests.support.fraud import HELD, at, enrol, purchase, record_drafts
from tests.support.graphql import GraphQLClient, ProgramFixture

RULES = "{ fraudRules { name enabled shadow params defaults updatedBy } }"
SET = """
mutation($r: String!, $e: Boolean, $s: Boolean, $p: JSON) {
  setFraudRule(rule: $r, enabled: $e, shadow: $s, params: $p) { name enabled shadow params updatedBy }
}"""
DEFAULTS: dict[str, dict[str, float]] = {
    "duplicate_receipt": {},
    "velocity": {"reviewAbove": 20, "blockAbove": 60, "windowMinutes": 60},
    "single_accrual_cap": {"maxPoints": 5000},
    "daily_points_cap": {"maxPoints": 10000},
    "amount_outlier": {"zScore": 4, "minSamples": 10, "days": 90, "minStd": 1},
    "shared_device": {"maxMembers": 3, "hours": 24},
    "self_referral": {},
    "cashier_collusion": {"maxPerDay": 10},
    "referral_shared_identity": {},
    "referral_cycle": {"maxDepth": 10},
    "referral_velocity": {"maxPerDay": 5, "maxPerWeek": 20},
    "non_compliant": {"maxBlocks": 3, "days": 30},
}


async def test_fraud_rules_lists_every_rule_with_its_defaults(admin: GraphQLClient) -> None:
    # when an admin lists the rules of a fresh program
    rules = (await admin.data(RULES))["fraudRules"]
    # then every rule is there, enabled, acting, at its defaults
    assert rules == [
        {
            "name": name,
            "enabled": True,
            "shadow": False,
            "params": params,
            "defaults": params,
            "updatedBy": None,
        }
        for name, params in DEFAULTS.items()
    ]


async def test_set_fraud_rule_changes_thresholds_for_the_next_batch(
    admin: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # when an admin lowers velocity's review threshold to 2 and puts the daily cap in shadow mode
    changed = (await admin.data(SET, {"r": "velocity", "p": {"reviewAbove": 2}}))["setFraudRule"]
    shadowed = (await admin.data(SET, {"r": "daily_points_cap", "s": True}))["setFraudRule"]

    # then only the given settings change and the listing shows them
    by = program.admin_email  # the actor of the rule's newest setFraudRule audit entry
    assert changed == {
        "name": "velocity",
        "enabled": True,
        "shadow": False,
        "params": {"reviewAbove": 2, "blockAbove": 60, "windowMinutes": 60},
        "updatedBy": by,
    }
    assert shadowed == {
        "name": "daily_points_cap",
        "enabled": True,
        "shadow": True,
        "params": {"maxPoints": 10000},
        "updatedBy": by,
    }
    listed = {r["name"]: r for r in (await admin.data(RULES))["fraudRules"]}
    assert listed["velocity"]["params"] == changed["params"]
    assert listed["velocity"]["defaults"] == DEFAULTS["velocity"]
    assert listed["daily_points_cap"]["shadow"] is True
    # and the pipeline applies them: the third event in an hour is held
    await enrol(services, program, "m1")
    outcomes = await record_drafts(
        services, program, *[purchase(f"p{i}", "m1", at(10, i), 1) for i in range(3)]
    )
    assert outcomes[2] == EventOutcome(
        "p2", HELD, 0, "velocity: 3 point-earning events in 60 minutes (review above 2)"
    )


async def test_set_fraud_rule_rejects_bad_input_naming_what_is_wrong(admin: GraphQLClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"r": "nope"},
            "rule: 'nope' is not one of duplicate_receipt, velocity, single_accrual_cap, daily_points_cap, "
            "amount_outlier, shared_device, self_referral, cashier_collusion, referral_shared_identity, "
            "referral_cycle, referral_velocity, non_compliant",
        ),
        (
            {"r": "velocity", "p": {"reviewAbov": 5}},
            "params: velocity has no parameter 'reviewAbov' (accepted: reviewAbove, blockAbove, windowMinutes)",
        ),
        (
            {"r": "velocity", "p": {"reviewAbove": -1}},
            "params.reviewAbove: must be between 1 and 1000000000000, got -1",
        ),
        (
            {"r": "amount_outlier", "p": {"zScore": -0.5}},
            "params.zScore: must be between 0 and 1000000000000, got -0.5",
        ),
        (
            {"r": "velocity", "p": {"reviewAbove": 2.5}},
            "params.reviewAbove: expected a whole number, got 2.5",
        ),
        ({"r": "velocity", "p": {"reviewAbove": "5"}}, "params.reviewAbove: expected a number, got str"),
        (
            {"r": "velocity", "p": {"windowMinutes": 20000}},
            "params.windowMinutes: must be between 1 and 10080, got 20000",
        ),
        (
            {"r": "velocity", "p": {"blockAbove": 10}},
            "params.blockAbove: must be at least reviewAbove (20), got 10",
        ),
        (
            {"r": "velocity", "p": {"reviewAbove": 30, "blockAbove": 25}},
            "params.blockAbove: must be at least reviewAbove (30), got 25",
        ),
    ]
    for variables, message in cases:
        # when an admin sends a bad setting
        error = await admin.error(SET, variables)
        # then it is BAD_USER_INPUT naming the problem
        assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message), variables
    # and nothing changed
    rules = {r["name"]: r for r in (await admin.data(RULES))["fraudRules"]}
    assert rules["velocity"]["params"] == DEFAULTS["velocity"]
    assert rules["amount_outlier"]["params"] == DEFAULTS["amount_outlier"]
    assert all(r["updatedBy"] is None for r in rules.values())


async def test_configuring_fraud_rules_needs_the_fraud_configure_scope(
    client: httpx.AsyncClient, integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given a member token, the default POS key and a key with every scope but fraud:configure
    await integration.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": "m1"}]},
    )
    issued = await integration.data(
        "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }", {"m": "m1"}
    )
    member = GraphQLClient(client, issued["issueMemberToken"]["token"])
    almost = await services.auth.create_api_key(
        program.key, "almost", frozenset(s for s in Scope if s != Scope.FRAUD_CONFIGURE)
    )
    callers = {"member": member, "pos": integration, "almost": GraphQLClient(client, almost.key)}
    for name, caller in callers.items():
        # when each reads or changes the rules
        for operation, variables in ((RULES, None), (SET, {"r": "velocity", "p": {"reviewAbove": 1}})):
            error = await caller.error(operation, variables)
            # then it is FORBIDDEN
            assert error["extensions"]["code"] == "FORBIDDEN", (name, error)
    assert (await callers["almost"].error(RULES))[
        "message"
    ] == "fraudRules needs the fraud:configure scope (roles OWNER, ADMIN); this API key lacks it"
    # and nothing changed
    assert (await services.fraud_settings.rules(program.id))[1].params == DEFAULTS["velocity"]
