"""Redis goes down in the middle of a stream: every subscriber still gets every committed change once, in
log order, or is closed with 4008 and a cursor from which `since` replays exactly the rest."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime

import pytest
from websockets.exceptions import ConnectionClosed

from api.runtime import Services
from domain.live.relay import read_changes
from domain.models import Segment, SegmentChange
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.changelog import relayed_through
from tests.support.events import RECORD, event, join
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.live import CHANGES, bearer
from tests.support.outage import eventually, redis_server, until
from tests.support.proxy import tcp_proxy
from tests.support.segments import create
from tests.support.servers import Server, running_server, subscribe

RESUME = re.compile(r'since: "(\d+)"')
Change = tuple[str, str, str, str]  # cursor, segment key, member, ENTERED/LEFT


class Follower:
    """One client of segmentChanges, read in the background from `since: "0"` on; after a 4008 it
    reconnects with the cursor the close reason names, as the dashboard does."""

    def __init__(self, server: Server, token: str, keys: list[str] | None) -> None:
        self.server = server
        self.token = token
        self.keys = keys
        self.received: list[Change] = []
        self.closes: list[str] = []
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        since = "0"
        while True:
            variables = {"keys": self.keys, "since": since}
            try:
                async with subscribe(self.server, bearer(self.token), CHANGES, variables) as changes:
                    while True:
                        got = (await changes.next(wait=3600))["segmentChanges"]
                        self.received.append(
                            (got["cursor"], got["segmentKey"], got["memberExternalId"], got["change"])
                        )
            except ConnectionClosed as closed:
                reason = closed.rcvd.reason if closed.rcvd is not None and closed.rcvd.code == 4008 else ""
                resume = RESUME.search(reason)
                if resume is None:  # not a resumable close: check() reports it
                    raise
                self.closes.append(reason)
                since = resume.group(1)

    def check(self) -> None:
        if self.task.done():
            self.task.result()  # raises what ended it

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def logged(services: Services, program: ProgramFixture, keys: Sequence[str] | None) -> list[Change]:
    """The program's change log as a subscriber with these keys should see it."""
    where = SegmentChange.program_id == program.id
    if keys is not None:
        where &= Segment.key.in_(keys)
    async with services.db.read() as session:
        rows = await read_changes(session, where, 100_000)
    return [(str(r.id), r.segment_key, r.member_external_id, r.change) for r in rows]


async def purchases(server: Server, program: ProgramFixture, members: Sequence[str], at: datetime) -> None:
    """Each member buys for 150: it enters "buyers" and "big" (two changes)."""
    for start in range(0, len(members), 50):
        batch = [event(m, "purchase", at, "150") for m in members[start : start + 50]]
        results = (await server.graphql(program.api_key, RECORD, {"e": batch}))["recordEvents"]["results"]
        assert {r["status"] for r in results} == {"ACCEPTED"}, results


@pytest.mark.slow
async def test_subscribers_lose_nothing_when_redis_goes_down_in_the_middle_of_a_stream(
    settings: Settings,
    services: Services,
    admin: GraphQLClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    clock: ShiftableClock,
) -> None:
    # given two segments and members who have bought nothing yet
    await create(admin, "buyers", "count(purchase) >= 1")
    await create(admin, "big", "sum(purchase.amount) >= 100")
    before, during, after = (
        [f"{phase}{i}" for i in range(n)] for phase, n in (("b", 10), ("d", 150), ("a", 10))
    )
    await join(integration, *before, *during, *after)
    assert admin.token is not None
    followers: list[Follower] = []

    async def caught_up() -> bool:
        for follower in followers:
            follower.check()
            if len(follower.received) < len(await logged(services, program, follower.keys)):
                return False
        return True

    # and two server processes on a Redis of the test's own: `relaying` reaches it directly and runs
    # the relay; `cut_off` reaches it through a link the test cuts, has no relay and a queue of 50
    async with (
        redis_server() as redis,
        tcp_proxy("127.0.0.1", redis.port) as cable,
        running_server(settings, {"LOYALTY_REDIS_URL": redis.url}) as relaying,
        running_server(
            settings,
            {
                "LOYALTY_REDIS_URL": cable.redis_url,
                "LOYALTY_BACKGROUND": "0",
                "LOYALTY_SUBSCRIBER_QUEUE": "50",
            },
        ) as cut_off,
    ):
        followers.extend(
            Follower(server, admin.token, keys) for server in (relaying, cut_off) for keys in (None, ["big"])
        )
        try:
            # when changes stream live to four subscribers
            await purchases(relaying, program, before, clock.now())
            await until(caught_up, "every subscriber received the changes made before the outage")

            # and Redis goes down while 300 changes commit
            await redis.stop()
            await cable.cut()
            await purchases(relaying, program, during, clock.now())

            # and comes back empty on the same port; the relay publishes the backlog while `cut_off`
            # cannot hear it yet
            await redis.start()
            end = int((await logged(services, program, None))[-1][0])

            async def backlog_published() -> bool:
                return await relayed_through(services) >= end

            await until(backlog_published, "the relay published the backlog")
            await cable.restore()

            # and more changes commit afterwards, through the process that was cut off
            await purchases(cut_off, program, after, clock.now())

            # then every subscriber has every change of its segments once, in log order
            await eventually(caught_up)
            for follower in followers:
                assert follower.received == await logged(services, program, follower.keys), (
                    follower.server.port,
                    follower.keys,
                    follower.closes,
                )
        finally:
            for follower in followers:
                await follower.stop()
