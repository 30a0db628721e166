"""v2 metric operands that time alone changes flip at the exact instant, through the scheduler's passes:
a ledger window slides past the points earned, a ratio of windowed counts changes when a visit
leaves its window (tests/test_time_flips.py does the same for the version 1 operands)."""

from __future__ import annotations

from datetime import timedelta

from api.runtime import Services
from domain.members.service import MemberUpsert
from tests.support.graphql import new_program
from tests.support.scheduler import flips_at
from tests.test_time_flips import changes_of, define, due_of, record, segments_of

DAY = timedelta(days=1)
US = timedelta(microseconds=1)


async def test_points_earned_leaves_its_window_thirty_days_after_they_were_earned(services: Services) -> None:
    # given a segment of members who earned points in the last 30 days and a purchase at T
    program = await new_program(services)
    await define(services, program.id, "earning", "points_earned(30d) >= 1")
    await services.members.upsert_members(program.id, [MemberUpsert("p1")])
    bought = services.clock.now().replace(microsecond=654321) - timedelta(hours=2)
    await record(services, program.id, "p1", "purchase", bought)
    assert await segments_of(services, program.id, "p1") == {"earning"}
    assert await due_of(services, program.id, "p1") == bought + 30 * DAY

    # when the scheduler runs a microsecond early, then on time
    await flips_at(services, bought + 30 * DAY - US)
    assert await segments_of(services, program.id, "p1") == {"earning"}
    await flips_at(services, bought + 30 * DAY)

    # then the member left exactly at T + 30 d, and nothing is due any more
    assert await segments_of(services, program.id, "p1") == set()
    assert (await changes_of(services, program.id))[-1] == ("earning", "p1", "LEFT", bought + 30 * DAY)
    assert await due_of(services, program.id, "p1") is None


async def test_a_ratio_of_windowed_counts_flips_when_a_visit_leaves_its_window(services: Services) -> None:
    # given two visits a day apart and a purchase: two visits per purchase
    program = await new_program(services)
    await define(services, program.id, "browser", "count(visit, 30d) / count(purchase, 30d) >= 2")
    await services.members.upsert_members(program.id, [MemberUpsert("r1")])
    now = services.clock.now().replace(microsecond=111111) - timedelta(hours=3)
    await record(services, program.id, "r1", "visit", now - DAY, now)
    await record(services, program.id, "r1", "purchase", now)
    assert await segments_of(services, program.id, "r1") == {"browser"}

    # when the older visit leaves the window (1 visit per purchase), to the microsecond
    await flips_at(services, now + 29 * DAY - US)
    assert await segments_of(services, program.id, "r1") == {"browser"}
    await flips_at(services, now + 29 * DAY)

    # then the member left then; once everything has left the window the ratio is absent: still out
    assert await segments_of(services, program.id, "r1") == set()
    await flips_at(services, now + 31 * DAY)
    assert await segments_of(services, program.id, "r1") == set()
    assert await due_of(services, program.id, "r1") is None
