"""The audit log (DESIGN.md, "Privacy and governance"; docs/security.md, "Audit log").

Every Mutation field of the served schema is either AUDITED, with a case below that performs it
through GraphQL and checks the entry it writes (actor, action, target, before, after), or
NOT_AUDITED with the reason. A new mutation without a decision fails
`test_every_mutation_has_an_audit_decision`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType

from api.runtime import Services
from api.schema import build_schema
from domain.auth.scopes import Scope
from domain.governance import audit_log
from tests.support import ShiftableClock
from tests.support.audit import VerdictFromProperties
from tests.support.audit_log import AUDIT_LOG, audit_entries, contains, newest_entry
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture

#: What each mutation that is not audited is, and why it needs no entry.
NOT_AUDITED: dict[str, str] = {
    "login": "a session, not a change; logins are rate-limited and their sessions stored",
    "logout": "ends the caller's own session",
    "verifyTotp": "a step-up check of the caller's own session",
    "issueMemberToken": "a short-lived credential, no stored change",
    "upsertOrganizations": "member data from the integration, not configuration",
    "upsertMembers": "member data from the integration, not configuration",
    "recordEvents": "event data; its points are in the ledger with the event that earned them",
    "redeemPoints": "a member spending its own points: the ledger entry is the record",
    "redeemReward": "a member's redemption: the ledger entry and the redemption are the record",
    "addTag": "a member's manual tag is member data, not configuration",
    "removeTag": "a member's manual tag is member data, not configuration",
    "recomputeSegments": "re-derives memberships from unchanged definitions (the segment change log has them)",
    "retryDelivery": "re-sends a dead delivery; the delivery keeps its attempts",
    "trainChurnModel": "a model derived from the data; it records when it was trained",
    "exposeExperiment": "assignments of an unchanged experiment (the exposures are the record)",
    "exposeExperimentMember": "one member's assignment (the exposure is the record)",
    "redeemCoupon": "a member's code used at the till: the code and its coupon_redeemed event are the record",
}

PROGRAM = "<program key>"  # a target standing for the test program's key
#: Admin e-mails are unique across programs (and the suite's programs share a database).
NEW_ADMIN, CHANGED_ADMIN = (f"{name}-{uuid.uuid4().hex[:8]}@example.com" for name in ("mia", "ned"))
CREATE_MARKETER = 'mutation { createAdmin(email: "EMAIL", role: MARKETER) { email } }'
PSEUDONYM = "<pseudonym>"  # a target standing for the random pseudonym of an erased member
MEMBERS = 'mutation { upsertMembers(members: [{externalId: "m1"}, {externalId: "m2"}]) { upserted } }'
VIP = 'mutation { createSegment(input: {key: "vip", name: "VIP", kind: DYNAMIC, rule: "pointsBalance >= 100"}) { key } }'
LISTED = 'mutation { createSegment(input: {key: "listed", name: "Listed", kind: STATIC}) { key } }'
EVERYONE = (
    "mutation { createSegment(input: "
    '{key: "everyone", name: "Everyone", kind: DYNAMIC, rule: "pointsBalance >= 0"}) { key } }'
)
URL = "https://hooks.example.com/crm"
ENDPOINT = f'mutation {{ createWebhookEndpoint(key: "crm", url: "{URL}") {{ secret }} }}'
CHALLENGE = (
    'mutation { setChallenge(input: {key: "five", name: "Five visits", eventType: "visit", '
    "target: 5, period: WEEKLY, points: 50}) { key } }"
)
BOARD = 'mutation { setLeaderboard(input: {key: "weekly", name: "Weekly", periods: [WEEKLY]}) { key } }'
REWARD = 'mutation { setReward(input: {key: "mug", name: "Mug", costPoints: 100, stock: 5}) { key } }'
POOL = (
    'mutation { setCouponPool(input: {key: "welcome", name: "Welcome", discountKind: PERCENT, '
    'discountValue: "10", validDays: 30}) { key } }'
)
WINDOW = """
mutation($s: DateTime!, $e: DateTime!) {
  setRewardWindow(rewardKey: "mug", boardKey: "points", period: WEEKLY, topN: 3, startsAt: $s, endsAt: $e) { key }
}"""
EXPERIMENT = """
mutation($name: String!) {
  %s(input: {key: "spring", name: $name, segmentKey: "everyone", goalEventType: "purchase",
    conversionDays: 7, controlVariant: "a", variants: [
      {key: "a", weight: 50, action: {type: NONE}},
      {key: "b", weight: 50, action: {type: BONUS_POINTS, points: 100}}]}) { key }
}"""
LADDER = """
mutation {
  setTierLadder(input: {qualifier: "sum(purchase.amount, 365d)", tiers: [
    {key: "silver", name: "Silver", threshold: "0"}, {key: "gold", name: "Gold", threshold: "500"}]}) {
    qualifier
  }
}"""
ADJUST = """
mutation($p: Int!, $k: String!) {
  adjustPoints(memberExternalId: "m1", points: $p, reason: "goodwill", idempotencyKey: $k) { id }
}"""
RECORD = "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status } } }"
PROMOTION = (
    'mutation { createPromotion(input: {key: "double", name: "Double", eventType: "purchase", '
    'multiplier: "2", condition: "event.amount > 10"}) { key } }'
)
QUEUE = "{ reviewQueue { id } }"


@dataclass
class World:
    services: Services
    admin: GraphQLClient
    integration: GraphQLClient
    clock: ShiftableClock
    program: ProgramFixture

    async def run(self, *operations: str) -> None:
        for operation in operations:
            await self.admin.data(operation)


Prepare = Callable[[World], Awaitable[dict[str, Any]]]


async def _nothing(_world: World) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Case:
    """A mutation (run as the program's admin, with the variables `prepare` returns after running
    `setup`) and the entry it must write."""

    mutation: str
    target: str | None
    before: Any
    after: Any
    setup: tuple[str, ...] = ()
    prepare: Prepare = field(default=_nothing)


async def _adjusted(world: World) -> dict[str, Any]:
    await world.run(MEMBERS)
    entry = await world.admin.data(ADJUST, {"p": 40, "k": "k1"})
    return {"id": entry["adjustPoints"]["id"]}


async def _window(world: World) -> dict[str, Any]:
    start = world.clock.now() + timedelta(days=1)
    return {"s": start.isoformat(), "e": (start + timedelta(days=2)).isoformat()}


async def _with_window(world: World) -> dict[str, Any]:
    times = await _window(world)
    await world.admin.data(WINDOW, times)
    return {"s": times["s"]}


async def _held(world: World) -> dict[str, Any]:
    """A purchase by m1 held for review (the stand-in auditor's REVIEW verdict)."""
    await world.run(
        MEMBERS, 'mutation { setEarningRule(input: {eventType: "purchase", fixedPoints: 100}) { eventType } }'
    )
    event = {
        "externalId": "e1",
        "memberExternalId": "m1",
        "type": "purchase",
        "occurredAt": (world.clock.now() - timedelta(minutes=1)).isoformat(),
        "properties": {"verdict": "REVIEW"},
    }
    auditor = world.services.events.auditor
    world.services.events.auditor = VerdictFromProperties()
    try:
        results = (await world.integration.data(RECORD, {"e": [event]}))["recordEvents"]["results"]
    finally:
        world.services.events.auditor = auditor
    assert [r["status"] for r in results] == ["HELD_FOR_REVIEW"]
    (item,) = (await world.admin.data(QUEUE))["reviewQueue"]
    return {"id": item["id"]}


REFERRAL_PROGRAM = (
    "mutation { setReferralProgram(input: "
    "{joinPoints: 50, referrerPoints: 200, waitDays: 14}) { joinPoints } }"
)


async def _held_referral(world: World) -> dict[str, Any]:
    """A referral held by the referral velocity rule (at most 1 per referrer and day)."""
    await world.run(
        REFERRAL_PROGRAM,
        'mutation { setFraudRule(rule: "referral_velocity", params: {maxPerDay: 1}) { name } }',
    )
    await world.integration.data(UPSERT, {"m": [{"externalId": "m1"}]})
    code = (await world.integration.data('{ member(externalId: "m1") { referralCode } }'))["member"]
    items = [{"externalId": name, "referralCode": code["referralCode"]} for name in ("m2", "m3")]
    await world.integration.data(UPSERT, {"m": items})
    (held,) = (await world.admin.data("{ referrals(status: HELD) { items { id } } }"))["referrals"]["items"]
    return {"id": held["id"]}


AUDITED: dict[str, Case] = {
    "setLifecycleThresholds": Case(
        "mutation { setLifecycleThresholds(input: {newDays: 10, atRiskDays: 20, lostDays: 60}) { key } }",
        PROGRAM,
        {"lifecycleNewDays": 30, "lifecycleAtRiskDays": 30, "lifecycleLostDays": 90},
        {"lifecycleNewDays": 10, "lifecycleAtRiskDays": 20, "lifecycleLostDays": 60},
    ),
    "setMaxEventAge": Case(
        "mutation { setMaxEventAge(days: 30) { key } }",
        PROGRAM,
        {"maxEventAgeDays": 1826},
        {"maxEventAgeDays": 30},
    ),
    "setPointsExpiry": Case(
        "mutation { setPointsExpiry(afterDays: 365) { key } }",
        PROGRAM,
        {"pointsExpiryDays": None},
        {"pointsExpiryDays": 365},
    ),
    "setAdjustmentStepUp": Case(
        "mutation { setAdjustmentStepUp(points: 50) { key } }",
        PROGRAM,
        {"adjustmentStepUpPoints": 1000},
        {"adjustmentStepUpPoints": 50},
    ),
    "setEarningRule": Case(
        'mutation { setEarningRule(input: {eventType: "visit", fixedPoints: 5}) { eventType } }',
        "visit",
        {"eventType": "visit", "pointsPerUnit": None, "fixedPoints": 10},  # a default rule
        {"eventType": "visit", "pointsPerUnit": None, "fixedPoints": 5},
    ),
    "adjustPoints": Case(
        'mutation { adjustPoints(memberExternalId: "m1", points: 40, reason: "goodwill", idempotencyKey: "k1") { id } }',
        "m1",
        {"balance": 0},
        {"kind": "ADJUSTMENT", "points": 40, "reason": "goodwill", "balance": 40},
        setup=(MEMBERS,),
    ),
    "createAdmin": Case(
        CREATE_MARKETER.replace("EMAIL", NEW_ADMIN),
        NEW_ADMIN,
        None,
        {"role": "MARKETER"},
    ),
    "setAdminRole": Case(
        'mutation { setAdminRole(email: "EMAIL", role: VIEWER) { email } }'.replace("EMAIL", CHANGED_ADMIN),
        CHANGED_ADMIN,
        {"role": "MARKETER"},
        {"role": "VIEWER"},
        setup=(CREATE_MARKETER.replace("EMAIL", CHANGED_ADMIN),),
    ),
    "eraseMember": Case(
        'mutation { eraseMember(externalId: "m1") }', PSEUDONYM, None, None, setup=(MEMBERS,)
    ),
    "reverseLedgerEntry": Case(
        'mutation($id: ID!) { reverseLedgerEntry(id: $id, reason: "mistake", idempotencyKey: "r1") { id } }',
        "m1",
        {"balance": 40},
        {"kind": "REVERSAL", "points": -40, "reason": "mistake", "balance": 0},
        prepare=_adjusted,
    ),
    "createSegment": Case(
        VIP,
        "vip",
        None,
        {"key": "vip", "name": "VIP", "kind": "DYNAMIC", "rule": "pointsBalance >= 100", "appliesTag": None},
    ),
    "updateSegment": Case(
        'mutation { updateSegment(input: {key: "vip", name: "Very important", kind: DYNAMIC, rule: "pointsBalance >= 200"}) { key } }',
        "vip",
        {"name": "VIP", "rule": "pointsBalance >= 100"},
        {"name": "Very important", "rule": "pointsBalance >= 200"},
        setup=(VIP,),
    ),
    "deleteSegment": Case(
        'mutation { deleteSegment(key: "vip") }', "vip", {"key": "vip", "name": "VIP"}, None, setup=(VIP,)
    ),
    "importStaticSegment": Case(
        'mutation { importStaticSegment(key: "imported", csv: "externalId\\nm1\\nghost\\n") { imported } }',
        "imported",
        None,
        {"key": "imported", "kind": "STATIC", "members": 1, "imported": 1},
        setup=(MEMBERS,),
    ),
    "changeStaticSegment": Case(
        'mutation { changeStaticSegment(key: "listed", addMemberExternalIds: ["m2", "m1"]) { key } }',
        "listed",
        {"kind": "STATIC", "members": 0},
        {"kind": "STATIC", "members": 2},
        setup=(MEMBERS, LISTED),
    ),
    "setSegmentTriggers": Case(
        'mutation { setSegmentTriggers(segmentKey: "vip", triggers: [{on: ENTER, action: ADD_TAG, tag: "vip"}]) { id } }',
        "vip",
        [],
        [{"on": "ENTER", "action": "ADD_TAG", "tag": "vip"}],
        setup=(VIP,),
    ),
    "createWebhookEndpoint": Case(ENDPOINT, "crm", None, {"key": "crm", "url": URL, "active": True}),
    "deactivateWebhookEndpoint": Case(
        'mutation { deactivateWebhookEndpoint(key: "crm") { key } }',
        "crm",
        {"active": True},
        {"active": False},
        setup=(ENDPOINT,),
    ),
    "rotateWebhookSecret": Case(
        'mutation { rotateWebhookSecret(key: "crm") { secret } }',
        "crm",
        {"key": "crm", "url": URL, "active": True},
        {"key": "crm", "url": URL, "active": True, "secretRotated": True},
        setup=(ENDPOINT,),
    ),
    "setChallenge": Case(
        CHALLENGE,
        "five",
        None,
        {
            "key": "five",
            "name": "Five visits",
            "eventType": "visit",
            "target": 5,
            "period": "WEEKLY",
            "points": 50,
        },
    ),
    "deleteChallenge": Case(
        'mutation { deleteChallenge(key: "five") }',
        "five",
        {"key": "five", "target": 5},
        None,
        setup=(CHALLENGE,),
    ),
    "setLeaderboard": Case(
        BOARD, "weekly", None, {"key": "weekly", "name": "Weekly", "metric": "POINTS", "periods": ["WEEKLY"]}
    ),
    "deleteLeaderboard": Case(
        'mutation { deleteLeaderboard(key: "weekly") }', "weekly", {"key": "weekly"}, None, setup=(BOARD,)
    ),
    "setProgramTimezone": Case(
        'mutation { setProgramTimezone(timezone: "Europe/Istanbul") { key } }',
        PROGRAM,
        {"timezone": "UTC"},
        {"timezone": "Europe/Istanbul"},
    ),
    "setReward": Case(
        REWARD, "mug", None, {"key": "mug", "name": "Mug", "costPoints": 100, "stock": 5, "windows": []}
    ),
    "restockReward": Case(
        'mutation { restockReward(key: "mug", add: 3) { key } }',
        "mug",
        {"stock": 5},
        {"stock": 8},
        setup=(REWARD,),
    ),
    "createPromotion": Case(
        PROMOTION,
        "double",
        None,
        {"key": "double", "multiplier": "2", "condition": "event.amount > 10", "active": True},
    ),
    "updatePromotion": Case(
        'mutation { updatePromotion(input: {key: "double", name: "Double", eventType: "purchase", '
        "bonusPoints: 5, budgetPoints: 100}) { key } }",
        "double",
        {"multiplier": "2", "bonusPoints": 0, "budgetPoints": None},
        {"multiplier": None, "bonusPoints": 5, "budgetPoints": 100},
        setup=(PROMOTION,),
    ),
    "setPromotionActive": Case(
        'mutation { setPromotionActive(key: "double", active: false) { key } }',
        "double",
        {"active": True},
        {"active": False},
        setup=(PROMOTION,),
    ),
    "setRewardWindow": Case(
        WINDOW,
        "mug",
        {"windows": []},
        {"windows": [{"boardKey": "points", "period": "WEEKLY", "topN": 3}]},
        setup=(REWARD,),
        prepare=_window,
    ),
    "setCouponPool": Case(
        POOL,
        "welcome",
        None,
        {
            "key": "welcome",
            "name": "Welcome",
            "discountKind": "PERCENT",
            "discountValue": "10",
            "validDays": 30,
        },
    ),
    "generateCoupons": Case(
        'mutation { generateCoupons(poolKey: "welcome", pattern: "W-####-??", count: 5) { key } }',
        "welcome",
        None,
        {"pattern": "W-####-??", "count": 5},
        setup=(POOL,),
    ),
    "importCoupons": Case(
        'mutation { importCoupons(poolKey: "welcome", csv: "A1\\nA2\\nbad code") { imported } }',
        "welcome",
        None,
        {"imported": 2, "rejected": 1},
        setup=(POOL,),
    ),
    "removeRewardWindow": Case(
        'mutation($s: DateTime!) { removeRewardWindow(rewardKey: "mug", startsAt: $s) { key } }',
        "mug",
        {"windows": [{"boardKey": "points", "topN": 3}]},
        {"windows": []},
        setup=(REWARD,),
        prepare=_with_window,
    ),
    "approveAccrual": Case(
        "mutation($id: ID!) { approveAccrual(id: $id) { id } }",
        "m1",
        {"status": "PENDING_REVIEW", "points": 100, "balance": 0},
        {"status": "POSTED", "points": 100, "balance": 100},
        prepare=_held,
    ),
    "rejectAccrual": Case(
        'mutation($id: ID!) { rejectAccrual(id: $id, reason: "card testing") { id } }',
        "m1",
        {"status": "PENDING_REVIEW", "reason": None, "balance": 0},
        {"status": "REJECTED", "reason": "card testing", "balance": 0},
        prepare=_held,
    ),
    "setReferralProgram": Case(
        REFERRAL_PROGRAM,
        PROGRAM,
        None,
        {"enabled": True, "joinPoints": 50, "referrerPoints": 200, "waitDays": 14, "eventType": "purchase"},
    ),
    "decideReferral": Case(
        'mutation($id: ID!) { decideReferral(id: $id, approve: false, note: "ring") { id } }',
        "m3",
        {"status": "HELD", "note": "referral_velocity: referrer m1: 2 referrals in 24 h (review above 1)"},
        {"status": "BLOCKED"},
        prepare=_held_referral,
    ),
    "setFraudRule": Case(
        'mutation { setFraudRule(rule: "velocity", shadow: true, params: {reviewAbove: 2}) { name } }',
        "velocity",
        {"enabled": True, "shadow": False, "params": {"reviewAbove": 20, "blockAbove": 60}},
        {"enabled": True, "shadow": True, "params": {"reviewAbove": 2, "blockAbove": 60}},
    ),
    "createExperiment": Case(
        EXPERIMENT % "createExperiment",
        "spring",
        None,
        {"key": "spring", "name": "Spring", "segmentKey": "everyone", "control": "a", "conversionDays": 7},
        setup=(EVERYONE,),
        prepare=lambda _world: _named("Spring"),
    ),
    "updateExperiment": Case(
        EXPERIMENT % "updateExperiment",
        "spring",
        {"name": "Spring"},
        {"name": "Spring offer"},
        setup=(EVERYONE,),
        prepare=lambda world: _created_then_named(world, "Spring offer"),
    ),
    "setTierLadder": Case(
        LADDER,
        PROGRAM,
        None,
        {
            "qualifier": "sum(purchase.amount, 365d)",
            "downgrade": "RECALCULATE",
            "graceDays": 0,
            "tiers": [{"key": "silver", "name": "Silver"}, {"key": "gold", "name": "Gold"}],
        },
    ),
    "deleteTierLadder": Case(
        "mutation { deleteTierLadder }",
        PROGRAM,
        {"qualifier": "sum(purchase.amount, 365d)"},
        None,
        setup=(LADDER,),
    ),
}


async def _named(name: str) -> dict[str, Any]:
    return {"name": name}


async def _created_then_named(world: World, name: str) -> dict[str, Any]:
    await world.admin.data(EXPERIMENT % "createExperiment", {"name": "Spring"})
    return {"name": name}


def _served_mutations() -> set[str]:
    mutation = build_schema()._schema.mutation_type
    assert isinstance(mutation, GraphQLObjectType)
    return set(mutation.fields)


def test_every_mutation_has_an_audit_decision() -> None:
    served = _served_mutations()
    assert set(AUDITED) & set(NOT_AUDITED) == set(), "a mutation is both audited and not"
    undecided = served - set(AUDITED) - set(NOT_AUDITED)
    assert undecided == set(), "add each to AUDITED (with a case) or NOT_AUDITED (with the reason)"
    assert set(AUDITED) | set(NOT_AUDITED) == served, "listed but not served: take them off"
    assert all(reason.strip() for reason in NOT_AUDITED.values())


@pytest.fixture
def world(
    services: Services,
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> World:
    return World(services, admin, integration, clock, program)


@pytest.mark.parametrize("action", sorted(AUDITED))
async def test_an_audited_mutation_writes_its_entry(world: World, action: str) -> None:
    case = AUDITED[action]
    # given what the mutation acts on
    await world.run(*case.setup)
    variables = await case.prepare(world)
    before_count = len(await audit_entries(world.admin))
    # when the admin performs it through GraphQL
    await world.admin.data(case.mutation, variables)
    # then exactly one entry is added, newest first, naming the admin, the mutation and the target
    entries = await audit_entries(world.admin)
    assert len(entries) == before_count + 1
    entry = entries[0]
    target = case.target
    if target == PROGRAM:
        target = world.program.key
    elif target == PSEUDONYM:
        target = entry["target"]
    assert (entry["actor"], entry["action"], entry["target"]) == (world.program.admin_email, action, target)
    assert case.target != PSEUDONYM or entry["target"].startswith("erased-")
    assert abs(_instant(entry["at"]) - world.clock.now().timestamp()) < 60
    # and before/after hold the definition or value (null before a create, null after a delete)
    assert contains(entry["before"], case.before), entry["before"]
    assert contains(entry["after"], case.after), entry["after"]


def _instant(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


async def test_an_api_key_is_named_as_key_and_its_name(
    services: Services, client: httpx.AsyncClient, program: ProgramFixture, integration: GraphQLClient
) -> None:
    # given a key named "ops" that may adjust points and read the log
    created = await services.auth.create_api_key(
        program.key, "ops", frozenset({Scope.POINTS_ADJUST, Scope.AUDIT_READ})
    )
    ops = GraphQLClient(client, created.key)
    await integration.data(UPSERT, {"m": [{"externalId": "m1"}]})
    # when it adjusts a member's points
    await ops.data(ADJUST, {"p": 5, "k": "a1"})
    # then the entry's actor is "key:ops"
    entry = await newest_entry(ops)
    assert (entry["actor"], entry["action"], entry["target"]) == ("key:ops", "adjustPoints", "m1")


async def test_a_mutation_that_fails_writes_no_entry(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # a refused change: no entry
    await world.run(VIP)
    error = await world.admin.error(
        'mutation { updateSegment(input: {key: "vip", name: "VIP", kind: DYNAMIC, rule: "pointsBalance >="}) { key } }'
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert [e["action"] for e in await audit_entries(world.admin)] == ["createSegment"]

    # a change that fails after its entry was written: the entry rolls back with it
    from domain.segments import service as segments

    async def then_fail(*args: Any, **kwargs: Any) -> None:
        await audit_log.record_change(*args, **kwargs)
        raise RuntimeError("the change fails after its audit entry")

    monkeypatch.setattr(segments, "record_change", then_fail)
    failed = await world.admin.execute('mutation { deleteSegment(key: "vip") }')
    assert failed.get("errors"), failed
    assert [e["action"] for e in await audit_entries(world.admin)] == ["createSegment"]
    assert (await world.admin.data('{ segment(key: "vip") { key } }'))["segment"] == {"key": "vip"}


async def test_secrets_never_reach_the_log(world: World) -> None:
    created = (await world.admin.data(ENDPOINT))["createWebhookEndpoint"]["secret"]
    rotated = (await world.admin.data('mutation { rotateWebhookSecret(key: "crm") { secret } }'))[
        "rotateWebhookSecret"
    ]["secret"]
    text = json.dumps(await audit_entries(world.admin))
    assert created not in text
    assert rotated not in text


async def test_the_log_pages_newest_first_and_filters(world: World, client: httpx.AsyncClient) -> None:
    # given five changes by the admin and one by a key
    for days in range(1, 6):
        await world.admin.data(f"mutation {{ setMaxEventAge(days: {days}) {{ key }} }}")
    ops_key = await world.services.auth.create_api_key(
        world.program.key, "ops", frozenset({Scope.PROGRAM_WRITE, Scope.AUDIT_READ})
    )
    await GraphQLClient(client, ops_key.key).data("mutation { setMaxEventAge(days: 9) { key } }")
    everything = await audit_entries(world.admin)
    assert [e["after"]["maxEventAgeDays"] for e in everything] == [9, 5, 4, 3, 2, 1]
    # when it is read in pages of any size, the pages add up to the whole, newest first
    for size in (1, 2, 4, 6):
        seen: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = (await world.admin.data(AUDIT_LOG, {"first": size, "after": after}))["auditLog"]
            seen += [edge["node"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == everything, size
    # and actor and action filter it
    by_key = await audit_entries(world.admin, actor="key:ops")
    assert [e["after"] for e in by_key] == [{"maxEventAgeDays": 9}]
    assert (
        len(await audit_entries(world.admin, actor=world.program.admin_email, action="setMaxEventAge")) == 5
    )
    assert await audit_entries(world.admin, action="createSegment") == []


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"first": 0}, "first"),
        ({"first": 501}, "first"),
        ({"after": "bm90LWEtY3Vyc29y"}, "after"),
        ({"first": 0, "after": "bm90LWEtY3Vyc29y"}, "first"),
    ],
)
async def test_bad_paging_is_bad_user_input_naming_the_argument(
    admin: GraphQLClient, variables: dict[str, Any], named: str
) -> None:
    error = await admin.error(AUDIT_LOG, variables)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith(f"{named}:"), error["message"]


async def test_reading_the_log_needs_audit_read(integration: GraphQLClient) -> None:
    error = await integration.error(AUDIT_LOG)
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "audit:read" in error["message"]


async def test_each_program_reads_only_its_own_log(
    world: World, services: Services, client: httpx.AsyncClient, clock: ShiftableClock
) -> None:
    from tests.support.graphql import admin_token, new_program

    await world.run(VIP)
    other = await new_program(services)
    other_admin = GraphQLClient(client, await admin_token(client, other, clock))
    assert await audit_entries(other_admin) == []


async def test_an_erased_member_is_named_by_its_pseudonym(world: World, services: Services) -> None:
    # given an adjustment of m1 and a segment whose key is also "m1"
    await world.run(MEMBERS)
    await world.admin.data(ADJUST, {"p": 5, "k": "a1"})
    await world.run('mutation { createSegment(input: {key: "m1", name: "m1", kind: STATIC}) { key } }')
    # when erasure renames m1's entries (in its own transaction)
    async with services.db.unit_of_work() as uow:
        renamed = await audit_log.pseudonymise_target(uow, world.program.id, "m1", "erased-7f3a")
    # then the adjustment names the pseudonym and the segment keeps its key
    assert renamed == 1
    entries = await audit_entries(world.admin)
    assert [(e["action"], e["target"]) for e in entries] == [
        ("createSegment", "m1"),
        ("adjustPoints", "erased-7f3a"),
    ]
