"""Promotions through the real GraphQL endpoint (docs/promotions.md): definitions, the accrual pass
(stacking, tiers, windows in the program's timezone, caps, budgets, held and blocked accruals,
refunds), bad input, and the simulation against what the promotion then pays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.runtime import Services
from tests.support import ShiftableClock
from tests.support.audit import holding
from tests.support.events import event, join, record_results
from tests.support.graphql import GraphQLClient
from tests.support.promotions import (
    CREATE,
    LIST,
    SET_ACTIVE,
    SIMULATE,
    UPDATE,
    balance,
    create,
    entries,
    promotion,
)

SET_TIMEZONE = 'mutation { setProgramTimezone(timezone: "Europe/Istanbul") { key } }'


def purchase(member: str, at: datetime, amount: str = "10", **properties: Any) -> dict[str, Any]:
    return event(member, "purchase", at, amount, **properties)


async def test_a_promotion_is_created_listed_updated_and_switched_off(admin: GraphQLClient) -> None:
    # when a promotion is created with a condition reading the event, then listed
    created = await create(admin, condition='event.category = "coffee" and event.amount >= 5', bonusPoints=5)
    listed = (await admin.data(LIST))["promotions"]

    # then it is stored as given, its condition normalised
    assert created == listed[0]
    assert created["condition"] == 'event.category = "coffee" and event.amount >= 5'
    assert (created["multiplier"], created["bonusPoints"], created["stacking"]) == ("2", 5, "STACK")
    assert (created["spentPoints"], created["active"]) == (0, True)

    # when it is updated and switched off
    updated = (await admin.data(UPDATE, {"i": promotion(multiplier="3", priority=5)}))["updatePromotion"]
    off = (await admin.data(SET_ACTIVE, {"k": "double", "a": False}))["setPromotionActive"]

    # then the new definition holds, and it is off
    assert (updated["multiplier"], updated["priority"], updated["condition"]) == ("3", 5, "true")
    assert off == {"key": "double", "active": False}


async def test_stacked_promotions_add_on_the_base_and_the_entry_names_them(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given double points on purchases and 5 bonus points on coffee
    await join(integration, "ana")
    await create(admin, "double", priority=1)
    await create(admin, "coffee", multiplier=None, bonusPoints=5, condition='event.category = "coffee"')

    # when ana buys coffee for 10 and tea for 10
    at = clock.now() - timedelta(minutes=5)
    results = await record_results(
        integration, purchase("ana", at, "10", category="coffee"), purchase("ana", at, "10", category="tea")
    )

    # then coffee earns 10 + 10 + 5 and tea 10 + 10, and the entries name the promotions
    assert [r["pointsAwarded"] for r in results] == [25, 20]
    tea, coffee = await entries(admin, "ana")
    assert coffee["promotions"] == [{"key": "double", "points": 10}, {"key": "coffee", "points": 5}]
    assert coffee["reason"].endswith("+ promotions: double +10, coffee +5")
    assert tea["promotions"] == [{"key": "double", "points": 10}]


async def test_the_highest_priority_exclusive_promotion_alone_applies(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given two overlapping exclusive promotions and a stackable one
    await join(integration, "ana")
    await create(admin, "triple", multiplier="3", stacking="EXCLUSIVE", priority=1)
    await create(admin, "quad", multiplier="4", stacking="EXCLUSIVE", priority=2)
    await create(admin, "bonus", multiplier=None, bonusPoints=7)

    # when ana buys for 10
    results = await record_results(integration, purchase("ana", clock.now() - timedelta(minutes=1)))

    # then only the priority-2 exclusive one adds: 10 + 30
    assert results[0]["pointsAwarded"] == 40
    assert (await entries(admin, "ana"))[0]["promotions"] == [{"key": "quad", "points": 30}]


async def test_a_tier_multiplier_multiplies_the_base_only(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a ladder whose gold tier earns 1.5x, ana in gold, and 3x coffee for gold
    ladder = """mutation { setTierLadder(input: {qualifier: "sum(purchase.amount, 365d)", tiers: [
      {key: "base", name: "Base", threshold: "0"},
      {key: "gold", name: "Gold", threshold: "100", earnMultiplier: "1.5"}]}) { qualifier } }"""
    await admin.data(ladder)
    await join(integration, "ana")
    await record_results(integration, purchase("ana", clock.now() - timedelta(hours=1), "200"))
    await create(
        admin,
        "gold-coffee",
        multiplier="3",
        condition='in_segment("tier-gold") and event.category = "coffee"',
    )

    # when ana buys coffee for 10
    results = await record_results(integration, purchase("ana", clock.now(), "10", category="coffee"))

    # then floor(10 x 1.5) + floor(10 x (3 - 1)) = 15 + 20
    assert results[0]["pointsAwarded"] == 35


async def test_the_window_is_local_to_the_program_timezone(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given a program in Istanbul (UTC+3) and a promotion for 2026-03-07 local
    await admin.data(SET_TIMEZONE)
    await join(integration, "ana")
    await create(admin, startsAt="2026-03-07T00:00", endsAt="2026-03-08T00:00")

    # when purchases occur just before and just after local midnight starting the day, and at its end
    before = datetime(2026, 3, 6, 20, 59, tzinfo=UTC)  # 23:59 local, the 6th
    inside = datetime(2026, 3, 6, 21, 0, tzinfo=UTC)  # 00:00 local, the 7th
    after = datetime(2026, 3, 7, 21, 0, tzinfo=UTC)  # 00:00 local, the 8th
    results = await _record_at(integration, [before, inside, after])

    # then only the one inside the local day is doubled
    assert [r["pointsAwarded"] for r in results] == [10, 20, 10]


async def _record_at(integration: GraphQLClient, times: list[datetime]) -> list[dict[str, Any]]:
    return await record_results(integration, *(purchase("ana", at) for at in times))


async def test_event_weekday_reads_the_program_timezone(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    # given Istanbul and double points on weekends
    await admin.data(SET_TIMEZONE)
    await join(integration, "ana")
    await create(admin, "weekend", condition="event.weekday in [6, 7]")

    # when ana buys on Friday 22:00 UTC (Saturday 01:00 local) and on Sunday 21:30 UTC (Monday local)
    results = await _record_at(
        integration, [datetime(2026, 3, 6, 22, 0, tzinfo=UTC), datetime(2026, 3, 8, 21, 30, tzinfo=UTC)]
    )

    # then the local Saturday is doubled, the local Monday not
    assert [r["pointsAwarded"] for r in results] == [20, 10]


async def test_a_member_cap_per_local_day_holds(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given double points capped at 15 per member per day
    await join(integration, "ana", "bo")
    await create(admin, capPoints=15, capPeriod="DAY")
    day = clock.now().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)

    # when ana buys three times that day (one partial) and once the next, and bo once
    first = await record_results(integration, purchase("ana", day), purchase("ana", day + timedelta(hours=1)))
    second = await record_results(
        integration,
        purchase("ana", day + timedelta(hours=2)),
        purchase("ana", day + timedelta(days=1)),
        purchase("bo", day),
    )

    # then ana gets 10 + 5 extra that day (then none), 10 the next; bo his own 10
    assert [r["pointsAwarded"] for r in first + second] == [20, 15, 10, 20, 20]


async def test_a_budget_pays_partially_then_stops(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given double points with a budget of 25
    await join(integration, "ana")
    await create(admin, budgetPoints=25)

    # when three purchases of 10 are recorded
    at = clock.now() - timedelta(minutes=1)
    results = await record_results(integration, *(purchase("ana", at) for _ in range(3)))

    # then 10, then 10, then the 5 left; the budget is spent
    assert [r["pointsAwarded"] for r in results] == [20, 20, 15]
    assert (await admin.data(LIST))["promotions"][0]["spentPoints"] == 25


async def test_a_refund_reverses_the_promoted_points(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a doubled purchase
    await join(integration, "ana")
    await create(admin)
    bought = purchase("ana", clock.now() - timedelta(minutes=2))
    await record_results(integration, bought)

    # when it is refunded
    refund = event("ana", "refund", clock.now() - timedelta(minutes=1), refundOf=bought["externalId"])
    results = await record_results(integration, refund)

    # then all 20 points go back
    assert results[0]["status"] == "ACCEPTED"
    assert await balance(admin, "ana") == 0
    assert (await entries(admin, "ana"))[0]["points"] == -20


async def test_a_held_accrual_holds_its_promoted_points_and_a_blocked_one_spends_no_budget(
    services: Services, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given double points with a budget of 100
    await join(integration, "ana")
    await create(admin, budgetPoints=100)
    at = clock.now() - timedelta(minutes=1)

    # when the audit holds one purchase and blocks another
    async with holding(services):
        results = await record_results(
            integration, purchase("ana", at, verdict="REVIEW"), purchase("ana", at, "30", verdict="BLOCK")
        )

    # then the held entry carries its promoted points, pending; the blocked one spent no budget
    assert [r["status"] for r in results] == ["HELD_FOR_REVIEW", "BLOCKED"]
    held = next(e for e in await entries(admin, "ana") if e["status"] == "PENDING_REVIEW")
    assert (held["points"], held["promotions"]) == (20, [{"key": "double", "points": 10}])
    assert (await admin.data(LIST))["promotions"][0]["spentPoints"] == 10


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"condition": "event.amount >"}, "condition: column 15"),
        ({"condition": "event.amount > 1 and count(purchase"}, "condition: column"),
        ({"startsAt": "2026-03-08T00:00", "endsAt": "2026-03-07T00:00"}, "endsAt:"),
        ({"startsAt": "2026-03-08T00:00+03:00"}, "startsAt:"),
        ({"multiplier": "-2"}, "multiplier:"),
        ({"multiplier": None, "bonusPoints": -5}, "bonusPoints:"),
        ({"budgetPoints": -1}, "budgetPoints:"),
        ({"capPoints": -1, "capPeriod": "DAY"}, "capPoints:"),
        ({"capPoints": 10}, "capPeriod:"),
        ({"multiplier": None}, "multiplier:"),
        ({"eventType": "refund"}, "eventType:"),
        ({"condition": 'in_segment("nope")'}, "condition:"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(
    admin: GraphQLClient, changes: dict[str, Any], field: str
) -> None:
    error = await admin.error(CREATE, {"i": promotion(**changes)})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["message"].startswith(field), error["message"]
    assert (await admin.data(LIST))["promotions"] == []


async def test_a_segment_rule_reading_the_event_is_refused(admin: GraphQLClient) -> None:
    document = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"
    rule = {"key": "big", "name": "Big", "kind": "DYNAMIC", "rule": "event.amount > 100"}
    error = await admin.error(document, {"i": rule})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "event.amount: only promotion conditions can read the event" in error["message"]


async def test_the_simulation_equals_what_the_promotion_then_pays_on_the_same_events(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a week of purchases by three members (recorded before any promotion)
    await join(integration, "ana", "bo", "cy")
    now = clock.now()
    history = [
        purchase(member, now - timedelta(days=day, hours=1), str(5 + 3 * day), category=category)
        for day in range(7)
        for member, category in (("ana", "coffee"), ("bo", "tea"), ("cy", "coffee"))
    ]
    await record_results(integration, *history)
    coffee = promotion(
        "coffee",
        multiplier="1.5",
        bonusPoints=2,
        condition='event.category = "coffee" and event.amount >= 8',
        capPoints=12,
        capPeriod="WEEK",
        budgetPoints=40,
    )

    # when the promotion is simulated over 8 days, then created and the same events replayed
    simulated = (await admin.data(SIMULATE, {"i": coffee, "d": 8}))["simulatePromotion"]
    await admin.data(CREATE, {"i": coffee})
    replayed = [{**e, "externalId": f"again-{e['externalId']}"} for e in history]
    await record_results(integration, *replayed)

    # then the promotion's actual payments are the simulation's figures
    paid = [
        (member, p["points"])
        for member in ("ana", "bo", "cy")
        for entry in await entries(admin, member)
        for p in entry["promotions"]
    ]
    assert simulated["points"] == sum(points for _, points in paid) > 0
    assert simulated["members"] == len({member for member, _ in paid})
    assert simulated["events"] == len(paid)
    assert simulated["eventsReplayed"] == len(history)
    assert simulated["cost"] == str(simulated["points"])


async def test_a_switched_off_promotion_pays_nothing_and_a_budget_cannot_drop_below_spent(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given double points with a budget of 100, that paid 10
    await join(integration, "ana")
    await create(admin, budgetPoints=100)
    at = clock.now() - timedelta(minutes=1)
    assert [r["pointsAwarded"] for r in await record_results(integration, purchase("ana", at))] == [20]

    # when the budget is lowered below what it paid
    error = await admin.error(UPDATE, {"i": promotion(budgetPoints=5)})

    # then it is refused, naming budgetPoints
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("budgetPoints: 5 is below the 10 points already paid")

    # when it is switched off, a purchase earns its base only
    await admin.data(SET_ACTIVE, {"k": "double", "a": False})
    assert [r["pointsAwarded"] for r in await record_results(integration, purchase("ana", at))] == [10]


async def test_simulation_refuses_days_out_of_range_and_writes_nothing(admin: GraphQLClient) -> None:
    error = await admin.error(SIMULATE, {"i": promotion(), "d": 0})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("days: must be between 1 and 366")
    assert (await admin.data(LIST))["promotions"] == []


async def test_an_unknown_promotion_is_not_found(admin: GraphQLClient) -> None:
    error = await admin.error(SET_ACTIVE, {"k": "nope", "a": True})
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"].startswith("key: no promotion 'nope'")
