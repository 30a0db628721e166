"""Leaderboards read through GraphQL, and the standings feed drained as the server's loop would."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from gamification.leaderboards.feeder import StandingsFeeder
from tests.support.graphql import GraphQLClient

if TYPE_CHECKING:
    from api.runtime import Services

BOARD = """
query($key: String!, $period: LeaderboardPeriod!, $start: DateTime, $member: String!, $radius: Int) {
  leaderboard(key: $key, period: $period, periodStart: $start) {
    key period periodStart size frozen
    top(first: 10) { rank score member { externalId } }
    around(memberExternalId: $member, radius: $radius) { rank score member { externalId } }
    entry(memberExternalId: $member) { rank score }
  }
}"""


async def feed(services: Services) -> None:
    """Drain the standings feed here (a server process another test ran may still hold the lease)."""
    feeder = next(loop for loop in services.loops if isinstance(loop, StandingsFeeder))
    await feeder.lease.take_over()
    while await feeder.run_once():
        pass


async def board(
    client: GraphQLClient,
    member: str = "nobody",
    period: str = "ALL_TIME",
    start: datetime | None = None,
    radius: int = 1,
    key: str = "points",
) -> dict[str, Any]:
    """The leaderboard: its top 10, the entries around `member` and `member`'s own entry."""
    variables = {
        "key": key,
        "period": period,
        "start": start and start.isoformat(),
        "member": member,
        "radius": radius,
    }
    data: dict[str, Any] = (await client.data(BOARD, variables))["leaderboard"]
    return data


def ranking(entries: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    """(rank, member externalId, score) of each entry."""
    return [(e["rank"], e["member"]["externalId"], e["score"]) for e in entries]
