"""Member.streak through the real GraphQL endpoint: the same number `streak(type)` segments compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.runtime import Services
from tests.support import ShiftableClock, move_to
from tests.support.audit import VerdictFromProperties
from tests.support.events import UPSERT, record_for
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_at
from tests.support.scheduler import flips_at

STREAKS = """{ members(first: 50) { edges { node {
    externalId streak(eventType: "login") purchases: streak(eventType: "purchase") segments { key } } } } }"""
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


#: Login days (days before NOW) of each member, and the streak they make on NOW.
HISTORIES = {
    "ana": ((0, 1, 2), 3),  # today and the two days before
    "ben": ((1, 2), 2),  # none yet today: counted up to yesterday
    "cy": ((0, 1, 3, 4), 2),  # a gap two days ago ends the streak
    "dee": ((), 0),  # never logged in
    "eve": ((1, 2, 3), 3),  # up to yesterday
    "fay": ((2, 3, 4, 5), 0),  # last seen the day before yesterday
}


async def streaks(client: GraphQLClient) -> dict[str, tuple[int, int, bool]]:
    """Per member: its login streak, its purchase streak, and whether it is in the `active` segment."""
    data = await client.data(STREAKS)
    nodes: list[dict[str, Any]] = [e["node"] for e in data["members"]["edges"]]
    return {n["externalId"]: (n["streak"], n["purchases"], {"key": "active"} in n["segments"]) for n in nodes}


async def test_member_streaks_and_a_streak_segment_agree(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
) -> None:
    # given members with login histories ending on 20 November 2026, at noon UTC
    admin = await admin_at(client, program, clock, NOW)
    await integration.data(UPSERT, {"m": [{"externalId": name} for name in HISTORIES]})
    for name, (days, _) in HISTORIES.items():
        if days:
            events = [(f"{name}-{d}", NOW - d * DAY) for d in days]
            await record_for(integration, name, events, type="login")

    # when the segment `streak(login) >= 3` is created (computed in SQL)
    await admin.data(
        "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }",
        {"i": {"key": "active", "name": "Active", "kind": "DYNAMIC", "rule": "streak(login) >= 3"}},
    )

    # then each member's streak is as expected, and the segment holds exactly those at 3 or more
    assert await streaks(integration) == {
        name: (expected, 0, expected >= 3) for name, (_, expected) in HISTORIES.items()
    }

    # when ben logs in today (evaluated in memory, inside the event's transaction)
    await record_for(integration, "ben", [("ben-today", NOW)], type="login")

    # then his streak is 3 and he is in the segment
    assert (await streaks(integration))["ben"] == (3, 0, True)

    # when two days pass with no logins and the time-flip scheduler runs
    move_to(clock, NOW + 2 * DAY)
    await flips_at(services, clock.now())

    # then every streak is 0 and the segment is empty
    assert set((await streaks(integration)).values()) == {(0, 0, False)}


async def test_a_streak_counts_utc_days_and_only_accepted_events(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given an audit that holds on request
    monkeypatch.setattr(services.events, "auditor", VerdictFromProperties())
    move_to(clock, NOW)
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})

    # when ana logs in at 23:59 and 00:01 UTC across two nights, and a held login fills the gap before
    await record_for(
        integration,
        "ana",
        [
            ("late", datetime(2026, 11, 18, 23, 59, tzinfo=UTC)),
            ("early", datetime(2026, 11, 19, 0, 1, tzinfo=UTC)),
            ("today", NOW),
        ],
        type="login",
    )
    await record_for(
        integration,
        "ana",
        [("held", datetime(2026, 11, 17, 9, 0, tzinfo=UTC))],
        type="login",
        properties={"verdict": "REVIEW"},
    )
    await record_for(integration, "ana", [("older", datetime(2026, 11, 16, 9, 0, tzinfo=UTC))], type="login")

    # then the streak is the 18th, 19th and 20th: the held login does not bridge to the 16th
    assert (await streaks(integration))["ana"] == (3, 0, False)


@pytest.mark.parametrize("event_type", ["Login", "", "9lives", "x" * 65, "log-in"])
async def test_a_bad_event_type_is_refused_naming_it(integration: GraphQLClient, event_type: str) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    error = await integration.error(
        'query($t: String!) { member(externalId: "ana") { streak(eventType: $t) } }', {"t": event_type}
    )
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        f"eventType: {event_type!r} does not match [a-z][a-z0-9_]{{0,63}}",
    )


async def test_a_member_token_reads_its_own_streak(
    client: httpx.AsyncClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    move_to(clock, NOW)
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    await record_for(integration, "ana", [("yesterday", NOW - DAY), ("today", NOW)], type="login")
    token = (await integration.data('mutation { issueMemberToken(memberExternalId: "ana") { token } }'))[
        "issueMemberToken"
    ]["token"]
    me = await GraphQLClient(client, token).data('{ me { streak(eventType: "login") } }')
    assert me == {"me": {"streak": 2}}
