"""segmentChanges over a real WebSocket on real server processes, fanned out through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.events import event, join, record_accepted
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.live import CHANGES, SETTLE_S, bearer
from tests.support.segments import create
from tests.support.servers import PROTOCOL, Server, running_server, subscribe


@pytest.fixture(scope="module")
async def server(settings: Settings) -> AsyncIterator[Server]:
    """One server process for the module's tests (each on a program of its own); a test that needs a
    server set up otherwise starts its own."""
    async with running_server(settings) as running:
        yield running


async def test_a_subscriber_sees_a_recorded_event_move_a_member_in_and_out(
    server: Server, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await create(admin, "buyers", "count(purchase) >= 1")
    await create(admin, "big", "sum(purchase.amount) >= 100")
    await join(integration, "ana")
    async with subscribe(server, bearer(admin.token), CHANGES, {"keys": ["big"]}) as changes:
        await asyncio.sleep(SETTLE_S)
        await record_accepted(integration, [event("ana", "purchase", clock.now(), "150")])
        got = (await changes.next())["segmentChanges"]
        assert (got["segmentKey"], got["memberExternalId"], got["change"]) == ("big", "ana", "ENTERED")
        # "buyers" changed too, but this subscription asked for "big" only: nothing else arrives
        with pytest.raises(TimeoutError):
            await changes.next(wait=1)


@pytest.mark.slow  # two server processes: a deployment of several processes runs on PostgreSQL
async def test_changes_caused_on_one_process_reach_a_subscriber_on_another(
    settings: Settings,
    admin: GraphQLClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
) -> None:
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, "m0", "m1", "m2")
    async with (
        running_server(settings) as first,
        running_server(settings) as second,
        subscribe(first, bearer(admin.token), CHANGES) as changes,
    ):
        await asyncio.sleep(SETTLE_S)
        recorded = await second.graphql(
            program.api_key,
            "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status } } }",
            {"e": [event(f"m{i}", "purchase", clock.now(), "5") for i in range(3)]},
        )
        assert [r["status"] for r in recorded["recordEvents"]["results"]] == ["ACCEPTED"] * 3
        got = [(await changes.next())["segmentChanges"] for _ in range(3)]
    assert sorted(g["memberExternalId"] for g in got) == ["m0", "m1", "m2"]
    assert {g["change"] for g in got} == {"ENTERED"}
    cursors = [int(g["cursor"]) for g in got]
    assert cursors == sorted(cursors)  # log order


async def test_since_replays_what_a_reconnecting_subscriber_missed_then_goes_live(
    server: Server, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, "a", "b", "c", "d")
    await record_accepted(integration, [event("a", "purchase", clock.now(), "1")])
    history = await admin.data('{ segment(key: "buyers") { changes { cursor memberExternalId } } }')
    first = history["segment"]["changes"][0]
    await record_accepted(integration, [event(m, "purchase", clock.now(), "1") for m in ("b", "c")])
    async with subscribe(
        server, bearer(admin.token), CHANGES, {"keys": ["buyers"], "since": first["cursor"]}
    ) as changes:
        replayed = [(await changes.next())["segmentChanges"]["memberExternalId"] for _ in range(2)]
        assert replayed == ["b", "c"]
        await asyncio.sleep(SETTLE_S)
        await record_accepted(integration, [event("d", "purchase", clock.now(), "1")])
        assert (await changes.next())["segmentChanges"]["memberExternalId"] == "d"


async def test_a_slow_subscriber_is_closed_with_the_cursor_to_resume_from_and_never_slows_ingest(
    settings: Settings, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, *(f"s{i}" for i in range(40)))
    received: list[dict[str, Any]] = []
    async with (
        running_server(settings, {"LOYALTY_SUBSCRIBER_QUEUE": "5"}) as server,
        subscribe(server, bearer(admin.token), CHANGES, {"keys": ["buyers"]}) as changes,
    ):
        await asyncio.sleep(SETTLE_S)
        # the client reads nothing while 40 members enter: its queue (5) overflows
        await record_accepted(integration, [event(f"s{i}", "purchase", clock.now(), "1") for i in range(40)])
        with pytest.raises(ConnectionClosed) as closed:
            await changes.drain(received)
    received = [r["segmentChanges"] for r in received]
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4008
    assert "too slow" in closed.value.rcvd.reason
    assert len(received) <= 5
    if received:  # the reason names the last delivered change's cursor
        assert f'since: "{received[-1]["cursor"]}"' in closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "connection_init needs a payload"),
        ({"authorization": "Bearer nonsense"}, "malformed or its signature is wrong"),
        ({"token": "lk_nonsense"}, "unknown or revoked API key"),
    ],
)
async def test_a_connection_without_a_valid_admin_token_is_refused(
    server: Server, payload: dict[str, str], reason: str
) -> None:
    async with connect(server.ws, subprotocols=[PROTOCOL]) as connection:  # type: ignore[list-item]
        await connection.send(orjson.dumps({"type": "connection_init", "payload": payload}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403
    assert reason in closed.value.rcvd.reason
    assert closed.value.rcvd.reason


async def test_a_member_token_is_refused(
    server: Server, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await join(integration, "mia")
    token = (await integration.data('mutation { issueMemberToken(memberExternalId: "mia") { token } }'))[
        "issueMemberToken"
    ]["token"]
    async with connect(server.ws, subprotocols=[PROTOCOL]) as connection:  # type: ignore[list-item]
        await connection.send(orjson.dumps({"type": "connection_init", "payload": bearer(token)}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403
    assert closed.value.rcvd.reason == "segmentChanges is not open to member tokens; it needs segments:read"


async def test_bad_subscription_arguments_get_errors_that_name_them(
    server: Server, admin: GraphQLClient
) -> None:
    for variables, fault in (
        ({"keys": ["nope"]}, "segmentKeys[0]: no segment 'nope'"),
        ({"since": "yesterday"}, "since: 'yesterday' is not a change cursor"),
    ):
        async with subscribe(server, bearer(admin.token), CHANGES, variables) as changes:
            message = await changes.message()
        assert message["type"] in ("next", "error"), message
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        assert fault in errors[0]["message"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_time_alone_moves_a_member_within_a_minute_on_the_running_server(
    server: Server, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    """No event, no recompute: the server's scheduler flips the membership when the window edge passes."""
    await create(admin, "lapsed", "days_since_last(purchase) >= 30")
    await join(integration, "t1")
    clock.reset()  # real time, as the server sees it
    edge = clock.now() + timedelta(seconds=3)
    await record_accepted(integration, [event("t1", "purchase", edge - timedelta(days=30), "1")])
    member = '{ member(externalId: "t1") { segments { key } } }'
    assert (await admin.data(member))["member"]["segments"] == []
    async with subscribe(server, bearer(admin.token), CHANGES, {"keys": ["lapsed"]}) as changes:
        got = (await changes.next(wait=60))["segmentChanges"]
    assert (got["memberExternalId"], got["change"]) == ("t1", "ENTERED")
    flipped = datetime.fromisoformat(got["at"])
    assert edge <= flipped < edge + timedelta(seconds=60)
    assert (await admin.data(member))["member"]["segments"] == [{"key": "lapsed"}]
