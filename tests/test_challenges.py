"""Challenges through the real GraphQL endpoint: progress, paying once, periods in a program timezone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.runtime import Services
from domain.models import Program
from tests.support import ShiftableClock, move_to
from tests.support.audit import VerdictFromProperties
from tests.support.events import UPSERT, record_for
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_at
from tests.support.statements import counting_statements

SET = """
mutation($i: ChallengeInput!) { setChallenge(input: $i) { key name eventType target period points } }"""
DELETE = "mutation($k: String!) { deleteChallenge(key: $k) }"
LIST = "{ challenges { key name eventType target period points } }"
RECORD = "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { externalId status } } }"
MEMBER = """
query($id: String!) {
  member(externalId: $id) {
    pointsBalance
    challenges { challengeKey name period periodStart periodEnd count target points completed completedAt }
    badges { challengeKey name period periodStart points completedAt }
    ledger(first: 50) { edges { node { points kind reason } } }
  }
}"""
TRAININGS = {
    "key": "trainings",
    "name": "Three trainings a month",
    "eventType": "training_completed",
    "target": 3,
    "period": "MONTHLY",
    "points": 100,
}


async def set_timezone(services: Services, program: ProgramFixture, timezone: str) -> None:
    async with services.db.unit_of_work() as uow:
        row = await uow.session.get(Program, program.id)
        assert row is not None
        row.settings = {**row.settings, "timezone": timezone}


async def member(client: GraphQLClient, external_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await client.data(MEMBER, {"id": external_id}))["member"]
    return found


def bonuses(found: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["node"] for e in found["ledger"]["edges"] if e["node"]["kind"] == "ADJUSTMENT"]


async def test_progress_counts_and_completion_pays_once_however_often_events_are_replayed(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given a monthly challenge of 3 trainings for 100 points, on 20 November 2026 (UTC program)
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    assert (await admin.data(SET, {"i": TRAININGS}))["setChallenge"] == TRAININGS
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})

    # when ana completes two trainings
    assert await record_for(
        integration, "ana", [("t1", now - timedelta(hours=2)), ("t2", now - timedelta(hours=1))]
    ) == [
        "ACCEPTED",
        "ACCEPTED",
    ]

    # then she is at 2 of 3 in November, with the trainings' own points only
    ana = await member(integration, "ana")
    assert ana["challenges"] == [
        {
            "challengeKey": "trainings",
            "name": "Three trainings a month",
            "period": "MONTHLY",
            "periodStart": "2026-11-01T00:00:00+00:00",
            "periodEnd": "2026-12-01T00:00:00+00:00",
            "count": 2,
            "target": 3,
            "points": 100,
            "completed": False,
            "completedAt": None,
        }
    ]
    assert (ana["pointsBalance"], ana["badges"]) == (100, [])

    # when the third training arrives, then the challenge is completed and paid
    await record_for(integration, "ana", [("t3", now - timedelta(minutes=30))])
    ana = await member(integration, "ana")
    progress = ana["challenges"][0]
    assert (progress["count"], progress["completed"]) == (3, True)
    completed_at = datetime.fromisoformat(progress["completedAt"])
    assert now <= completed_at < now + timedelta(minutes=1)
    assert ana["pointsBalance"] == 3 * 50 + 100
    assert ana["badges"] == [
        {
            "challengeKey": "trainings",
            "name": "Three trainings a month",
            "period": "MONTHLY",
            "periodStart": "2026-11-01T00:00:00+00:00",
            "points": 100,
            "completedAt": progress["completedAt"],
        }
    ]
    assert bonuses(ana) == [
        {
            "points": 100,
            "kind": "ADJUSTMENT",
            "reason": "challenge trainings completed (MONTHLY from 2026-11-01)",
        }
    ]

    # when the same events are sent again and a fourth training follows
    replayed = await record_for(
        integration,
        "ana",
        [
            ("t1", now - timedelta(hours=2)),
            ("t2", now - timedelta(hours=1)),
            ("t3", now - timedelta(minutes=30)),
        ],
    )
    assert replayed == ["DUPLICATE", "DUPLICATE", "DUPLICATE"]
    await record_for(integration, "ana", [("t4", now)])

    # then the count goes on but nothing more is paid
    ana = await member(integration, "ana")
    assert (ana["challenges"][0]["count"], ana["challenges"][0]["completed"]) == (4, True)
    assert ana["pointsBalance"] == 4 * 50 + 100
    assert len(ana["badges"]) == 1
    assert len(bonuses(ana)) == 1


async def test_a_month_rolls_over_at_local_midnight_and_a_backdated_event_completes_the_month_it_belongs_to(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
) -> None:
    # given a program in Istanbul (UTC+3): December starts at 2026-11-30T21:00Z
    await set_timezone(services, program, "Europe/Istanbul")
    admin = await admin_at(client, program, clock, datetime(2026, 11, 30, 20, 40, tzinfo=UTC))
    await admin.data(SET, {"i": TRAININGS})
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})

    # when ana trains twice on the evening of 30 November, local time
    await record_for(
        integration,
        "ana",
        [
            ("nov-1", datetime(2026, 11, 30, 20, 10, tzinfo=UTC)),
            ("nov-2", datetime(2026, 11, 30, 20, 30, tzinfo=UTC)),
        ],
    )
    progress = (await member(integration, "ana"))["challenges"][0]
    assert (progress["periodStart"], progress["periodEnd"], progress["count"]) == (
        "2026-10-31T21:00:00+00:00",
        "2026-11-30T21:00:00+00:00",
        2,
    )

    # when local midnight passes and she trains ten minutes into December
    move_to(clock, datetime(2026, 11, 30, 21, 20, tzinfo=UTC))
    await record_for(integration, "ana", [("dec-1", datetime(2026, 11, 30, 21, 10, tzinfo=UTC))])

    # then December starts from 1 and November stays at 2, unpaid
    ana = await member(integration, "ana")
    progress = ana["challenges"][0]
    assert (progress["periodStart"], progress["periodEnd"], progress["count"], progress["completed"]) == (
        "2026-11-30T21:00:00+00:00",
        "2026-12-31T21:00:00+00:00",
        1,
        False,
    )
    assert (ana["pointsBalance"], ana["badges"]) == (150, [])

    # when a training from 23:50 local on 30 November arrives late
    await record_for(integration, "ana", [("nov-3", datetime(2026, 11, 30, 20, 50, tzinfo=UTC))])

    # then November is completed and paid once; December is untouched
    ana = await member(integration, "ana")
    assert [(b["periodStart"], b["points"]) for b in ana["badges"]] == [("2026-10-31T21:00:00+00:00", 100)]
    assert (ana["challenges"][0]["count"], ana["challenges"][0]["completed"]) == (1, False)
    assert ana["pointsBalance"] == 4 * 50 + 100
    assert [b["reason"] for b in bonuses(ana)] == ["challenge trainings completed (MONTHLY from 2026-11-01)"]

    # when another late November training arrives, then nothing more is paid
    await record_for(integration, "ana", [("nov-4", datetime(2026, 11, 30, 20, 55, tzinfo=UTC))])
    ana = await member(integration, "ana")
    assert (len(ana["badges"]), ana["pointsBalance"]) == (1, 5 * 50 + 100)


async def test_a_quarter_rolls_over_at_local_midnight_across_daylight_saving(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
) -> None:
    # given a quarterly challenge of 2 suggestions in New York (EST, UTC-5, in winter)
    await set_timezone(services, program, "America/New_York")
    admin = await admin_at(client, program, clock, datetime(2027, 1, 1, 5, 2, tzinfo=UTC))
    challenge = {
        "key": "ideas",
        "name": "Two ideas a quarter",
        "eventType": "suggestion_submitted",
        "target": 2,
        "period": "QUARTERLY",
        "points": 40,
    }
    await admin.data(SET, {"i": challenge})
    await integration.data(UPSERT, {"m": [{"externalId": "ben"}]})

    # when ben submits ideas at 23:30 on 30 December, 23:59 on 31 December and 00:00 on 1 January, local time
    await record_for(
        integration,
        "ben",
        [
            ("q4-1", datetime(2026, 12, 31, 4, 30, tzinfo=UTC)),
            ("q4-2", datetime(2027, 1, 1, 4, 59, tzinfo=UTC)),
            ("q1-1", datetime(2027, 1, 1, 5, 0, tzinfo=UTC)),
        ],
        type="suggestion_submitted",
    )

    # then Q4 2026 is completed and paid, and Q1 2027 (ending at 00:00 EDT on 1 April) has 1
    ben = await member(integration, "ben")
    assert [(b["period"], b["periodStart"], b["points"]) for b in ben["badges"]] == [
        ("QUARTERLY", "2026-10-01T04:00:00+00:00", 40)
    ]
    progress = ben["challenges"][0]
    assert (progress["periodStart"], progress["periodEnd"], progress["count"], progress["completed"]) == (
        "2027-01-01T05:00:00+00:00",
        "2027-04-01T04:00:00+00:00",
        1,
        False,
    )
    assert ben["pointsBalance"] == 3 * 25 + 40
    assert [b["reason"] for b in bonuses(ben)] == ["challenge ideas completed (QUARTERLY from 2026-10-01)"]


async def test_held_blocked_and_rejected_events_do_not_count(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given an audit that holds or blocks on request, and the monthly challenge
    monkeypatch.setattr(services.events, "auditor", VerdictFromProperties())
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    await admin.data(SET, {"i": TRAININGS})
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})

    # when two trainings are accepted, one held, one blocked and one rejected (an hour in the future)
    statuses = [
        *await record_for(integration, "ana", [("ok-1", now), ("ok-2", now)]),
        *await record_for(integration, "ana", [("held", now)], properties={"verdict": "REVIEW"}),
        *await record_for(integration, "ana", [("blocked", now)], properties={"verdict": "BLOCK"}),
        *await record_for(integration, "ana", [("future", now + timedelta(hours=1))]),
    ]
    assert statuses == ["ACCEPTED", "ACCEPTED", "HELD_FOR_REVIEW", "BLOCKED", "REJECTED"]

    # then only the accepted two count and nothing is completed
    ana = await member(integration, "ana")
    assert (ana["challenges"][0]["count"], ana["challenges"][0]["completed"], ana["badges"]) == (2, False, [])


async def test_concurrent_batches_complete_the_challenge_once(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given the monthly challenge of 3 trainings, members m0..m4 and n0..n4
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    await admin.data(SET, {"i": TRAININGS})
    each_alone = {f"m{i}": 3 for i in range(5)}  # either batch alone completes it: risk of paying twice
    only_together = {f"n{i}": 2 for i in range(5)}  # only both batches complete it: risk of paying never
    trainings = each_alone | only_together
    await integration.data(UPSERT, {"m": [{"externalId": n} for n in trainings]})

    # when two batches race, each with that many trainings for every member
    def batch(tag: str) -> dict[str, Any]:
        return {
            "e": [
                {
                    "externalId": f"{tag}-{name}-{i}",
                    "memberExternalId": name,
                    "type": "training_completed",
                    "occurredAt": (now - timedelta(minutes=i)).isoformat(),
                }
                for name, count in trainings.items()
                for i in range(count)
            ]
        }

    results = await asyncio.gather(integration.data(RECORD, batch("a")), integration.data(RECORD, batch("b")))
    assert all(r["status"] == "ACCEPTED" for data in results for r in data["recordEvents"]["results"])

    # then every member completed it exactly once and was paid exactly once
    for name, count in trainings.items():
        found = await member(integration, name)
        assert (found["challenges"][0]["count"], len(found["badges"]), len(bonuses(found))) == (
            2 * count,
            1,
            1,
        )
        assert found["pointsBalance"] == 2 * count * 50 + 100


async def test_a_completion_moves_the_balance_segments_see_in_the_same_transaction(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given a segment of members with at least 250 points and the monthly challenge
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    await admin.data(SET, {"i": TRAININGS})
    await admin.data(
        "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }",
        {"i": {"key": "rich", "name": "rich", "kind": "DYNAMIC", "rule": "pointsBalance >= 250"}},
    )
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})

    # when three trainings (150 points) complete the challenge (100 points)
    await record_for(integration, "ana", [(f"t{i}", now) for i in range(3)])

    # then the bonus put her in the segment
    found = await integration.data('{ member(externalId: "ana") { pointsBalance segments { key } } }')
    assert found["member"] == {"pointsBalance": 250, "segments": [{"key": "rich"}]}


async def test_all_time_challenges_complete_once_ever_and_zero_points_earn_only_the_badge(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given an all-time challenge of 2 logins worth no points
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    first_steps = {
        "key": "first-steps",
        "name": "Log in twice",
        "eventType": "login",
        "target": 2,
        "period": "ALL_TIME",
        "points": 0,
    }
    await admin.data(SET, {"i": first_steps})
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})

    # when ana logs in twice a year apart, then once more
    await record_for(integration, "ana", [("l1", now - timedelta(days=365)), ("l2", now)], type="login")
    await record_for(integration, "ana", [("l3", now)], type="login")

    # then she has one badge with no period and no ledger entry
    ana = await member(integration, "ana")
    progress = ana["challenges"][0]
    assert (progress["periodStart"], progress["periodEnd"], progress["count"], progress["completed"]) == (
        None,
        None,
        3,
        True,
    )
    assert [(b["period"], b["periodStart"], b["points"]) for b in ana["badges"]] == [("ALL_TIME", None, 0)]
    assert (ana["pointsBalance"], bonuses(ana)) == (0, [])


async def test_updating_and_deleting_a_challenge(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given the monthly challenge, completed by ana
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    await admin.data(SET, {"i": TRAININGS})
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    await record_for(integration, "ana", [(f"t{i}", now) for i in range(3)])

    # when the same key is set again with a new name and target
    updated = {**TRAININGS, "name": "Five trainings a month", "target": 5}
    assert (await admin.data(SET, {"i": updated}))["setChallenge"] == updated

    # then it is updated in place: listed once, progress measured against the new target
    assert (await admin.data(LIST))["challenges"] == [updated]
    progress = (await member(integration, "ana"))["challenges"][0]
    assert (progress["name"], progress["count"], progress["target"], progress["completed"]) == (
        "Five trainings a month",
        3,
        5,
        True,
    )

    # when it is deleted
    assert (await admin.data(DELETE, {"k": "trainings"}))["deleteChallenge"] is True

    # then it is no longer listed nor counted, and the badge stays
    assert (await admin.data(LIST))["challenges"] == []
    await record_for(integration, "ana", [("t9", now)])
    ana = await member(integration, "ana")
    assert (ana["challenges"], [b["challengeKey"] for b in ana["badges"]]) == ([], ["trainings"])
    again = await admin.error(DELETE, {"k": "trainings"})
    assert (again["extensions"]["code"], again["message"]) == (
        "NOT_FOUND",
        "key: no challenge 'trainings' in this program",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": "no spaces"}, "key: 'no spaces' does not match [A-Za-z0-9_-]{1,64}"),
        ({"key": "k" * 65}, f"key: {'k' * 65!r} does not match [A-Za-z0-9_-]{{1,64}}"),
        ({"name": "  "}, "name: must not be empty"),
        ({"eventType": "Training"}, "eventType: 'Training' does not match [a-z][a-z0-9_]{0,63}"),
        ({"target": 0}, "target: must be between 1 and 10000, got 0"),
        ({"target": 10001}, "target: must be between 1 and 10000, got 10001"),
        ({"points": -1}, "points: must be between 0 and 1000000, got -1"),
        ({"points": 1_000_001}, "points: must be between 0 and 1000000, got 1000001"),
    ],
)
async def test_bad_challenges_are_refused_naming_the_field(
    admin: GraphQLClient, change: dict[str, Any], message: str
) -> None:
    error = await admin.error(SET, {"i": {**TRAININGS, **change}})
    assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)
    assert (await admin.data(LIST))["challenges"] == []


async def test_an_unknown_period_is_refused_by_the_schema(admin: GraphQLClient) -> None:
    error = await admin.error(SET, {"i": {**TRAININGS, "period": "FORTNIGHTLY"}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "FORTNIGHTLY" in error["message"]


async def test_who_may_write_and_read_challenges(
    client: httpx.AsyncClient, integration: GraphQLClient, admin: GraphQLClient
) -> None:
    # given a challenge, and two members
    await admin.data(SET, {"i": TRAININGS})
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}, {"externalId": "ben"}]})
    token = (await integration.data('mutation { issueMemberToken(memberExternalId: "ana") { token } }'))[
        "issueMemberToken"
    ]["token"]
    ana = GraphQLClient(client, token)

    # then an integration key (no marketing:write) may not define challenges
    for operation, variables in ((SET, {"i": TRAININGS}), (DELETE, {"k": "trainings"})):
        error = await integration.error(operation, variables)
        assert (error["extensions"]["code"], error["message"].split(" ", 1)[1]) == (
            "FORBIDDEN",
            "needs the marketing:write scope (roles OWNER, ADMIN, MARKETER); this API key lacks it",
        )
    # and a member token reads the challenges and its own progress and badges
    assert [c["key"] for c in (await ana.data(LIST))["challenges"]] == ["trainings"]
    me = (await ana.data("{ me { challenges { challengeKey count } badges { challengeKey } } }"))["me"]
    assert me == {"challenges": [{"challengeKey": "trainings", "count": 0}], "badges": []}
    forbidden = await ana.error('{ member(externalId: "ben") { challenges { count } } }')
    assert forbidden["extensions"]["code"] == "FORBIDDEN"


async def test_the_challenge_prefix_of_idempotency_keys_is_reserved(integration: GraphQLClient) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    error = await integration.error(
        'mutation { redeemPoints(memberExternalId: "ana", points: 1, reason: "x", idempotencyKey: "challenge:1:1:x") { id } }'
    )
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "idempotencyKey: the prefix 'challenge:' is reserved for challenge bonuses",
    )


async def test_a_page_of_members_reads_progress_and_badges_in_a_fixed_number_of_queries(
    client: httpx.AsyncClient,
    integration: GraphQLClient,
    program: ProgramFixture,
    services: Services,
    clock: ShiftableClock,
) -> None:
    # given two challenges and 60 members who each completed one of them
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    admin = await admin_at(client, program, clock, now)
    await admin.data(SET, {"i": TRAININGS})
    await admin.data(SET, {"i": {**TRAININGS, "key": "weekly", "period": "WEEKLY", "target": 5}})
    names = [f"n{i:02d}" for i in range(60)]
    await integration.data(UPSERT, {"m": [{"externalId": n} for n in names]})
    await integration.data(
        RECORD,
        {
            "e": [
                {
                    "externalId": f"{n}-{i}",
                    "memberExternalId": n,
                    "type": "training_completed",
                    "occurredAt": now.isoformat(),
                }
                for n in names
                for i in range(3)
            ]
        },
    )
    query = """query($first: Int!) { members(first: $first) { edges { node {
        externalId streak(eventType: "training_completed")
        challenges { challengeKey count completed } badges { challengeKey } } } } }"""

    # when a page of 5 and a page of 60 are read
    with counting_statements(services) as small:
        await integration.data(query, {"first": 5})
    with counting_statements(services) as large:
        page = (await integration.data(query, {"first": 60}))["members"]["edges"]

    # then both cost the same: authenticate + page + count + challenges, timezone, counts, completions +
    # badges + the streak's facts in the program's local days (settings, events, members, tags)
    assert len(page) == 60
    assert page[0]["node"] == {
        "externalId": "n00",
        "streak": 1,
        "challenges": [
            {"challengeKey": "trainings", "count": 3, "completed": True},
            {"challengeKey": "weekly", "count": 3, "completed": False},
        ],
        "badges": [{"challengeKey": "trainings"}],
    }
    assert len(large) == len(small) == 13, "\n".join(s[:100] for s in large)
