"""The spec's version 2 "dates" examples through the real GraphQL endpoint: birthday this week,
not on app 5 yet, push disabled, the Istanbul login streak, and setProgramTimezone re-evaluating
what counts local dates (in SQL on createSegment, in memory on each event, by the time-flip scheduler)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.runtime import Services
from tests.support import ShiftableClock, move_to
from tests.support.events import UPSERT, record_for
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_at
from tests.support.scheduler import flips_at
from tests.support.segments import create, members_of

DAY = timedelta(days=1)
TIMEZONE = "mutation($z: String!) { setProgramTimezone(timezone: $z) { timezone } }"
STREAK = '{ member(externalId: "ayse") { streak(eventType: "login") segments { key } } }'


def at_local(day: date, hour: int, minute: int, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


async def test_the_spec_examples_hold_exactly_their_members(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
) -> None:
    # given a New York program on Wednesday 25 February 2027, 23:30 local (26 February in UTC)
    now = at_local(date(2027, 2, 25), 23, 30, "America/New_York")
    admin = await admin_at(client, program, clock, now)
    await admin.data(TIMEZONE, {"z": "America/New_York"})
    members: list[dict[str, Any]] = [
        {"externalId": "leap", "attributes": {"birthDate": "2000-02-29"}, "channels": ["PUSH", "SMS"]},
        {"externalId": "next_week", "attributes": {"birthDate": "1990-03-04"}, "channels": ["PUSH"]},
        {"externalId": "today", "attributes": {"birthDate": "1990-02-25"}, "channels": ["SMS"]},
        {
            "externalId": "old_app",
            "attributes": {"device": {"os": "Android", "appVersion": "4.9.1"}},
            "channels": [],
        },
        {"externalId": "app_10", "attributes": {"device": {"os": "Android", "appVersion": "10.2"}}},
        {"externalId": "app_5", "attributes": {"device": {"os": "Android", "appVersion": "v5"}}},
        {"externalId": "ios_4", "attributes": {"device": {"os": "iOS", "appVersion": "4.0"}}},
    ]
    await integration.data(UPSERT, {"m": members})

    # when the spec's segments are created (computed in SQL)
    birthday = await create(admin, "birthday_week", "days_to_anniversary(birthDate) <= 6")
    await create(admin, "not_on_app_5", 'device.os = "Android" and version(device.appVersion) < "5.0"')
    push = await create(admin, "push_disabled", 'not (channels contains "PUSH")')

    # then each holds exactly the members its rule describes, and the trees are the spec's
    assert birthday["condition"] == {
        "date": "birthDate",
        "fn": "days_to_anniversary",
        "op": "lte",
        "value": 6,
    }
    assert push["rule"] == 'not channels contains "PUSH"'
    assert await members_of(admin, "birthday_week") == ["leap", "today"]
    assert await members_of(admin, "not_on_app_5") == ["old_app"]
    assert await members_of(admin, "push_disabled") == ["app_10", "app_5", "ios_4", "old_app", "today"]

    # when a member's app is updated (evaluated in memory, in the upsert's transaction)
    await integration.data(
        UPSERT, {"m": [{"externalId": "old_app", "attributes": {"device": {"appVersion": "5.0.0"}}}]}
    )
    # then they leave "not on app 5 yet"
    assert await members_of(admin, "not_on_app_5") == []

    # when a member without a birthday gives one in this week (a segment reading only the date)
    await integration.data(
        UPSERT, {"m": [{"externalId": "ios_4", "attributes": {"birthDate": "1985-03-02"}}]}
    )
    # then they join at once
    assert await members_of(admin, "birthday_week") == ["ios_4", "leap", "today"]

    # when the local date moves past "today"'s birthday (at New York's midnight) and the scheduler runs
    move_to(clock, at_local(date(2027, 2, 26), 0, 0, "America/New_York"))
    await flips_at(services, clock.now())
    # then "today" has its birthday a year ahead, and next week's birthday is now within six days
    assert await members_of(admin, "birthday_week") == ["ios_4", "leap", "next_week"]


ISTANBUL = "Europe/Istanbul"


async def istanbul_admin_and_ayse(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture, clock: ShiftableClock
) -> GraphQLClient:
    """The admin of the program moved to Istanbul at 09:00 local time on 15 March 2026, and the
    member ayse."""
    admin = await admin_at(client, program, clock, at_local(date(2026, 3, 15), 9, 0, ISTANBUL))
    await admin.data(TIMEZONE, {"z": ISTANBUL})
    await integration.data(UPSERT, {"m": [{"externalId": "ayse"}]})
    return admin


async def test_a_login_streak_counts_istanbul_dates_and_follows_a_timezone_change(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
) -> None:
    # given an Istanbul program and a member who logs in on 13, 14 and 15 March local time, the last
    # at 01:30 (22:30 UTC on the 14th: in UTC only two dates)
    zone = ISTANBUL
    admin = await istanbul_admin_and_ayse(client, integration, program, clock)
    logins = [
        ("l13", at_local(date(2026, 3, 13), 12, 0, zone)),
        ("l14", at_local(date(2026, 3, 14), 12, 0, zone)),
    ]
    await record_for(integration, "ayse", logins, type="login")
    await create(admin, "active", "streak(login) >= 3")
    assert (await integration.data(STREAK))["member"] == {"streak": 2, "segments": []}

    # when the 01:30 login arrives (evaluated in memory)
    await record_for(integration, "ayse", [("l15", at_local(date(2026, 3, 15), 1, 30, zone))], type="login")

    # then the streak is 3 local days and she is active
    assert (await integration.data(STREAK))["member"] == {"streak": 3, "segments": [{"key": "active"}]}

    # when the program moves to UTC, the same logins make two dates
    await admin.data(TIMEZONE, {"z": "UTC"})
    assert (await integration.data(STREAK))["member"] == {"streak": 2, "segments": []}
    assert await members_of(admin, "active") == []

    # and back to Istanbul: three again
    await admin.data(TIMEZONE, {"z": zone})
    assert (await integration.data(STREAK))["member"] == {"streak": 3, "segments": [{"key": "active"}]}


SET_LADDER = "mutation($i: TierLadderInput!) { setTierLadder(input: $i) { qualifier } }"
TIER = '{ member(externalId: "ayse") { tier { tier { key } qualifyingValue } segments { key } } }'


@pytest.mark.parametrize("qualifier", ["distinct_days(login, 7d)", "streak(login)"])
async def test_a_timezone_change_places_the_members_of_a_ladder_counting_local_dates_again(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    qualifier: str,
) -> None:
    # given an Istanbul program whose ladder counts login dates (silver from 3), a segment reading
    # the tier, and logins on 13, 14 and 15 March local time, the last at 01:30 (the 14th in UTC)
    zone = ISTANBUL
    admin = await istanbul_admin_and_ayse(client, integration, program, clock)
    logins = [
        ("l13", at_local(date(2026, 3, 13), 12, 0, zone)),
        ("l14", at_local(date(2026, 3, 14), 12, 0, zone)),
        ("l15", at_local(date(2026, 3, 15), 1, 30, zone)),
    ]
    await record_for(integration, "ayse", logins, type="login")
    tiers = [
        {"key": "bronze", "name": "Bronze", "threshold": "0"},
        {"key": "silver", "name": "Silver", "threshold": "3"},
    ]
    await admin.data(SET_LADDER, {"i": {"qualifier": qualifier, "tiers": tiers}})
    await create(admin, "regulars", 'in_segment("tier-silver")')
    silver = {"tier": {"key": "silver"}, "qualifyingValue": "3"}
    assert (await admin.data(TIER))["member"]["tier"] == silver
    assert await members_of(admin, "regulars") == ["ayse"]

    # when the program moves to UTC: two login dates
    await admin.data(TIMEZONE, {"z": "UTC"})

    # then she is placed at bronze at once, and leaves the segment reading silver
    member = (await admin.data(TIER))["member"]
    assert member["tier"] == {"tier": {"key": "bronze"}, "qualifyingValue": "2"}
    assert {"key": "tier-bronze"} in member["segments"]
    assert {"key": "tier-silver"} not in member["segments"]
    assert await members_of(admin, "regulars") == []

    # and back to Istanbul: silver again
    await admin.data(TIMEZONE, {"z": zone})
    assert (await admin.data(TIER))["member"]["tier"] == silver
    assert await members_of(admin, "regulars") == ["ayse"]
