"""Coupon pools through the GraphQL endpoint: definitions, generated and imported codes,
Member.coupons, and the till's validateCoupon / redeemCoupon (docs/promotions.md)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.runtime import Services
from domain.enums import Verdict
from domain.models import CouponCode, Event
from tests.support import ShiftableClock
from tests.support.coupons import (
    GENERATE,
    IMPORT,
    MEMBER_COUPONS,
    POOLS,
    REDEEM,
    SET_POOL,
    VALIDATE,
    coupons_of,
    issue_on_joining,
    join,
    judging,
    pool_input,
    pool_with_codes,
    redemption,
    refusal,
)
from tests.support.graphql import GraphQLClient, ProgramFixture, new_program
from tests.support.segments import members_of

SEGMENT = "mutation($i: SegmentInput!) { createSegment(input: $i) { key size } }"
ISSUE_TOKEN = "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }"
ERASE = "mutation($id: String!) { eraseMember(externalId: $id) }"
EXPORT = "query($id: String!) { exportMember(externalId: $id) }"


async def codes_in_db(services: Services, program_id: int) -> list[str]:
    async with services.db.read() as session:
        return list(await session.scalars(select(CouponCode.code).where(CouponCode.program_id == program_id)))


# ---------- pools ----------


async def test_a_pool_is_created_then_replaced_by_key(admin: GraphQLClient) -> None:
    created = (await admin.data(SET_POOL, {"i": pool_input()}))["setCouponPool"]
    assert created == {
        "key": "welcome",
        "name": "Welcome",
        "description": "10 % off your next purchase",
        "discountKind": "PERCENT",
        "discountValue": "10",
        "expiresAt": None,
        "validDays": 30,
        "available": 0,
        "issued": 0,
        "redeemed": 0,
    }
    changed = pool_input(
        discountKind="AMOUNT", discountValue="5.50", validDays=None, expiresAt="2030-01-01T00:00:00Z"
    )
    replaced = (await admin.data(SET_POOL, {"i": changed}))["setCouponPool"]
    assert (replaced["discountKind"], replaced["discountValue"], replaced["validDays"]) == (
        "AMOUNT",
        "5.5",
        None,
    )
    assert replaced["expiresAt"].startswith("2030-01-01T00:00:00")
    assert (await admin.data(POOLS))["couponPools"] == [
        {"key": "welcome", "available": 0, "issued": 0, "redeemed": 0}
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": "bad key"}, "key: 'bad key' does not match [A-Za-z0-9_-]{1,64}"),
        ({"name": " "}, "name: must be 1 to 200 characters"),
        (
            {"discountValue": "150"},
            "discountValue: PERCENT needs a value above 0 and at most 100, with at most 4 decimals",
        ),
        (
            {"discountValue": None},
            "discountValue: PERCENT needs a value above 0 and at most 100, with at most 4 decimals",
        ),
        ({"discountKind": "AMOUNT", "discountValue": "-1"}, "discountValue: AMOUNT needs a value above 0"),
        ({"discountKind": "OTHER"}, "discountValue: not used by OTHER"),
        ({"expiresAt": "2030-01-01T00:00:00Z"}, "validDays: give expiresAt or validDays, not both"),
        ({"validDays": 0}, "validDays: must be between 1 and 3650, got 0"),
    ],
)
async def test_a_bad_pool_is_refused_naming_the_field_and_nothing_is_stored(
    admin: GraphQLClient, overrides: dict[str, Any], message: str
) -> None:
    error = await admin.error(SET_POOL, {"i": pool_input(**overrides)})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith(message)
    assert (await admin.data(POOLS))["couponPools"] == []


# ---------- generated codes ----------


async def test_generated_codes_follow_the_pattern_and_are_unique(
    admin: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    await admin.data(SET_POOL, {"i": pool_input()})
    generated = await admin.data(GENERATE, {"p": "welcome", "pattern": "welcome-####-????", "n": 300})
    assert generated["generateCoupons"] == {"key": "welcome", "available": 300}
    codes = await codes_in_db(services, program.id)
    assert len(set(codes)) == 300
    assert all(re.fullmatch(r"WELCOME-[0-9]{4}-[ABCDEFGHJKMNPQRSTUVWXYZ]{4}", c) for c in codes)


async def test_a_crowded_pattern_still_gives_distinct_codes_across_calls(
    admin: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given a pattern of 1000 codes, filled 10 at a time to a fifth
    await admin.data(SET_POOL, {"i": pool_input()})
    for _ in range(20):
        await admin.data(GENERATE, {"p": "welcome", "pattern": "C###", "n": 10})
    # then every code is distinct: collisions were drawn again, never stored twice
    codes = await codes_in_db(services, program.id)
    assert (len(codes), len(set(codes))) == (200, 200)


@pytest.mark.parametrize(
    ("pattern", "count", "message"),
    [
        ("####", 101, "pattern: '####' makes 10000 codes, too few for 101 (at least 100 per code asked for)"),
        ("WELCOME", 1, "pattern: needs at least one placeholder"),
        ("-##??", 1, "pattern: '-##??' must be 1 to 64 of A-Z 0-9 _ -"),
        ("AB CD##", 1, "pattern: 'AB CD##' must be"),
        ("####", 0, "count: must be between 1 and 100000, got 0"),
    ],
)
async def test_a_pattern_too_small_or_malformed_is_refused(
    admin: GraphQLClient, services: Services, program: ProgramFixture, pattern: str, count: int, message: str
) -> None:
    await admin.data(SET_POOL, {"i": pool_input()})
    error = await admin.error(GENERATE, {"p": "welcome", "pattern": pattern, "n": count})
    assert (error["extensions"]["code"], error["message"][: len(message)]) == ("BAD_USER_INPUT", message)
    assert await codes_in_db(services, program.id) == []
    # the largest count the pattern allows is fine
    assert (await admin.data(GENERATE, {"p": "welcome", "pattern": "####", "n": 100}))["generateCoupons"][
        "available"
    ] == 100


async def test_generating_into_an_unknown_pool_is_not_found(admin: GraphQLClient) -> None:
    error = await admin.error(GENERATE, {"p": "nope", "pattern": "####", "n": 1})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "poolKey: no coupon pool 'nope' in this program",
    )


# ---------- imported codes ----------


async def test_an_import_stores_the_good_lines_and_reports_each_bad_one(
    admin: GraphQLClient, services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given a code that exists in another pool of the program
    await pool_with_codes(admin, ["TAKEN-1"], key="other")
    await admin.data(SET_POOL, {"i": pool_input()})
    tomorrow = (clock.now() + timedelta(days=1)).date().isoformat()
    yesterday = (clock.now() - timedelta(days=1)).date().isoformat()
    csv = "\n".join(
        [
            "code,expiresAt",  # 1: header
            "good-1",  # 2
            f"GOOD-2,{tomorrow}",  # 3
            "",  # 4: blank, skipped
            "bad code",  # 5
            "GOOD-1",  # 6: again
            f"OLD-1,{yesterday}",  # 7
            "WHEN-1,soon",  # 8
            "TAKEN-1",  # 9
            "A,B,C",  # 10
            "GOOD-3,2030-01-01T12:00:00",  # 11: no offset
        ]
    )
    result = (await admin.data(IMPORT, {"p": "welcome", "csv": csv}))["importCoupons"]
    assert result["imported"] == 2
    assert result["pool"] == {"available": 2}
    assert result["rejected"] == [
        {"line": 5, "message": "code: 'bad code' must be 1 to 64 of A-Z 0-9 _ -"},
        {"line": 6, "message": "code: GOOD-1 is already on line 2"},
        {"line": 7, "message": f"expiresAt: {yesterday} is already past"},
        {"line": 8, "message": "expiresAt: 'soon' is not an ISO date or date-time"},
        {"line": 9, "message": "code: TAKEN-1 already exists in this program"},
        {"line": 10, "message": "expected code or code,expiresAt"},
        {"line": 11, "message": "expiresAt: '2030-01-01T12:00:00' needs an offset (e.g. Z or +02:00)"},
    ]
    assert sorted(await codes_in_db(services, program.id)) == ["GOOD-1", "GOOD-2", "TAKEN-1"]


# ---------- the till ----------


@pytest.fixture
async def issued(admin: GraphQLClient, integration: GraphQLClient) -> dict[str, str]:
    """ana holds ANA-1, ben holds BEN-1 (issued on joining, 30 days valid); SPARE-1 is not issued."""
    await pool_with_codes(admin, ["ANA-1", "BEN-1", "SPARE-1"])
    await issue_on_joining(admin)
    await join(integration, "ana", "ben")
    codes = {m: (await coupons_of(integration, m))[0]["code"] for m in ("ana", "ben")}
    assert codes == {"ana": "ANA-1", "ben": "BEN-1"}
    return codes


async def test_a_valid_code_is_redeemed_once_and_a_retry_answers_the_same(
    integration: GraphQLClient, issued: dict[str, str], clock: ShiftableClock
) -> None:
    # given ana's code, valid
    valid = (await integration.data(VALIDATE, {"c": "ana-1", "m": "ana"}))["validateCoupon"]
    assert (valid["valid"], valid["reason"], valid["coupon"]["status"]) == (True, None, "ISSUED")
    # when the till redeems it (typed in lower case)
    first = (await integration.data(REDEEM, redemption("ana-1", "ana", "till-1", amount="42.50")))[
        "redeemCoupon"
    ]
    # then it is REDEEMED, once
    assert (first["status"], first["eventExternalId"], first["replayed"]) == (
        "REDEEMED",
        "coupon:till-1",
        False,
    )
    assert first["coupon"]["status"] == "REDEEMED"
    assert first["coupon"]["redeemedAt"] is not None
    # and the same request again answers the same, not COUPON_USED
    again = (await integration.data(REDEEM, redemption("ANA-1", "ana", "till-1")))["redeemCoupon"]
    assert again | {"replayed": False} == first
    assert again["replayed"] is True
    # while another request for the same code is refused
    assert await refusal(integration, "ANA-1", "ana", "till-2") == "COUPON_USED"
    used = (await integration.data(VALIDATE, {"c": "ANA-1", "m": "ana"}))["validateCoupon"]
    assert (used["valid"], used["reason"]) == (False, "COUPON_USED")
    (held,) = await coupons_of(integration, "ana")
    assert held["status"] == "REDEEMED"


async def test_each_refusal_has_its_own_code(
    services: Services,
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    issued: dict[str, str],
    clock: ShiftableClock,
) -> None:
    # unknown, not issued yet, or of another program: COUPON_UNKNOWN, alike
    assert await refusal(integration, "NOPE-1", "ana", "t1") == "COUPON_UNKNOWN"
    assert await refusal(integration, "SPARE-1", "ana", "t2") == "COUPON_UNKNOWN"
    other = await new_program(services)
    elsewhere = GraphQLClient(client, other.api_key)
    await join(elsewhere, "ana")
    assert await refusal(elsewhere, "ANA-1", "ana", "t3") == "COUPON_UNKNOWN"
    # issued to another member of the program: COUPON_FOREIGN, and validate shows nothing of it
    assert await refusal(integration, "BEN-1", "ana", "t4") == "COUPON_FOREIGN"
    foreign = (await integration.data(VALIDATE, {"c": "BEN-1", "m": "ana"}))["validateCoupon"]
    assert (foreign["valid"], foreign["reason"], foreign["coupon"]) == (False, "COUPON_FOREIGN", None)
    # past its expiry (30 days after issue): COUPON_EXPIRED, and Member.coupons says EXPIRED
    clock.shift(timedelta(days=30, seconds=1))
    assert await refusal(integration, "ANA-1", "ana", "t5") == "COUPON_EXPIRED"
    (expired,) = await coupons_of(integration, "ana")
    assert expired["status"] == "EXPIRED"
    # an unknown member is NOT_FOUND naming the field; an empty externalId is BAD_USER_INPUT
    error = await integration.error(REDEEM, redemption("ANA-1", "zoe", "t6"))
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "memberExternalId: no member 'zoe' in this program",
    )
    error = await integration.error(REDEEM, redemption("ANA-1", "ana", " "))
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "externalId: must not be empty",
    )


async def test_an_external_id_used_for_another_code_is_a_conflict(
    integration: GraphQLClient, issued: dict[str, str], admin: GraphQLClient
) -> None:
    await integration.data(REDEEM, redemption("ANA-1", "ana", "till-1"))
    error = await integration.error(REDEEM, redemption("BEN-1", "ben", "till-1"))
    assert (error["extensions"]["code"], error["message"]) == (
        "CONFLICT",
        "externalId: 'till-1' was used for another coupon redemption",
    )
    assert (await coupons_of(integration, "ben"))[0]["status"] == "ISSUED"


async def test_ten_parallel_redemptions_of_one_code_succeed_once(
    integration: GraphQLClient, issued: dict[str, str]
) -> None:
    results = await asyncio.gather(
        *(integration.execute(REDEEM, redemption("ANA-1", "ana", f"till-{i}")) for i in range(10))
    )
    redeemed = [r for r in results if "errors" not in r]
    refused = [r["errors"][0]["extensions"]["code"] for r in results if "errors" in r]
    assert len(redeemed) == 1
    assert refused == ["COUPON_USED"] * 9


async def test_parallel_retries_of_one_request_answer_the_same(
    integration: GraphQLClient, issued: dict[str, str]
) -> None:
    results = await asyncio.gather(
        *(integration.data(REDEEM, redemption("ANA-1", "ana", "till-1")) for _ in range(5))
    )
    answers = [r["redeemCoupon"] for r in results]
    assert sorted(a["replayed"] for a in answers) == [False, True, True, True, True]
    assert {a["coupon"]["redeemedAt"] for a in answers} == {answers[0]["coupon"]["redeemedAt"]}


@pytest.mark.parametrize(
    ("verdict", "answer", "code_status"),
    [
        # REVIEW: the code is used (the till handed the discount over); its event waits for a reviewer
        (Verdict.REVIEW, "HELD_FOR_REVIEW", "REDEEMED"),
        # BLOCK: refused, the code stays ISSUED; the blocked attempt is stored with its finding
        (Verdict.BLOCK, "COUPON_BLOCKED", "ISSUED"),
    ],
)
async def test_the_fraud_audit_judges_each_redemption(
    services: Services,
    program: ProgramFixture,
    integration: GraphQLClient,
    issued: dict[str, str],
    verdict: Verdict,
    answer: str,
    code_status: str,
) -> None:
    with judging(services, verdict):
        first = await integration.execute(REDEEM, redemption("ANA-1", "ana", "t1"))
        again = await integration.execute(REDEEM, redemption("ANA-1", "ana", "t1"))
    if verdict is Verdict.BLOCK:
        assert first["errors"][0]["extensions"]["code"] == again["errors"][0]["extensions"]["code"] == answer
    else:
        assert first["data"]["redeemCoupon"]["status"] == again["data"]["redeemCoupon"]["status"] == answer
    assert (await coupons_of(integration, "ana"))[0]["status"] == code_status
    async with services.db.read() as session:
        event = await session.scalar(
            select(Event).where(Event.program_id == program.id, Event.external_id == "coupon:t1")
        )
        assert event is not None
        assert (event.type, event.status) == (
            "coupon_redeemed",
            "BLOCKED" if verdict is Verdict.BLOCK else "HELD_FOR_REVIEW",
        )
        assert set(event.properties) == {"pool", "codeHash"}


async def test_segments_read_coupon_redeemed(
    admin: GraphQLClient, integration: GraphQLClient, issued: dict[str, str]
) -> None:
    rules = {
        "used": "count(coupon_redeemed, 30d) >= 1",
        "used_welcome": 'count(coupon_redeemed, 30d where pool = "welcome") >= 1',
        "spent": "sum(coupon_redeemed.amount, 90d) >= 20",
        "other_pool": 'count(coupon_redeemed, 30d where pool = "other") >= 1',
    }
    for key, rule in rules.items():
        await admin.data(SEGMENT, {"i": {"key": key, "name": key, "kind": "DYNAMIC", "rule": rule}})
    await integration.data(REDEEM, redemption("ANA-1", "ana", "till-1", amount="20"))
    assert {key: await members_of(admin, key) for key in rules} == {
        "used": ["ana"],
        "used_welcome": ["ana"],
        "spent": ["ana"],
        "other_pool": [],
    }


async def test_export_lists_the_codes_and_erasure_voids_them(
    admin: GraphQLClient, integration: GraphQLClient, issued: dict[str, str]
) -> None:
    await integration.data(REDEEM, redemption("BEN-1", "ben", "till-1"))
    document = (await admin.data(EXPORT, {"id": "ben"}))["exportMember"]
    (coupon,) = document["coupons"]
    assert {k: coupon[k] for k in ("code", "pool", "status", "redemptionExternalId")} == {
        "code": "BEN-1",
        "pool": "welcome",
        "status": "REDEEMED",
        "redemptionExternalId": "till-1",
    }
    # when ana is erased, her unused code can no longer be redeemed or found
    await admin.data(ERASE, {"id": "ana"})
    assert await refusal(integration, "ANA-1", "ben", "till-2") == "COUPON_UNKNOWN"
    pools = (await admin.data(POOLS))["couponPools"]
    assert pools == [{"key": "welcome", "available": 1, "issued": 0, "redeemed": 1}]


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"occurredAt": "2099-01-01T00:00:00Z"}, "occurredAt"), ({"amount": "-1"}, "amount")],
)
async def test_a_bad_redemption_event_is_refused_naming_the_field_and_the_code_stays_issued(
    integration: GraphQLClient, issued: dict[str, str], extra: dict[str, str], field: str
) -> None:
    error = await integration.error(REDEEM, redemption("ANA-1", "ana", "till-1", **extra))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith(f"{field}: "), error["message"]
    assert (await coupons_of(integration, "ana"))[0]["status"] == "ISSUED"
    # nothing was stored: the same externalId redeems afterwards
    done = (await integration.data(REDEEM, redemption("ANA-1", "ana", "till-1")))["redeemCoupon"]
    assert (done["status"], done["replayed"]) == ("REDEEMED", False)


async def test_member_coupons_are_bounded_and_a_member_reads_its_own(
    client: httpx.AsyncClient, integration: GraphQLClient, issued: dict[str, str]
) -> None:
    token = (await integration.data(ISSUE_TOKEN, {"m": "ana"}))["issueMemberToken"]["token"]
    ana = GraphQLClient(client, token)
    assert [c["code"] for c in await coupons_of(ana, "ana")] == ["ANA-1"]
    error = await integration.error(MEMBER_COUPONS, {"id": "ana", "first": 501})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "first: must be between 0 and 500, got 501",
    )
