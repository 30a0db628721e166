"""The fraud review queue through the GraphQL endpoint, with the stand-in auditor of test_pipeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from api.runtime import Services
from domain.auth import secrets as crypto
from domain.models import FraudFinding
from tests.support import ShiftableClock
from tests.support.audit import hold
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.leaderboards import feed
from tests.support.segments import create, members_of

RECORD = """
mutation($e: [EventInput!]!) {
  recordEvents(events: $e) { results { externalId status pointsAwarded message } }
}"""
MEMBER = "query($id: String!) { member(externalId: $id) { pointsBalance pendingPoints } }"
QUEUE = """
query($first: Int) {
  reviewQueue(first: $first) {
    id memberExternalId eventExternalId points findings { rule verdict detail } createdAt
  }
}"""
APPROVE = "mutation($id: ID!) { approveAccrual(id: $id) { id status points eventExternalId } }"
REJECT = "mutation($id: ID!, $r: String!) { rejectAccrual(id: $id, reason: $r) { id status points } }"
VERIFY = "mutation($c: String!) { verifyTotp(totpCode: $c) }"
BOARD = """
query { leaderboard(key: "points", period: ALL_TIME) { top(first: 10) { rank score member { externalId } } } }"""


async def setup(admin: GraphQLClient, integration: GraphQLClient) -> None:
    await admin.data(
        'mutation { setEarningRule(input: {eventType: "purchase", fixedPoints: 100}) { eventType } }'
    )
    await admin.data('mutation { setLeaderboard(input: {key: "points", name: "Points"}) { key } }')
    await create(admin, "rich", "pointsBalance >= 100")
    await integration.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": "m1"}, {"externalId": "m2"}]},
    )


async def queue(admin: GraphQLClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await admin.data(QUEUE, {"first": 50}))["reviewQueue"]
    return items


async def test_an_approved_accrual_runs_the_rest_of_the_pipeline(
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    # given a held accrual of 100 points
    await setup(admin, integration)
    await hold(services, integration, clock, "e1")
    assert (await admin.data(MEMBER, {"id": "m1"}))["member"] == {"pointsBalance": 0, "pendingPoints": 100}
    # then it waits in the queue with its findings
    [item] = await queue(admin)
    assert item["memberExternalId"] == "m1"
    assert item["eventExternalId"] == "e1"
    assert item["points"] == 100
    assert item["findings"] == [{"rule": "test_rule", "verdict": "REVIEW", "detail": "REVIEW on request"}]
    assert await members_of(admin, "rich") == []
    async with services.db.read() as session:
        stored = (
            (await session.execute(select(FraudFinding).where(FraudFinding.program_id == program.id)))
            .scalars()
            .all()
        )
    assert [(f.rule, f.verdict, f.ledger_entry_id, f.shadow) for f in stored] == [
        ("test_rule", "REVIEW", int(item["id"]), False)
    ]
    # when the admin approves it
    approved = (await admin.data(APPROVE, {"id": item["id"]}))["approveAccrual"]
    assert approved == {"id": item["id"], "status": "POSTED", "points": 100, "eventExternalId": "e1"}
    # then the points are posted and everything downstream follows
    assert (await admin.data(MEMBER, {"id": "m1"}))["member"] == {"pointsBalance": 100, "pendingPoints": 0}
    assert await members_of(admin, "rich") == ["m1"]
    await feed(services)
    top = (await admin.data(BOARD))["leaderboard"]["top"]
    assert [(e["rank"], e["member"]["externalId"], e["score"]) for e in top] == [(1, "m1", 100)]
    assert await queue(admin) == []
    # and a second decision is a CONFLICT
    again = await admin.error(APPROVE, {"id": item["id"]})
    assert again["extensions"]["code"] == "CONFLICT"
    assert "already approved" in again["message"]
    assert f"by {program.admin_email}" in again["message"]  # the audit log's actor
    rejected = await admin.error(REJECT, {"id": item["id"], "r": "too late"})
    assert rejected["extensions"]["code"] == "CONFLICT"


async def test_a_rejected_accrual_releases_only_the_pending_points(
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    await setup(admin, integration)
    await hold(services, integration, clock, "e1")
    await hold(services, integration, clock, "e2", member="m2")
    items = await queue(admin)
    assert [i["eventExternalId"] for i in items] == ["e1", "e2"]  # oldest first
    rejected = (await admin.data(REJECT, {"id": items[0]["id"], "r": "card testing"}))["rejectAccrual"]
    assert rejected == {"id": items[0]["id"], "status": "REJECTED", "points": 100}
    assert (await admin.data(MEMBER, {"id": "m1"}))["member"] == {"pointsBalance": 0, "pendingPoints": 0}
    assert (await admin.data(MEMBER, {"id": "m2"}))["member"] == {"pointsBalance": 0, "pendingPoints": 100}
    assert await members_of(admin, "rich") == []
    assert [i["eventExternalId"] for i in await queue(admin)] == ["e2"]
    again = await admin.error(REJECT, {"id": items[0]["id"], "r": "twice"})
    assert again["extensions"]["code"] == "CONFLICT"
    assert "already rejected" in again["message"]
    approve = await admin.error(APPROVE, {"id": items[0]["id"]})
    assert approve["extensions"]["code"] == "CONFLICT"
    empty = await admin.error(REJECT, {"id": items[1]["id"], "r": "  "})
    assert empty["extensions"]["code"] == "BAD_USER_INPUT"
    bad_first = await admin.error(QUEUE, {"first": 501})
    assert bad_first["extensions"]["code"] == "BAD_USER_INPUT"


async def test_decisions_need_a_fresh_totp_check(
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    await setup(admin, integration)
    await hold(services, integration, clock, "e1")
    [item] = await queue(admin)
    # when the login's TOTP check is 11 minutes old
    clock.shift(timedelta(minutes=11))
    for operation, variables in ((APPROVE, {"id": item["id"]}), (REJECT, {"id": item["id"], "r": "no"})):
        error = await admin.error(operation, variables)
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert error["extensions"]["reason"] == "STEP_UP_REQUIRED"
    # a wrong code does not help
    wrong = await admin.error(
        VERIFY,
        {
            "c": "000000"
            if crypto.code_at(program.totp_secret, clock.now().timestamp()) != "000000"
            else "111111"
        },
    )
    assert wrong["extensions"]["code"] == "FORBIDDEN"
    # then a fresh code re-opens the window, once
    code = crypto.code_at(program.totp_secret, clock.now().timestamp())
    assert (await admin.data(VERIFY, {"c": code}))["verifyTotp"] is True
    reused = await admin.error(VERIFY, {"c": code})
    assert reused["extensions"]["code"] == "FORBIDDEN"
    approved = (await admin.data(APPROVE, {"id": item["id"]}))["approveAccrual"]
    assert approved["status"] == "POSTED"


async def test_only_admins_work_the_queue(integration: GraphQLClient) -> None:
    error = await integration.error(QUEUE, {"first": 10})
    assert error["extensions"]["code"] == "FORBIDDEN"
    error = await integration.error(APPROVE, {"id": "1"})
    assert error["extensions"]["code"] == "FORBIDDEN"
