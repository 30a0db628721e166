"""Referrals end to end through GraphQL (docs/promotions.md, "Referrals"), with the injected clock:
codes, signing up with one, the joining reward, the referrer's reward after the wait (the payout
loop), refunds inside the wait, the referral fraud rules and reviewers' decisions."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from api.runtime import Services
from domain.referrals.codes import ALPHABET, LENGTH
from domain.referrals.payout import PayoutPass, ReferralPayouts
from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient
from tests.support.referrals import (
    DECIDE,
    HELD,
    PROGRAM,
    SET_PROGRAM,
    SET_RULE,
    code_of,
    find_member,
    member,
    purchase,
    record,
    refund,
    sign_up,
)

REFERRERS = (
    'mutation { createSegment(input: {key: "referrers", name: "Referrers", kind: DYNAMIC, '
    'rule: "count(referral_completed, 365d) >= 1"}) { key } }'
)


async def _program(admin: GraphQLClient, **changes: Any) -> None:
    await admin.data(SET_PROGRAM, {"i": {**PROGRAM, **changes}})


async def test_join_with_a_code_then_the_referrer_is_paid_once_the_wait_has_passed(
    services: Services, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a referral program (50 to join, 200 to the referrer, 14 days' wait), a segment of
    # referrers, and a member whose code is shared
    await _program(admin)
    await admin.data(REFERRERS)
    await sign_up(integration, {"externalId": "ana"})
    code = await code_of(integration, "ana")
    assert len(code) == LENGTH
    assert set(code) <= set(ALPHABET)

    # when a new member signs up with it (as typed by a person: lower case, a dash)
    typed = f"{code[:5].lower()}-{code[5:]}"
    payload = await sign_up(integration, {"externalId": "bob", "referralCode": typed})

    # then bob is created, PENDING, and rewarded for joining through the ledger
    assert payload == {
        "upserted": 1,
        "referrals": [{"index": 0, "externalId": "bob", "status": "PENDING", "error": None, "message": None}],
    }
    bob = await member(integration, "bob")
    assert bob["pointsBalance"] == 50
    assert bob["referralCode"] not in (None, code)
    joined = bob["referredBy"]
    assert (joined["referrerExternalId"], joined["code"], joined["status"], joined["joinPoints"]) == (
        "ana",
        code,
        "PENDING",
        50,
    )

    # when bob's first purchase is accepted: nothing for ana yet, the wait runs from the purchase
    bought_at = clock.now()
    await record(integration, purchase("p1", "bob", bought_at))
    assert await services.referral_payouts.pass_once() == PayoutPass(0, 0)
    ana = await member(integration, "ana")
    assert ana["pointsBalance"] == 0
    [waiting] = ana["referrals"]
    assert (waiting["status"], waiting["qualifyingEventExternalId"]) == ("WAITING", "p1")
    assert waiting["dueAt"].startswith((bought_at + timedelta(days=14)).isoformat()[:16])

    # when the clock passes the end of the wait and the payout loop runs
    clock.shift(timedelta(days=14, minutes=1))
    assert await services.referral_payouts.pass_once() == PayoutPass(1, 0)

    # then ana is paid once, referral_completed is recorded for her and her segment reads it
    ana = await member(integration, "ana")
    assert ana["pointsBalance"] == 200
    [done] = ana["referrals"]
    assert (done["status"], done["referrerPoints"]) == ("COMPLETED", 200)
    completed = [e for e in ana["events"] if e["type"] == "referral_completed"]
    assert completed == [
        {"externalId": f"referral-{done['id']}-completed", "type": "referral_completed", "status": "ACCEPTED"}
    ]
    assert [s["key"] for s in ana["segments"]] == ["referrers"]
    # and a later purchase or pass pays nothing more
    await record(integration, purchase("p2", "bob", clock.now()))
    assert await services.referral_payouts.pass_once() == PayoutPass(0, 0)
    ana = await member(integration, "ana")
    assert ana["pointsBalance"] == 200


async def test_a_refund_inside_the_wait_means_the_referrer_is_never_paid(
    services: Services, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given bob joined with ana's code and bought
    await _program(admin)
    await sign_up(integration, {"externalId": "ana"})
    await sign_up(integration, {"externalId": "bob", "referralCode": await code_of(integration, "ana")})
    await record(integration, purchase("p1", "bob", clock.now()))
    # when the purchase is refunded three days later, inside the 14-day wait
    clock.shift(timedelta(days=3))
    [refunded] = await record(integration, refund("r1", "bob", "p1", clock.now()))
    assert refunded["status"] == "ACCEPTED", refunded
    # and the wait passes
    clock.shift(timedelta(days=12))
    assert await services.referral_payouts.pass_once() == PayoutPass(0, 1)
    # then the referral is CANCELLED and ana is not paid
    ana = await member(integration, "ana")
    assert ana["pointsBalance"] == 0
    [cancelled] = ana["referrals"]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["note"] == "the qualifying event was refunded or reversed within the wait"
    # and a later purchase does not revive it: ana is never paid for bob
    await record(integration, purchase("p2", "bob", clock.now()))
    clock.shift(timedelta(days=15))
    assert await services.referral_payouts.pass_once() == PayoutPass(0, 0)
    ana = await member(integration, "ana")
    assert ana["pointsBalance"] == 0
    assert [e["type"] for e in ana["events"]] == []


async def test_bad_codes_are_answered_per_item_and_never_sink_the_others(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given a referral program and two members
    await _program(admin)
    await sign_up(integration, {"externalId": "ana"}, {"externalId": "cem"})
    code = await code_of(integration, "ana")
    # when a batch signs up one new member well, one with an unknown code, and sends a code for
    # an existing member
    payload = await sign_up(
        integration,
        {"externalId": "bob", "referralCode": code},
        {"externalId": "dan", "referralCode": "ZZZZZZZZZZ"},
        {"externalId": "cem", "referralCode": code, "attributes": {"city": "Izmir"}},
    )
    # then each item is answered on its own, naming the field
    assert payload["upserted"] == 2
    assert payload["referrals"] == [
        {"index": 0, "externalId": "bob", "status": "PENDING", "error": None, "message": None},
        {
            "index": 1,
            "externalId": "dan",
            "status": None,
            "error": "REFERRAL_CODE_UNKNOWN",
            "message": "members[1].referralCode: no member has referral code 'ZZZZZZZZZZ'; "
            "the member was not created",
        },
        {
            "index": 2,
            "externalId": "cem",
            "status": None,
            "error": "REFERRAL_SIGNUP_ONLY",
            "message": "members[2].referralCode: 'cem' is already a member; a referral code counts "
            "only when it creates the member (ignored)",
        },
    ]
    # and nothing is stored for the refused item, the existing member's update applies
    assert await find_member(integration, "dan") is None
    cem = await member(integration, "cem")
    assert cem["referredBy"] is None
    # and re-sending the call that created bob is no error (a retry)
    again = await sign_up(integration, {"externalId": "bob", "referralCode": code})
    assert again["referrals"] == [
        {"index": 0, "externalId": "bob", "status": "PENDING", "error": None, "message": None}
    ]
    bob = await member(integration, "bob")
    assert bob["pointsBalance"] == 50


async def test_a_code_on_a_later_item_for_a_member_an_earlier_item_created_is_ignored(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await _program(admin)
    await sign_up(integration, {"externalId": "ana"})
    code = await code_of(integration, "ana")
    payload = await sign_up(integration, {"externalId": "bob"}, {"externalId": "bob", "referralCode": code})
    assert [(r["index"], r["error"]) for r in payload["referrals"]] == [(1, "REFERRAL_SIGNUP_ONLY")]
    assert (await member(integration, "bob"))["referredBy"] is None


async def test_without_a_referral_program_a_code_is_refused(integration: GraphQLClient) -> None:
    await sign_up(integration, {"externalId": "ana"})
    payload = await sign_up(
        integration, {"externalId": "bob", "referralCode": await code_of(integration, "ana")}
    )
    assert payload["upserted"] == 0
    assert [r["error"] for r in payload["referrals"]] == ["REFERRALS_OFF"]
    assert await find_member(integration, "bob") is None


async def test_set_referral_program_refuses_bad_input_and_stores_nothing(admin: GraphQLClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"joinPoints": -1}, "joinPoints: must be between 0 and 1000000, got -1"),
        ({"referrerPoints": 2_000_000}, "referrerPoints: must be between 0 and 1000000, got 2000000"),
        ({"waitDays": -3}, "waitDays: must be between 0 and 366, got -3"),
        ({"eventType": "Purchase!"}, "eventType: 'Purchase!' must match [a-z][a-z0-9_]{0,63}"),
    ]
    for changes, message in cases:
        error = await admin.error(SET_PROGRAM, {"i": {**PROGRAM, **changes}})
        assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)
    assert (await admin.data("{ referralProgram { joinPoints } }"))["referralProgram"] is None


async def test_a_shared_device_phone_or_email_blocks_the_referral(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a referrer with a phone and an email, who used device d-1 in an event
    await _program(admin)
    await sign_up(
        integration, {"externalId": "ana", "attributes": {"phone": "+90 555 123-45-67", "email": "Ana@x.com"}}
    )
    await record(integration, {**purchase("p0", "ana", clock.now()), "properties": {"deviceId": "d-1"}})
    code = await code_of(integration, "ana")
    # when new members sign up with her code from her device, her phone (other spacing), her email
    # (other case), and one from nothing of hers
    payload = await sign_up(
        integration,
        {"externalId": "m1", "referralCode": code, "attributes": {"deviceId": "d-1"}},
        {"externalId": "m2", "referralCode": code, "attributes": {"phone": "+905551234567"}},
        {"externalId": "m3", "referralCode": code, "attributes": {"email": " ana@X.com"}},
        {"externalId": "m4", "referralCode": code, "attributes": {"email": "other@x.com"}},
    )
    # then the first three are BLOCKED (created, never rewarded), the fourth goes on
    assert [r["status"] for r in payload["referrals"]] == ["BLOCKED", "BLOCKED", "BLOCKED", "PENDING"]
    assert payload["referrals"][0]["message"] == (
        "referral_shared_identity: referrer ana and new member m1 share deviceId d-1"
    )
    m2 = await member(integration, "m2")
    assert m2["pointsBalance"] == 0
    assert m2["referredBy"]["verdict"] == "BLOCK"
    assert m2["referredBy"]["findings"] == [
        {
            "rule": "referral_shared_identity",
            "verdict": "BLOCK",
            "detail": "referrer ana and new member m2 share phone +905551234567",
            "shadow": False,
        }
    ]


async def test_a_referral_cycle_is_blocked_and_shadow_mode_only_reports_it(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given ana referred bob, and bob referred cem
    await _program(admin)
    await sign_up(integration, {"externalId": "ana", "attributes": {"email": "ana@x.com"}})
    await sign_up(integration, {"externalId": "bob", "referralCode": await code_of(integration, "ana")})
    bob_code = await code_of(integration, "bob")
    await sign_up(integration, {"externalId": "cem", "referralCode": bob_code})
    # when ana signs up again under a new externalId with bob's code (A -> B -> A)
    payload = await sign_up(
        integration, {"externalId": "ana-2", "referralCode": bob_code, "attributes": {"email": "ANA@x.com"}}
    )
    # then it is a cycle: BLOCKED
    assert payload["referrals"][0]["status"] == "BLOCKED"
    assert payload["referrals"][0]["message"] == (
        "referral_cycle: new member ana-2 shares email ana@x.com with ana, 2 steps up the referrer "
        "bob's chain of referrers (a referral cycle)"
    )
    # and with the rule in shadow mode the same finding is kept but changes nothing
    await admin.data(SET_RULE, {"r": "referral_cycle", "s": True})
    cem_code = await code_of(integration, "cem")
    payload = await sign_up(
        integration, {"externalId": "ana-3", "referralCode": cem_code, "attributes": {"email": "ana@x.com"}}
    )
    assert payload["referrals"][0]["status"] == "PENDING"
    assert payload["referrals"][0]["message"] == (
        "referral_cycle (shadow): new member ana-3 shares email ana@x.com with ana, 3 steps up the "
        "referrer cem's chain of referrers (a referral cycle)"
    )


async def test_referral_velocity_holds_for_review_and_a_reviewer_decides(
    services: Services, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given at most 2 referrals per referrer and day
    await _program(admin)
    await admin.data(SET_RULE, {"r": "referral_velocity", "p": {"maxPerDay": 2}})
    await sign_up(integration, {"externalId": "ana"})
    code = await code_of(integration, "ana")
    # when three members sign up with ana's code in one day (two calls)
    first = await sign_up(integration, {"externalId": "m1", "referralCode": code})
    rest = await sign_up(
        integration, {"externalId": "m2", "referralCode": code}, {"externalId": "m3", "referralCode": code}
    )
    # then the third is HELD for review with no reward
    assert [r["status"] for r in first["referrals"] + rest["referrals"]] == ["PENDING", "PENDING", "HELD"]
    assert rest["referrals"][1]["message"] == (
        "referral_velocity: referrer ana: 3 referrals in 24 h (review above 2)"
    )
    m3 = await member(integration, "m3")
    assert m3["pointsBalance"] == 0
    # and it is in the reviewers' queue
    [held] = (await admin.data(HELD))["referrals"]["items"]
    assert (held["referredExternalId"], held["status"]) == ("m3", "HELD")
    # and a purchase meanwhile is noted but pays nothing while it is held
    await record(integration, purchase("p1", "m3", clock.now()))
    # when a reviewer approves it
    approved = (await admin.data(DECIDE, {"id": held["id"], "a": True, "n": "known family"}))[
        "decideReferral"
    ]
    # then m3 gets its joining reward now and the referral waits on the purchase already made
    assert (approved["status"], approved["joinPoints"], approved["qualifyingEventExternalId"]) == (
        "WAITING",
        50,
        "p1",
    )
    m3 = await member(integration, "m3")
    assert m3["pointsBalance"] == 80  # 50 to join, 30 for the purchase
    # and a second decision is refused
    error = await admin.error(DECIDE, {"id": held["id"], "a": False, "n": "no"})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        f"id: referral {held['id']} is WAITING, not HELD",
    )
    clock.shift(timedelta(days=15))
    assert await services.referral_payouts.pass_once() == PayoutPass(1, 0)


async def test_erasure_voids_the_code_and_export_holds_the_referrals(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given bob joined with ana's code
    await _program(admin)
    await sign_up(integration, {"externalId": "ana"})
    code = await code_of(integration, "ana")
    await sign_up(integration, {"externalId": "bob", "referralCode": code})
    # then both exports hold the referral data
    exported = (await admin.data('{ exportMember(externalId: "bob") }'))["exportMember"]
    assert exported["referrals"]["joinedWith"]["status"] == "PENDING"
    assert exported["referrals"]["joinedWith"]["points"] == 50
    exported = (await admin.data('{ exportMember(externalId: "ana") }'))["exportMember"]
    assert exported["referrals"]["referralCode"] == code
    assert [m["status"] for m in exported["referrals"]["made"]] == ["PENDING"]
    # when ana is erased
    await admin.data('mutation { eraseMember(externalId: "ana") }')
    # then her code is void: nobody signs up with it, and bob's open referral is cancelled
    payload = await sign_up(integration, {"externalId": "cem", "referralCode": code})
    assert [r["error"] for r in payload["referrals"]] == ["REFERRAL_CODE_UNKNOWN"]
    bob = await member(integration, "bob")
    assert (bob["referredBy"]["status"], bob["referredBy"]["code"]) == ("CANCELLED", "")


async def test_parallel_signups_with_one_code_respect_the_velocity_limit(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given at most 2 referrals per referrer and day
    await _program(admin)
    await admin.data(SET_RULE, {"r": "referral_velocity", "p": {"maxPerDay": 2}})
    await sign_up(integration, {"externalId": "ana"})
    code = await code_of(integration, "ana")
    # when six new members sign up with ana's code in parallel requests
    answers = await asyncio.gather(
        *(sign_up(integration, {"externalId": f"m{i}", "referralCode": code}) for i in range(6))
    )
    # then exactly two go on and four are held: the referrer's row serializes the count
    statuses = sorted(a["referrals"][0]["status"] for a in answers)
    assert statuses == ["HELD"] * 4 + ["PENDING"] * 2


async def test_two_payout_workers_pay_a_referral_once(
    services: Services, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a referral whose wait has passed
    await _program(admin)
    await sign_up(integration, {"externalId": "ana"})
    await sign_up(integration, {"externalId": "bob", "referralCode": await code_of(integration, "ana")})
    await record(integration, purchase("p1", "bob", clock.now()))
    clock.shift(timedelta(days=15))
    # when two workers run a pass at the same time
    other = ReferralPayouts(services.db, clock)
    passes = await asyncio.gather(services.referral_payouts.pass_once(), other.pass_once())
    # then one of them pays it, once
    assert sum(p.completed for p in passes) == 1
    assert (await member(integration, "ana"))["pointsBalance"] == 200
