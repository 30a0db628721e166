"""recordEvents through the real GraphQL endpoint: the pipeline's per-event outcomes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from api.runtime import Services
from domain.models import EventAggregate, LedgerEntry, Member
from domain.programs.service import ProgramSettings
from tests.support.events import NOW, RECORD_WITH_POINTS, UPSERT, event_with_id, record_results
from tests.support.graphql import GraphQLClient, ProgramFixture, new_program
from tests.support.inputs import nested

MEMBER = "query($id: String!) { member(externalId: $id) { pointsBalance pendingPoints } }"


@pytest.fixture
async def members(integration: GraphQLClient) -> GraphQLClient:
    await integration.data(UPSERT, {"m": [{"externalId": "m1"}, {"externalId": "m2"}]})
    return integration


async def test_purchase_earns_floored_points_per_currency_unit(members: GraphQLClient) -> None:
    results = await record_results(
        members, event_with_id("e1", amount="129.90"), event_with_id("e2", type_="visit")
    )
    assert results == [
        {"externalId": "e1", "status": "ACCEPTED", "pointsAwarded": 129, "message": None},
        {"externalId": "e2", "status": "ACCEPTED", "pointsAwarded": 10, "message": None},
    ]
    assert (await members.data(MEMBER, {"id": "m1"}))["member"] == {"pointsBalance": 139, "pendingPoints": 0}


async def test_the_same_external_id_twice_is_one_event(members: GraphQLClient) -> None:
    first = await record_results(members, event_with_id("dup", amount="10"))
    again = await record_results(
        members,
        event_with_id("dup", amount="10"),
        event_with_id("dup2", amount="5"),
        event_with_id("dup2", amount="5"),
    )
    changed = await record_results(members, event_with_id("dup", amount="99"))
    assert first[0]["status"] == "ACCEPTED"
    assert [r["status"] for r in again] == ["DUPLICATE", "ACCEPTED", "DUPLICATE"]
    assert again[0]["message"] == "externalId already recorded"
    assert again[2]["message"] == "externalId repeated earlier in this batch"
    assert changed[0] == {
        "externalId": "dup",
        "status": "DUPLICATE",
        "pointsAwarded": 0,
        "message": "externalId already recorded with different content; the first event is kept",
    }
    assert (await members.data(MEMBER, {"id": "m1"}))["member"]["pointsBalance"] == 15


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"memberExternalId": "ghost"}, "memberExternalId: no member 'ghost' in this program"),
        ({"occurredAt": (NOW + timedelta(days=1)).isoformat()}, "occurredAt: "),
        # a date that does not parse failed the whole batch
        (
            {"occurredAt": "yesterday"},
            "occurredAt: 'yesterday' is not an ISO 8601 date-time with a UTC offset",
        ),
        ({"occurredAt": 1764000000}, "occurredAt: '1764000000' is not an ISO 8601 date-time"),
        ({"amount": "-1"}, "amount: must not be negative, got -1"),
        ({"amount": "twelve"}, "amount: 'twelve' is not a decimal number"),
        ({"amount": "NaN"}, "amount: 'NaN' is not a decimal number: digits with an optional fraction"),
        ({"amount": "1.00001"}, "amount: at most 4 decimal places"),
        ({"amount": "1_000"}, "amount: '1_000' is not a decimal number"),
        ({"amount": " 5 "}, "amount: ' 5 ' is not a decimal number"),
        ({"amount": "1e3"}, "amount: '1e3' is not a decimal number"),
        ({"amount": "+5"}, "amount: '+5' is not a decimal number"),
        ({"amount": "0x10"}, "amount: '0x10' is not a decimal number"),
        ({"amount": "Infinity"}, "amount: 'Infinity' is not a decimal number"),
        ({"type": ""}, "type: must not be empty"),
        ({"type": "Purchase!"}, "type: 'Purchase!' does not match"),
        ({"properties": [1, 2]}, "properties: must be a JSON object, got an array"),
        ({"properties": {"blob": "x" * 20_000}}, "properties: 20011 bytes exceeds the limit of 16384"),
        ({"externalId": ""}, "externalId: must not be empty"),
        # PostgreSQL's text and jsonb refuse NUL: one such event used to fail its whole batch as INTERNAL
        ({"externalId": "bad\u0000"}, "externalId: contains a NUL character"),
        ({"memberExternalId": "m1\u0000"}, "memberExternalId: contains a NUL character"),
        ({"properties": {"note": "a\u0000b"}}, "properties.note: contains a NUL character"),
        ({"properties": {"items": [{"sku": "\u0000"}]}}, "properties.items[0].sku: contains a NUL character"),
        ({"properties": {"a\u0000": 1}}, 'properties["a\\u0000"]: contains a NUL character'),
        ({"properties": nested(500)}, "properties: nested deeper than 32 levels"),
        # year 1 overflowed in the period arithmetic (INTERNAL); 1900 earned points
        (
            {"occurredAt": "0001-01-01T00:00:00+05:00"},
            "occurredAt: 0001-01-01T00:00:00+05:00 is outside the years 1900 to 2999 (UTC)",
        ),
        ({"occurredAt": "2026-01-01T00:00:00"}, "occurredAt: needs a UTC offset"),
        ({"occurredAt": "1900-01-01T00:00:00+00:00"}, "occurredAt: 1900-01-01T00:00:00+00:00 is older than"),
        # what rewards and segments count, only the engine records (a faked referral would pay)
        (
            {"type_": "referral_completed"},
            "type: referral_completed events are recorded by the engine itself",
        ),
        ({"type_": "coupon_redeemed"}, "type: coupon_redeemed events are recorded by the engine itself"),
    ],
)
async def test_a_bad_event_is_rejected_with_its_field_and_the_good_ones_pass(
    members: GraphQLClient, services: Services, program: ProgramFixture, bad: dict[str, Any], message: str
) -> None:
    results = await record_results(
        members,
        event_with_id("good-1", amount="10"),
        event_with_id("bad", **bad),
        event_with_id("good-2", amount="5"),
    )
    assert [r["status"] for r in results] == ["ACCEPTED", "REJECTED", "ACCEPTED"]
    assert results[1]["pointsAwarded"] == 0
    assert results[1]["message"].startswith(message)
    async with services.db.read() as session:
        entries = (
            await session.execute(select(LedgerEntry).where(LedgerEntry.program_id == program.id))
        ).scalars()
        assert sorted(e.idempotency_key for e in entries) == ["event:good-1", "event:good-2"]


async def test_a_nul_character_rejects_one_event_of_a_hundred_and_stores_the_rest(
    members: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    hourly = [(NOW - timedelta(hours=i + 1)).isoformat() for i in range(100)]  # under the velocity rule
    batch = [event_with_id(f"n{i}", amount="1", occurredAt=at) for i, at in enumerate(hourly)]
    batch[50] = event_with_id("n50", amount="1", occurredAt=hourly[50], properties={"note": "poison\u0000"})
    results = await record_results(members, *batch)
    assert results[50] == {
        "externalId": "n50",
        "status": "REJECTED",
        "pointsAwarded": 0,
        "message": "properties.note: contains a NUL character",
    }
    assert [r["status"] for r in results].count("ACCEPTED") == 99
    assert (await members.data(MEMBER, {"id": "m1"}))["member"]["pointsBalance"] == 99


async def test_the_oldest_accepted_event_is_a_program_setting(
    members: GraphQLClient, admin: GraphQLClient
) -> None:
    forty_days_ago = (NOW - timedelta(days=40)).isoformat()
    program = "{ program { maxEventAgeDays } }"
    assert (await admin.data(program))["program"] == {"maxEventAgeDays": 1826}  # about 5 years
    assert [
        r["status"] for r in await record_results(members, event_with_id("old-1", occurredAt=forty_days_ago))
    ] == ["ACCEPTED"]

    changed = await admin.data("mutation { setMaxEventAge(days: 30) { maxEventAgeDays } }")
    assert changed["setMaxEventAge"] == {"maxEventAgeDays": 30}
    results = await record_results(
        members, event_with_id("old-2", occurredAt=forty_days_ago), event_with_id("recent")
    )
    assert [r["status"] for r in results] == ["REJECTED", "ACCEPTED"]
    assert results[0]["message"] == (
        f"occurredAt: {forty_days_ago} is older than the program accepts (maxEventAgeDays: 30)"
    )

    for days in (0, 36_501):
        error = await admin.error(f"mutation {{ setMaxEventAge(days: {days}) {{ maxEventAgeDays }} }}")
        assert (error["extensions"]["code"], error["message"]) == (
            "BAD_USER_INPUT",
            f"days: must be between 1 and 36500, got {days}",
        )
    refused = await members.error("mutation { setMaxEventAge(days: 3) { maxEventAgeDays } }")
    assert refused["extensions"]["code"] == "FORBIDDEN"


def test_program_settings_replace_their_own_keys_only() -> None:
    stored = {"autoCreateMembers": False, "maxEventAgeDays": 30, "timezone": "Europe/Istanbul"}
    assert ProgramSettings(max_event_age_days=90).apply_to(stored) == {
        "autoCreateMembers": False,
        "maxEventAgeDays": 90,
        "timezone": "Europe/Istanbul",  # another service's setting
    }
    # a limit back at the default is not stored: the program follows the code's default
    assert ProgramSettings().apply_to(stored) == {"autoCreateMembers": False, "timezone": "Europe/Istanbul"}


async def test_a_recorded_event_sent_again_is_duplicate_even_when_now_too_old(
    members: GraphQLClient, admin: GraphQLClient
) -> None:
    forty_days_ago = (NOW - timedelta(days=40)).isoformat()
    assert [
        r["status"] for r in await record_results(members, event_with_id("kept", occurredAt=forty_days_ago))
    ] == ["ACCEPTED"]
    # when an admin lowers the limit and the client re-sends the batch
    await admin.data("mutation { setMaxEventAge(days: 30) { maxEventAgeDays } }")
    [again] = await record_results(members, event_with_id("kept", occurredAt=forty_days_ago))
    # then it learns that the event arrived (it was REJECTED, as if it had been lost)
    assert (again["status"], again["message"]) == ("DUPLICATE", "externalId already recorded")


async def test_a_rejected_copy_does_not_claim_its_external_id_in_the_batch(
    members: GraphQLClient, admin: GraphQLClient
) -> None:
    await admin.data("mutation { setMaxEventAge(days: 30) { maxEventAgeDays } }")
    old = (NOW - timedelta(days=40)).isoformat()
    results = await record_results(
        members,
        event_with_id("x1", occurredAt=old),  # rejected: the next copy is judged on its own
        event_with_id("x1", amount="5"),
        event_with_id("x2", member="ghost"),
        event_with_id("x2", amount="6"),
        event_with_id("x3", amount="7"),  # recorded: a later copy is a duplicate, whatever it holds
        event_with_id("x3", occurredAt=old),
    )
    assert [(r["externalId"], r["status"]) for r in results] == [
        ("x1", "REJECTED"),
        ("x1", "ACCEPTED"),
        ("x2", "REJECTED"),
        ("x2", "ACCEPTED"),
        ("x3", "ACCEPTED"),
        ("x3", "DUPLICATE"),
    ]
    assert (await members.data(MEMBER, {"id": "m1"}))["member"]["pointsBalance"] == 18


async def test_amounts_given_as_json_numbers_are_taken_as_they_are(members: GraphQLClient) -> None:
    results = await record_results(
        members, event_with_id("num-1", amount=12), event_with_id("num-2", amount=7.5)
    )
    assert [(r["status"], r["pointsAwarded"]) for r in results] == [("ACCEPTED", 12), ("ACCEPTED", 7)]


async def test_more_than_1000_events_is_refused_whole(members: GraphQLClient) -> None:
    error = await members.error(RECORD_WITH_POINTS, {"events": [event_with_id(f"e{i}") for i in range(1001)]})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "events: at most 1000 per call, got 1001"


async def test_accepted_events_fill_daily_buckets(members: GraphQLClient, services: Services) -> None:
    day = (NOW - timedelta(days=30)).replace(hour=9, minute=0, second=0)  # within maxEventAgeDays
    await record_results(
        members,
        event_with_id("a", amount="10.5", occurredAt=day.isoformat()),
        event_with_id("b", amount="2", occurredAt=(day + timedelta(hours=5)).isoformat()),
        event_with_id("c", amount="7", occurredAt=(day + timedelta(days=1)).isoformat()),
        event_with_id("d", type_="login", occurredAt=day.isoformat()),
    )
    await record_results(
        members, event_with_id("e", amount="30", occurredAt=(day + timedelta(hours=1)).isoformat())
    )
    async with services.db.read() as session:
        member_id = (
            (
                await session.execute(
                    select(Member.id).where(Member.external_id == "m1").order_by(Member.id.desc())
                )
            )
            .scalars()
            .first()
        )
        rows = (
            (
                await session.execute(
                    select(EventAggregate)
                    .where(EventAggregate.member_id == member_id)
                    .order_by(EventAggregate.event_type, EventAggregate.day)
                )
            )
            .scalars()
            .all()
        )
    summary = [
        (r.event_type, r.day.isoformat(), r.count, r.amount_sum, r.amount_min, r.amount_max) for r in rows
    ]
    first, second = day.date().isoformat(), (day + timedelta(days=1)).date().isoformat()
    assert summary == [
        ("login", first, 1, 0, None, None),
        ("purchase", first, 3, 425_000, 20_000, 300_000),
        ("purchase", second, 1, 70_000, 70_000, 70_000),
    ]
    purchase_day = rows[1]
    assert purchase_day.first_at == day
    assert purchase_day.last_at == day + timedelta(hours=5)


async def test_unknown_members_are_created_when_the_program_says_so(services: Services, client: Any) -> None:
    program = await new_program(services, auto_create=True)
    integration = GraphQLClient(client, program.api_key)
    results = await record_results(integration, event_with_id("x1", member="walk-in", amount="3"))
    assert results[0]["status"] == "ACCEPTED"
    assert (await integration.data(MEMBER, {"id": "walk-in"}))["member"]["pointsBalance"] == 3


async def test_earning_rules_are_editable(
    services: Services, client: Any, program: ProgramFixture, admin: GraphQLClient
) -> None:
    rule = await admin.data(
        'mutation { setEarningRule(input: {eventType: "purchase", pointsPerUnit: "2.5", fixedPoints: 5}) '
        "{ eventType pointsPerUnit fixedPoints } }"
    )
    assert rule["setEarningRule"] == {"eventType": "purchase", "pointsPerUnit": "2.5", "fixedPoints": 5}
    await admin.data(UPSERT, {"m": [{"externalId": "m1"}]})
    results = await record_results(admin, event_with_id("r1", amount="3.99"))
    assert results[0]["pointsAwarded"] == 14  # floor(3.99 * 2.5) + 5
    rules = (await admin.data("{ earningRules { eventType pointsPerUnit fixedPoints } }"))["earningRules"]
    assert {"eventType": "visit", "pointsPerUnit": None, "fixedPoints": 10} in rules
    bad = await admin.error(
        'mutation { setEarningRule(input: {eventType: "visit", fixedPoints: -3}) { eventType } }'
    )
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    assert bad["message"] == "fixedPoints: must be between 0 and 1000000, got -3"


async def test_events_given_inline_in_the_document_work_like_variables(members: GraphQLClient) -> None:
    at = (NOW - timedelta(hours=1)).isoformat()
    data = await members.data(
        f'mutation {{ recordEvents(events: [{{externalId: "lit-1", memberExternalId: "m1", type: "purchase", '
        f'occurredAt: "{at}", amount: "7.5", properties: {{store: "S1"}}}}, '
        f'{{externalId: "lit-2", memberExternalId: "m1", type: "visit", occurredAt: "{at}"}}]) '
        "{ results { externalId status pointsAwarded } } }"
    )
    assert data["recordEvents"]["results"] == [
        {"externalId": "lit-1", "status": "ACCEPTED", "pointsAwarded": 7},
        {"externalId": "lit-2", "status": "ACCEPTED", "pointsAwarded": 10},
    ]
