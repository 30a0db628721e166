"""A/B tests through the real GraphQL endpoint: sticky assignment, actions at exposure, conversions, results."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.runtime import Services
from domain.experiments import service as experiments_service
from domain.experiments.assignment import HOLDOUT, assign
from domain.experiments.exposure import exposure_delivery_id
from domain.experiments.stats import compare
from domain.models import Experiment, Member, OutboxItem
from tests.support import ShiftableClock
from tests.support.events import RECORD, UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token

SEGMENT = "mutation($i: SegmentInput!) { createSegment(input: $i) { key size } }"
FIELDS = """key name segmentKey goalEventType conversionDays holdoutPercent controlVariant
  variants { key weight action { type points template channel rewardKey } }"""
CREATE = f"mutation($i: ExperimentInput!) {{ createExperiment(input: $i) {{ {FIELDS} }} }}"
UPDATE = f"mutation($i: ExperimentInput!) {{ updateExperiment(input: $i) {{ {FIELDS} }} }}"
EXPOSE_ALL = "mutation($k: String!) { exposeExperiment(key: $k) { newlyExposed totalExposed } }"
EXPOSE = """
mutation($k: String!, $m: String!) {
  exposeExperimentMember(key: $k, memberExternalId: $m) { variant exposedAt offeredRewardKey new }
}"""
RESULTS = """
query($k: String!) {
  experimentResults(key: $k) {
    variant isControl exposed converted conversionRate upliftVsControl ciLow ciHigh pValue
  }
}"""
MEMBER = """
query($id: String!) {
  member(externalId: $id) { pointsBalance ledger(first: 20) { edges { node { points kind reason } } } }
}"""
ISSUE = "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }"


def experiment(key: str = "spring", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": key,
        "name": "Spring offer",
        "segmentKey": "everyone",
        "goalEventType": "purchase",
        "conversionDays": 7,
        "holdoutPercent": 0,
        "variants": [
            {"key": "a", "weight": 50, "action": {"type": "NONE"}},
            {"key": "b", "weight": 50, "action": {"type": "BONUS_POINTS", "points": 100}},
        ],
        "controlVariant": "a",
    }
    return {**base, **overrides}


async def given_members(
    admin: GraphQLClient, integration: GraphQLClient, count: int, **extra: Any
) -> list[str]:
    """`count` members, all in the segment `everyone`."""
    ids = [f"m{i:03d}" for i in range(count)]
    await integration.data(UPSERT, {"m": [{"externalId": m, **extra} for m in ids]})
    segment = {"key": "everyone", "name": "everyone", "kind": "DYNAMIC", "rule": "pointsBalance >= 0"}
    assert (await admin.data(SEGMENT, {"i": segment}))["createSegment"]["size"] == count
    return ids


async def expose(client: GraphQLClient, member: str, key: str = "spring") -> dict[str, Any] | None:
    found: dict[str, Any] | None = (await client.data(EXPOSE, {"k": key, "m": member}))[
        "exposeExperimentMember"
    ]
    return found


async def purchases(integration: GraphQLClient, events: list[tuple[str, str, datetime]]) -> None:
    """Record purchases (externalId, member, occurredAt) of 10.00 each."""
    batch = [
        {
            "externalId": e,
            "memberExternalId": m,
            "type": "purchase",
            "occurredAt": at.isoformat(),
            "amount": "10",
        }
        for e, m, at in events
    ]
    results = (await integration.data(RECORD, {"e": batch}))["recordEvents"]["results"]
    assert {r["status"] for r in results} == {"ACCEPTED"}, results


async def test_assignment_is_deterministic_sticky_and_survives_a_change_of_weights(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given 40 members and a 50/50 experiment
    members = await given_members(admin, integration, 40)
    created = (await admin.data(CREATE, {"i": experiment()}))["createExperiment"]
    assert created["controlVariant"] == "a"
    assert [v["weight"] for v in created["variants"]] == [50, 50]

    # when each member is exposed twice
    first = {m: await expose(integration, m) for m in members}
    again = {m: await expose(integration, m) for m in members}

    # then each got the hash's arm, recorded once
    weights = [("a", 50), ("b", 50)]
    for m in members:
        once, twice = first[m], again[m]
        assert once is not None
        assert twice is not None
        assert once["variant"] == assign("spring", m, 0, weights)
        assert once["new"] is True
        assert twice["new"] is False
        assert twice["exposedAt"] == once["exposedAt"]
    assert {f["variant"] for f in first.values() if f} == {"a", "b"}

    # when the weights change to almost all "a" (and a holdout appears)
    changed = experiment(
        holdoutPercent=30,
        variants=[
            {"key": "a", "weight": 999, "action": {"type": "NONE"}},
            {"key": "b", "weight": 1, "action": {"type": "BONUS_POINTS", "points": 100}},
        ],
    )
    assert (await admin.data(UPDATE, {"i": changed}))["updateExperiment"]["holdoutPercent"] == 30

    # then the exposed keep their arm, and a newcomer is assigned by the new weights
    for m in members:
        assert (await expose(integration, m)) == {**(first[m] or {}), "new": False}
    await integration.data(UPSERT, {"m": [{"externalId": "late"}]})
    late = await expose(integration, "late")
    assert late is not None
    assert late["new"] is True
    assert late["variant"] == assign("spring", "late", 30, [("a", 999), ("b", 1)])
    summary = (await admin.data(EXPOSE_ALL, {"k": "spring"}))["exposeExperiment"]
    assert summary == {"newlyExposed": 0, "totalExposed": 41}

    # and a variant with exposures cannot be removed
    only_a = experiment(holdoutPercent=10, variants=[{"key": "a", "weight": 1, "action": {"type": "NONE"}}])
    error = await admin.error(UPDATE, {"i": only_a})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "variants: variant 'b' has exposures and cannot be removed"


async def test_exposing_the_segment_pays_bonuses_once_and_the_holdout_gets_nothing(
    admin: GraphQLClient, integration: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given 60 members exposed 7 per unit of work, a 40 % holdout and one variant paying 100 points
    monkeypatch.setattr(experiments_service, "EXPOSE_CHUNK", 7)
    members = await given_members(admin, integration, 60)
    definition = experiment(
        holdoutPercent=40,
        variants=[{"key": "bonus", "weight": 1, "action": {"type": "BONUS_POINTS", "points": 100}}],
        controlVariant=None,
    )
    assert (await admin.data(CREATE, {"i": definition}))["createExperiment"]["controlVariant"] == HOLDOUT

    # when the admin exposes the segment twice, and a client re-exposes members one by one
    assert (await admin.data(EXPOSE_ALL, {"k": "spring"}))["exposeExperiment"] == {
        "newlyExposed": 60,
        "totalExposed": 60,
    }
    assert (await admin.data(EXPOSE_ALL, {"k": "spring"}))["exposeExperiment"]["newlyExposed"] == 0
    arms = {m: (await expose(integration, m)) for m in members}

    # then the bonus arm got exactly one 100-point entry each, the holdout nothing
    held = [m for m, e in arms.items() if e and e["variant"] == HOLDOUT]
    paid = [m for m, e in arms.items() if e and e["variant"] == "bonus"]
    assert len(held) + len(paid) == 60
    assert held
    assert paid
    for m in members:
        found = (await integration.data(MEMBER, {"id": m}))["member"]
        entries = [e["node"] for e in found["ledger"]["edges"]]
        if m in paid:
            assert found["pointsBalance"] == 100
            assert entries == [
                {"points": 100, "kind": "ADJUSTMENT", "reason": "experiment spring: variant bonus"}
            ]
        else:
            assert found["pointsBalance"] == 0
            assert entries == []


async def test_a_message_variant_enqueues_one_message_in_the_outbox(
    admin: GraphQLClient, integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given members listing SMS, and a single MESSAGE variant with a holdout
    members = await given_members(admin, integration, 12, channels=["SMS"])
    definition = experiment(
        holdoutPercent=25,
        variants=[{"key": "msg", "weight": 1, "action": {"type": "MESSAGE", "template": "spring_offer"}}],
    )
    definition.pop("controlVariant")
    await admin.data(CREATE, {"i": definition})

    # when every member is exposed (twice)
    await admin.data(EXPOSE_ALL, {"k": "spring"})
    arms = {m: (await expose(integration, m)) for m in members}

    # then each exposed "msg" member has one queued SMS and one outbox row; the holdout none
    query = "query($m: String!) { messages(memberExternalId: $m) { template channel status segmentKey } }"
    async with services.db.read() as session:
        experiment_id = await session.scalar(
            select(Experiment.id).where(Experiment.program_id == program.id, Experiment.key == "spring")
        )
        members_query = select(Member.external_id, Member.id).where(Member.program_id == program.id)
        ids = {m: i for m, i in await session.execute(members_query)}  # noqa: C416 - Row objects
        outbox_query = select(OutboxItem.delivery_id, OutboxItem.payload).where(
            OutboxItem.program_id == program.id
        )
        outbox = {d: p for d, p in await session.execute(outbox_query)}  # noqa: C416 - Row objects
    assert experiment_id is not None
    sent = 0
    for m, e in arms.items():
        assert e is not None
        messages = (await admin.data(query, {"m": m}))["messages"]
        delivery = exposure_delivery_id(experiment_id, ids[m])
        if e["variant"] == "msg":
            sent += 1
            expected = {
                "template": "spring_offer",
                "channel": "SMS",
                "status": "QUEUED",
                "segmentKey": "everyone",
            }
            assert messages == [expected]
            assert outbox[delivery]["experiment"] == "spring"
            assert outbox[delivery]["member"] == m
        else:
            assert messages == []
            assert delivery not in outbox
    assert len(outbox) == sent > 0


async def test_conversions_count_only_within_the_window_and_results_match_the_statistics(
    client: httpx.AsyncClient,
    admin: GraphQLClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
) -> None:
    # given 40 members exposed now to a 50/50 experiment (control "a", 7-day window on purchases)
    members = await given_members(admin, integration, 40)
    await admin.data(CREATE, {"i": experiment()})
    exposed_at = clock.now()
    await admin.data(EXPOSE_ALL, {"k": "spring"})
    arms: dict[str, list[str]] = {"a": [], "b": []}
    for m in members:
        found = await expose(integration, m)
        assert found is not None
        arms[found["variant"]].append(m)
    a, b = arms["a"], arms["b"]
    assert len(a) >= 6
    assert len(b) >= 6

    # when, 10 days later, members of "a" buy: 2 within the window, 1 after it, 1 before exposure;
    # members of "b" buy: 4 within the window, one of which is refunded
    clock.shift(timedelta(days=10))
    day = timedelta(days=1)
    await purchases(
        integration,
        [
            ("a-in-1", a[0], exposed_at + day),
            ("a-in-2", a[1], exposed_at + 6 * day),
            ("a-late", a[2], exposed_at + 8 * day),
            ("a-early", a[3], exposed_at - day),
            ("b-in-1", b[0], exposed_at + day),
            ("b-in-2", b[1], exposed_at + 2 * day),
            ("b-in-3", b[2], exposed_at + 3 * day),
            ("b-refunded", b[3], exposed_at + 4 * day),
        ],
    )
    refund = {
        "externalId": "refund-1",
        "memberExternalId": b[3],
        "type": "refund",
        "occurredAt": (exposed_at + 5 * day).isoformat(),
        "properties": {"refundOf": "b-refunded"},
    }
    assert (await integration.data(RECORD, {"e": [refund]}))["recordEvents"]["results"][0][
        "status"
    ] == "ACCEPTED"

    # then "a" converted 2 and "b" 3, and the comparison is the stats module's
    admin = GraphQLClient(client, await admin_token(client, program, clock))  # a fresh session
    results = (await admin.data(RESULTS, {"k": "spring"}))["experimentResults"]
    c = compare((3, len(b)), (2, len(a)))
    assert results == [
        {
            "variant": "a",
            "isControl": True,
            "exposed": len(a),
            "converted": 2,
            "conversionRate": pytest.approx(2 / len(a)),
            "upliftVsControl": None,
            "ciLow": None,
            "ciHigh": None,
            "pValue": None,
        },
        {
            "variant": "b",
            "isControl": False,
            "exposed": len(b),
            "converted": 3,
            "conversionRate": pytest.approx(3 / len(b)),
            "upliftVsControl": pytest.approx(c.uplift),
            "ciLow": pytest.approx(c.ci_low),
            "ciHigh": pytest.approx(c.ci_high),
            "pValue": pytest.approx(c.p_value),
        },
    ]


async def test_a_reward_offer_is_recorded_and_must_name_an_active_reward(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await given_members(admin, integration, 3)
    offer = {"type": "REWARD_OFFER", "rewardKey": "mug"}
    definition = experiment(
        holdoutPercent=0,
        variants=[
            {"key": "a", "weight": 1, "action": offer},
            {"key": "b", "weight": 1, "action": offer},
        ],
    )
    error = await admin.error(CREATE, {"i": definition})
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"] == "variants[0].action.rewardKey: no active reward 'mug' in this program"
    reward = {"key": "mug", "name": "Mug", "costPoints": 300, "stock": 5}
    await admin.data("mutation($i: RewardInput!) { setReward(input: $i) { key } }", {"i": reward})
    await admin.data(CREATE, {"i": definition})
    exposed = await expose(integration, "m000")
    assert exposed is not None
    assert exposed["offeredRewardKey"] == "mug"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": "bad key"}, "key: 'bad key' does not match [A-Za-z0-9_-]{1,64}"),
        ({"name": "  "}, "name: must not be empty"),
        ({"goalEventType": "Purchase"}, "goalEventType: 'Purchase' does not match [a-z][a-z0-9_]{0,63}"),
        ({"conversionDays": 0}, "conversionDays: must be between 1 and 365, got 0"),
        ({"holdoutPercent": 60}, "holdoutPercent: must be between 0 and 50, got 60"),
        ({"variants": []}, "variants: at least one variant is needed"),
        (
            {"variants": [{"key": "a", "weight": 1, "action": {"type": "NONE"}}]},
            "variants: one variant needs a holdout (holdoutPercent > 0) to be compared with",
        ),
        (
            {"variants": [{"key": "a", "weight": 1, "action": {"type": "NONE"}}] * 2},
            "variants[1].key: 'a' is used by another variant",
        ),
        (
            {"variants": [{"key": "a", "weight": 0, "action": {"type": "NONE"}}], "holdoutPercent": 10},
            "variants[0].weight: must be between 1 and 1000, got 0",
        ),
        (
            {"variants": [{"key": "holdout", "weight": 1, "action": {"type": "NONE"}}], "holdoutPercent": 10},
            "variants[0].key: 'holdout' is reserved for the holdout group",
        ),
        (
            {
                "variants": [{"key": "a", "weight": 1, "action": {"type": "BONUS_POINTS"}}],
                "holdoutPercent": 10,
            },
            "variants[0].action.points: must be between 1 and 1000000000, got None",
        ),
        (
            {
                "variants": [{"key": "a", "weight": 1, "action": {"type": "NONE", "points": 5}}],
                "holdoutPercent": 9,
            },
            "variants[0].action.points: not used by NONE",
        ),
        ({"controlVariant": "c"}, "controlVariant: 'c' is not one of the variants' keys or 'holdout'"),
        ({"controlVariant": "holdout"}, "controlVariant: 'holdout' needs holdoutPercent > 0"),
    ],
)
async def test_invalid_definitions_are_refused_naming_the_field(
    admin: GraphQLClient, change: dict[str, Any], message: str
) -> None:
    error = await admin.error(CREATE, {"i": experiment(**change)})
    assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)


async def test_unknown_segment_duplicate_key_and_unknown_experiment(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    error = await admin.error(CREATE, {"i": experiment()})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "segmentKey: no segment 'everyone' in this program",
    )
    await given_members(admin, integration, 1)
    await admin.data(CREATE, {"i": experiment()})
    assert (await admin.error(CREATE, {"i": experiment()}))["extensions"]["code"] == "CONFLICT"
    assert (await admin.error(RESULTS, {"k": "nope"}))["extensions"]["code"] == "NOT_FOUND"
    assert (await admin.data('{ experiment(key: "nope") { key } }'))["experiment"] is None
    listed = (await admin.data("{ experiments { key segmentKey } }"))["experiments"]
    assert listed == [{"key": "spring", "segmentKey": "everyone"}]


async def test_permissions_member_tokens_expose_only_themselves_and_cannot_define(
    client: httpx.AsyncClient, admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given an experiment on a segment holding m000 and m001, and a token of m000
    await given_members(admin, integration, 2)
    await admin.data(CREATE, {"i": experiment()})
    token = (await integration.data(ISSUE, {"m": "m000"}))["issueMemberToken"]["token"]
    member = GraphQLClient(client, token)

    # then the member reads its own variant, not another's, and cannot define or list experiments
    own = await expose(member, "m000")
    assert own is not None
    assert own["variant"] == assign("spring", "m000", 0, [("a", 50), ("b", 50)])
    assert (await member.error(EXPOSE, {"k": "spring", "m": "m001"}))["extensions"]["code"] == "FORBIDDEN"
    refused: list[tuple[str, dict[str, Any]]] = [
        (CREATE, {"i": experiment("other")}),
        ("{ experiments { key } }", {}),
        (EXPOSE_ALL, {"k": "spring"}),
    ]
    for op, variables in refused:
        assert (await member.error(op, variables))["extensions"]["code"] == "FORBIDDEN"
    # an integration key lacks segments:write
    assert (await integration.error(CREATE, {"i": experiment("other")}))["extensions"]["code"] == "FORBIDDEN"


async def test_a_member_outside_the_segment_is_not_exposed(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "cust"}, {"externalId": "emp", "kind": "EMPLOYEE"}]})
    segment = {"key": "everyone", "name": "customers", "kind": "DYNAMIC", "rule": "kind = CUSTOMER"}
    assert (await admin.data(SEGMENT, {"i": segment}))["createSegment"]["size"] == 1
    await admin.data(CREATE, {"i": experiment()})
    assert await expose(integration, "emp") is None
    assert (await expose(integration, "cust")) is not None
    assert (await admin.error(EXPOSE, {"k": "spring", "m": "ghost"}))["extensions"]["code"] == "NOT_FOUND"
