"""Promotions under parallel requests (issue 21): 20 recordEvents batches at once spend a budget
exactly, and a member cap holds. Budgets hold by the promotion's row lock, taken in id order after
the batch's member locks; member caps by the member locks (docs/promotions.md, "Concurrency").
Runs on PostgreSQL and SQLite (which serializes the writers)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.support import ShiftableClock
from tests.support.events import RECORD_WITH_POINTS, event, join
from tests.support.graphql import GraphQLClient
from tests.support.promotions import LIST, create, entries


async def _batches(integration: GraphQLClient, batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    answers = await asyncio.gather(*(integration.data(RECORD_WITH_POINTS, {"events": b}) for b in batches))
    return [r for answer in answers for r in answer["recordEvents"]["results"]]


async def test_twenty_parallel_batches_spend_a_budget_exactly(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given 20 members and double points with a budget of 1234
    members = [f"m{i}" for i in range(20)]
    await join(integration, *members)
    await create(admin, budgetPoints=1234)
    at = clock.now() - timedelta(minutes=1)

    # when each member's batch of two purchases of 50 races the others (4000 promoted points asked)
    batches = [[event(m, "purchase", at, "50"), event(m, "purchase", at, "50")] for m in members]
    results = await _batches(integration, batches)

    # then every event is accepted and the promotions paid exactly the budget
    assert {r["status"] for r in results} == {"ACCEPTED"}
    assert sum(r["pointsAwarded"] for r in results) == 40 * 50 + 1234
    paid = [p["points"] for m in members for e in await entries(admin, m) for p in e["promotions"]]
    assert sum(paid) == 1234
    assert (await admin.data(LIST))["promotions"][0]["spentPoints"] == 1234


async def test_parallel_batches_of_one_member_keep_its_cap(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given 10 bonus points per purchase, at most 35 per member in total
    await join(integration, "ana")
    await create(admin, multiplier=None, bonusPoints=10, capPoints=35, capPeriod="TOTAL")
    at = clock.now() - timedelta(minutes=1)

    # when ten batches of one purchase each race
    results = await _batches(integration, [[event("ana", "purchase", at, "1")] for _ in range(10)])

    # then the promotion paid 35 in all
    assert sum(r["pointsAwarded"] for r in results) == 10 * 1 + 35
