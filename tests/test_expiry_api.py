"""Points expiry, goodwill adjustments and LedgerEntry.actor through the GraphQL endpoint.

The clock is the suite's ShiftableClock: a test moves it past an expiry instant and runs
one pass of the sweep (`services.expiry`) as the server's loop would.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from api.runtime import Services
from domain.auth.scopes import Scope
from domain.ledger.posting import Bonus, post_bonuses
from tests.support import ShiftableClock
from tests.support.audit import VerdictFromProperties
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token
from tests.support.leaderboards import board, feed
from tests.support.segments import create, members_of
from tests.support.statements import counting_statements

SET_EXPIRY = "mutation($d: Int) { setPointsExpiry(afterDays: $d) { key pointsExpiryDays } }"
EXPIRING = """
query($m: String!, $d: Int) {
  member(externalId: $m) { pointsBalance expiringPoints(withinDays: $d) { points expiresAt } }
}"""
ADJUST = """
mutation($m: String!, $p: Int!, $r: String!, $k: String!) {
  adjustPoints(memberExternalId: $m, points: $p, reason: $r, idempotencyKey: $k) {
    id points status kind reason actor
  }
}"""
REDEEM = """
mutation($m: String!, $p: Int!, $k: String!) {
  redeemPoints(memberExternalId: $m, points: $p, reason: "voucher", idempotencyKey: $k) { id points actor }
}"""
REVERSE = """
mutation($id: ID!, $k: String!) {
  reverseLedgerEntry(id: $id, reason: "correction", idempotencyKey: $k) { id points kind actor }
}"""
LEDGER = """
query($m: String!) {
  member(externalId: $m) {
    pointsBalance ledger(first: 50) { edges { node { id points kind status reason actor } } }
  }
}"""
VERIFY = "mutation($c: String!) { verifyTotp(totpCode: $c) }"


async def record(client: GraphQLClient, member: str, external_id: str, amount: int, at: datetime) -> None:
    """A purchase worth `amount` points that occurred at `at`."""
    await client.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": member}]},
    )
    event = {
        "externalId": external_id,
        "memberExternalId": member,
        "type": "purchase",
        "occurredAt": at.isoformat(),
        "amount": str(amount),
    }
    data = await client.data(
        "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status pointsAwarded } } }",
        {"e": [event]},
    )
    assert data["recordEvents"]["results"] == [{"status": "ACCEPTED", "pointsAwarded": amount}]


async def expiring(client: GraphQLClient, member: str, days: int = 30) -> list[tuple[int, str]]:
    data = await client.data(EXPIRING, {"m": member, "d": days})
    return [(lot["points"], lot["expiresAt"]) for lot in data["member"]["expiringPoints"]]


def iso(at: datetime) -> str:
    return at.isoformat()


async def ledger(client: GraphQLClient, member: str) -> tuple[int, list[dict[str, Any]]]:
    data = (await client.data(LEDGER, {"m": member}))["member"]
    return data["pointsBalance"], [edge["node"] for edge in data["ledger"]["edges"]]


async def adjuster(client: httpx.AsyncClient, services: Services, program: ProgramFixture) -> GraphQLClient:
    """An integration key named "crm" holding points:adjust (and members:read)."""
    key = await services.auth.create_api_key(
        program.key, "crm", frozenset({Scope.POINTS_ADJUST, Scope.MEMBERS_READ, Scope.MEMBERS_WRITE})
    )
    return GraphQLClient(client, key.key)


async def test_set_points_expiry_validates_and_reads_back(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given an admin; when it sets, clears and mistypes the expiry
    assert (await admin.data(SET_EXPIRY, {"d": 365}))["setPointsExpiry"]["pointsExpiryDays"] == 365
    for bad in (0, -5, 36_501):
        error = await admin.error(SET_EXPIRY, {"d": bad})
        # then bad values are refused naming the argument, and nothing changes
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"].startswith("afterDays: ")
    assert (await admin.data("{ program { pointsExpiryDays } }"))["program"]["pointsExpiryDays"] == 365
    assert (await admin.data(SET_EXPIRY, {"d": None}))["setPointsExpiry"]["pointsExpiryDays"] is None
    # and an integration key without program:write may not
    assert (await integration.error(SET_EXPIRY, {"d": 30}))["extensions"]["code"] == "FORBIDDEN"


async def test_expiring_points_are_one_lot_per_instant_soonest_first(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a 30-day expiry and purchases earned 20, 10 (twice) and 1 day ago
    await admin.data(SET_EXPIRY, {"d": 30})
    now = clock.now().replace(microsecond=0)
    await record(integration, "ana", "e-old", 5, now - timedelta(days=20))
    await record(integration, "ana", "e-mid-1", 7, now - timedelta(days=10))
    await record(integration, "ana", "e-mid-2", 8, now - timedelta(days=10))
    await record(integration, "ana", "e-new", 9, now - timedelta(days=1))
    # when the member's expiring points are read
    # then lots expiring at one instant are summed, soonest first, within the window only
    assert await expiring(integration, "ana", 15) == [(5, iso(now + timedelta(days=10)))]
    assert await expiring(integration, "ana") == [
        (5, iso(now + timedelta(days=10))),
        (15, iso(now + timedelta(days=20))),
        (9, iso(now + timedelta(days=29))),
    ]
    for bad in (0, -1, 36_501):
        error = await integration.error(EXPIRING, {"m": "ana", "d": bad})
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"].startswith("withinDays: ")


async def test_redemptions_spend_the_soonest_lots_and_points_without_a_lot_last(
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    # given 50 points earned before expiry was on (no lot), then lots of 10 and 20
    now = clock.now().replace(microsecond=0)
    await record(integration, "bo", "e-before", 50, now - timedelta(days=2))
    await admin.data(SET_EXPIRY, {"d": 30})
    await record(integration, "bo", "e-soon", 10, now - timedelta(days=25))
    await record(integration, "bo", "e-late", 20, now - timedelta(days=5))
    # when 15 points are redeemed, then the soonest lot goes first, then the next
    await integration.data(REDEEM, {"m": "bo", "p": 15, "k": "r1"})
    assert await expiring(integration, "bo") == [(15, iso(now + timedelta(days=25)))]
    # when 30 more are redeemed, then the lots are spent before the points without a lot
    await integration.data(REDEEM, {"m": "bo", "p": 30, "k": "r2"})
    assert await expiring(integration, "bo") == []
    # then after the lots' instants nothing expires: the 35 left never expire
    clock.shift(timedelta(days=31))
    await services.expiry.drain(program.id)
    assert (await ledger(integration, "bo"))[0] == 35


async def test_the_sweep_expires_what_is_left_and_boards_keep_the_points(
    admin: GraphQLClient,
    integration: GraphQLClient,
    client: httpx.AsyncClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    # given a 30-day expiry, 100 points earned now, 30 of them redeemed, and the board fed
    await admin.data(SET_EXPIRY, {"d": 30})
    await create(admin, "rich", "pointsBalance >= 50")
    now = clock.now()
    await record(integration, "cy", "e1", 100, now - timedelta(minutes=1))
    await integration.data(REDEEM, {"m": "cy", "p": 30, "k": "r1"})
    await feed(services)
    before = (await board(integration, "cy"))["entry"]
    assert before["score"] == 100
    assert await members_of(admin, "rich") == ["cy"]
    # when the clock passes the lot's instant by a second and the sweep runs once
    clock.shift(timedelta(days=30, seconds=1))
    assert (await services.expiry.pass_once(program.id)).lots == 1
    # then one EXPIRY entry took what was left (70), the balance is 0, and nothing is left to expire
    balance, entries = await ledger(integration, "cy")
    assert balance == 0
    assert entries[0] | {"id": None} == {
        "id": None,
        "points": -70,
        "kind": "EXPIRY",
        "status": "POSTED",
        "reason": "points expired",
        "actor": None,
    }
    assert (await services.expiry.pass_once(program.id)).lots == 0
    # and segments reading the balance were re-evaluated in the sweep's transaction
    later = GraphQLClient(client, await admin_token(client, program, clock))
    assert await members_of(later, "rich") == []
    # and the points board is unchanged, also when rebuilt from the ledger
    await feed(services)
    assert (await board(integration, "cy"))["entry"]["score"] == 100
    await services.leaderboards.rebuild(program_ids=[program.id])
    assert (await board(integration, "cy"))["entry"]["score"] == 100


async def test_a_reversal_takes_its_own_lot_first(
    admin: GraphQLClient, integration: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    # given two lots: 10 expiring soon, 40 later (its own)
    await admin.data(SET_EXPIRY, {"d": 30})
    now = clock.now().replace(microsecond=0)
    await record(integration, "di", "e-soon", 10, now - timedelta(days=25))
    await record(integration, "di", "e-late", 40, now - timedelta(days=1))
    _, entries = await ledger(integration, "di")
    late_id = next(e["id"] for e in entries if e["points"] == 40)
    # when the later accrual is reversed
    reversal = (await admin.data(REVERSE, {"id": late_id, "k": "undo"}))["reverseLedgerEntry"]
    # then its own lot went, the sooner one is untouched, and the admin is the actor
    assert reversal["points"] == -40
    assert reversal["actor"].startswith("admin-")
    assert await expiring(integration, "di") == [(10, iso(now + timedelta(days=5)))]


async def test_adjust_points(
    admin: GraphQLClient,
    integration: GraphQLClient,
    client: httpx.AsyncClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    crm = await adjuster(client, services, program)
    await admin.data(SET_EXPIRY, {"d": 90})
    await record(integration, "ed", "e1", 10, clock.now() - timedelta(minutes=1))
    # a goodwill credit by a key: an ADJUSTMENT by "key:crm" that forms a lot
    credit = (await crm.data(ADJUST, {"m": "ed", "p": 25, "r": "late delivery", "k": "gw-1"}))["adjustPoints"]
    assert credit | {"id": None} == {
        "id": None,
        "points": 25,
        "status": "POSTED",
        "kind": "ADJUSTMENT",
        "reason": "late delivery",
        "actor": "key:crm",
    }
    assert sum(points for points, _ in await expiring(crm, "ed", 90)) == 35
    # replaying the key returns the entry; other content under it is CONFLICT
    again = (await crm.data(ADJUST, {"m": "ed", "p": 25, "r": "late delivery", "k": "gw-1"}))["adjustPoints"]
    assert again["id"] == credit["id"]
    conflict = await crm.error(ADJUST, {"m": "ed", "p": 26, "r": "late delivery", "k": "gw-1"})
    assert conflict["extensions"]["code"] == "CONFLICT"
    # zero and corrections below a zero balance are refused naming `points`; nothing is stored
    for points in (0, -36):
        error = await crm.error(ADJUST, {"m": "ed", "p": points, "r": "oops", "k": f"bad-{points}"})
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"].startswith("points: ")
    # a correction spends the soonest lot first
    await crm.data(ADJUST, {"m": "ed", "p": -12, "r": "double credit", "k": "fix-1"})
    balance, entries = await ledger(crm, "ed")
    assert balance == 23
    assert [e["points"] for e in entries] == [-12, 25, 10]
    assert sum(points for points, _ in await expiring(crm, "ed", 90)) == 23
    # the default scopes of an integration key do not include points:adjust
    denied = await integration.error(ADJUST, {"m": "ed", "p": 5, "r": "x", "k": "nope"})
    assert denied["extensions"]["code"] == "FORBIDDEN"
    # a reserved key prefix is refused
    reserved = await crm.error(ADJUST, {"m": "ed", "p": 5, "r": "x", "k": "expiry:1"})
    assert reserved["message"] == "idempotencyKey: the prefix 'expiry:' is reserved for expiries"


async def test_big_admin_adjustments_need_step_up_and_keys_do_not(
    admin: GraphQLClient,
    integration: GraphQLClient,
    client: httpx.AsyncClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    from domain.auth import secrets as crypto

    crm = await adjuster(client, services, program)
    await record(integration, "fa", "e1", 10, clock.now() - timedelta(minutes=1))
    # given an admin whose login TOTP check is 11 minutes old
    clock.shift(timedelta(minutes=11))
    # then up to the threshold (1000) it may adjust, the actor being its e-mail
    small = (await admin.data(ADJUST, {"m": "fa", "p": 1000, "r": "goodwill", "k": "a-1"}))["adjustPoints"]
    assert small["actor"] == program.admin_email
    # above it (either sign) it needs a step-up, and nothing is stored
    for points in (1001, -1001):
        error = await admin.error(ADJUST, {"m": "fa", "p": points, "r": "goodwill", "k": f"a-{points}"})
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert error["extensions"]["reason"] == "STEP_UP_REQUIRED"
    assert (await ledger(admin, "fa"))[0] == 1010
    # a key holding points:adjust has no TOTP and is not asked for one
    assert (await crm.data(ADJUST, {"m": "fa", "p": 5000, "r": "migration", "k": "k-1"}))["adjustPoints"]
    # after a fresh TOTP check the admin may
    code = crypto.code_at(program.totp_secret, clock.now().timestamp())
    assert (await admin.data(VERIFY, {"c": code}))["verifyTotp"] is True
    big = (await admin.data(ADJUST, {"m": "fa", "p": 1001, "r": "goodwill", "k": "a-big"}))["adjustPoints"]
    assert big["points"] == 1001
    # the program's threshold can be changed (beyond the contract)
    changed = await admin.data("mutation { setAdjustmentStepUp(points: 50) { adjustmentStepUpPoints } }")
    assert changed["setAdjustmentStepUp"]["adjustmentStepUpPoints"] == 50


async def test_actor_on_redemptions_and_reversals(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock, program: ProgramFixture
) -> None:
    await record(integration, "gu", "e1", 50, clock.now() - timedelta(minutes=1))
    # a key's redemption names the key; an admin's reversal names the admin; accruals none
    redeemed = (await integration.data(REDEEM, {"m": "gu", "p": 20, "k": "r1"}))["redeemPoints"]
    assert redeemed["actor"] == "key:pos"
    reversed_ = (await admin.data(REVERSE, {"id": redeemed["id"], "k": "undo"}))["reverseLedgerEntry"]
    assert reversed_["actor"] == program.admin_email
    _, entries = await ledger(admin, "gu")
    assert [(e["kind"], e["actor"]) for e in entries] == [
        ("REVERSAL", program.admin_email),
        ("REDEMPTION", "key:pos"),
        ("ACCRUAL", None),
    ]


async def test_an_approved_held_accrual_forms_a_lot_dated_by_its_event(
    admin: GraphQLClient, integration: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    # given a 30-day expiry and a purchase of 3 days ago that the audit holds
    await admin.data(SET_EXPIRY, {"d": 30})
    occurred = clock.now().replace(microsecond=0) - timedelta(days=3)
    await integration.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": "ho"}]},
    )
    event = {
        "externalId": "held-1",
        "memberExternalId": "ho",
        "type": "purchase",
        "occurredAt": occurred.isoformat(),
        "amount": "40",
        "properties": {"verdict": "REVIEW"},
    }
    auditor, services.events.auditor = services.events.auditor, VerdictFromProperties()
    try:
        await integration.data(
            "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status } } }", {"e": [event]}
        )
    finally:
        services.events.auditor = auditor
    # then a held accrual forms no lot
    assert await expiring(integration, "ho") == []
    # when an admin approves it (now, three days after the purchase)
    [item] = (await admin.data("{ reviewQueue { id } }"))["reviewQueue"]
    await admin.data("mutation($id: ID!) { approveAccrual(id: $id) { status } }", {"id": item["id"]})
    # then its lot expires 30 days after the event occurred, not after the approval
    assert await expiring(integration, "ho") == [(40, iso(occurred + timedelta(days=30)))]


async def test_bonuses_form_lots_once(
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    # given a 30-day expiry and a member
    await admin.data(SET_EXPIRY, {"d": 30})
    await record(integration, "bx", "e1", 1, clock.now() - timedelta(minutes=1))
    member = await services.members.get(program.id, "bx")
    assert member is not None
    now = clock.now().replace(microsecond=0)
    # when a trigger bonus is posted twice under one key (as a replayed trigger would)
    for _ in range(2):
        async with services.db.unit_of_work() as uow:
            await post_bonuses(uow.session, program.id, [Bonus(member.id, 40, "welcome", "trigger:bx")], now)
    # then one lot of 40, dated by the posting time (next to the purchase's lot of 1)
    lots = await expiring(integration, "bx")
    assert (40, iso(now + timedelta(days=30))) in lots
    assert sum(points for points, _ in lots) == 41
    assert (await ledger(integration, "bx"))[0] == 41


async def test_a_sweep_pass_is_a_fixed_number_of_statements(
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    """Set-based: a pass over 1 due lot and a pass over 12 lots of 4 members run the same statements."""
    # given one lot due now (earned 31 days ago) and 12 lots of 4 members due in 28 to 30 days
    await admin.data(SET_EXPIRY, {"d": 30})
    now = clock.now()
    await record(integration, "solo", "s-1", 5, now - timedelta(days=31))
    for member in ("p1", "p2", "p3", "p4"):
        for n in range(3):
            await record(integration, member, f"{member}-{n}", 5 + n, now - timedelta(minutes=1, days=n))
    # when one pass runs now, and one after 30 days
    with counting_statements(services) as one:
        assert (await services.expiry.pass_once(program.id)).lots == 1
    clock.shift(timedelta(days=30))
    with counting_statements(services) as many:
        assert (await services.expiry.pass_once(program.id)).lots == 12
    # then both ran the same 7 statements: claim, lock members, read and empty the lots, insert the
    # entries, move the balances (one executemany), and the segment engine's look at the program
    assert len(one) == len(many) == 7, (one, many)
