"""Leaderboards through the GraphQL endpoint, on real Redis and the real database.

The feeder runs as the server's background loop does, one `run_once` at a time
(`feed`); the clock is moved, never waited for.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from api.runtime import Services
from domain.errors import NotFound
from domain.events.service import EventService
from domain.events.validation import EventDraft
from gamification.leaderboards.rebuild import rebuild, reconcile
from gamification.leaderboards.scores import MAX_POINTS, TIE_SPAN, decode, encode
from gamification.leaderboards.snapshots import PeriodCloser
from gamification.leaderboards.store import board_pattern
from tests.support import ShiftableClock
from tests.support.audit import VerdictFromProperties
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token, new_program
from tests.support.leaderboards import board, feed, ranking
from tests.support.statements import counting_statements

# A Wednesday: its week opened on Monday 2027-03-08, its month on 2027-03-01.
NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


def at(clock: ShiftableClock, when: datetime) -> None:
    clock.reset()
    clock.shift(when - clock.now())


@pytest.fixture
def march(clock: ShiftableClock) -> ShiftableClock:
    """The clock at NOW (tests that log an admin in must take this first: sessions expire)."""
    at(clock, NOW)
    return clock


@pytest.fixture
async def boss(march: ShiftableClock, client: Any, program: ProgramFixture) -> GraphQLClient:
    """The program's admin, logged in at NOW."""
    return GraphQLClient(client, await admin_token(client, program, march))


async def members(client: GraphQLClient, *ids: str, organization: str | None = None) -> None:
    await client.data(
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": i, "organizationExternalId": organization} for i in ids]},
    )


async def purchases(client: GraphQLClient, *rows: tuple[str, str, datetime, str]) -> list[str]:
    """(externalId, member, occurredAt, amount) each; returns the statuses."""
    data = await client.data(
        "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status message } } }",
        {
            "e": [
                {
                    "externalId": e,
                    "memberExternalId": m,
                    "type": "purchase",
                    "occurredAt": t.isoformat(),
                    "amount": a,
                }
                for e, m, t, a in rows
            ]
        },
    )
    return [r["status"] for r in data["recordEvents"]["results"]]


async def test_ties_go_to_who_reached_the_score_first(
    march: ShiftableClock, integration: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await members(integration, "ana", "bob", "cem", "dil")
    # given bob reaches 100 before ana does, and cem and dil have less
    await purchases(
        integration,
        ("e1", "ana", NOW - timedelta(hours=1), "100"),
        ("e2", "bob", NOW - timedelta(hours=2), "100"),
        ("e3", "cem", NOW - timedelta(hours=3), "50"),
        ("e4", "dil", NOW - timedelta(hours=4), "20"),
    )
    await feed(services)
    # then bob ranks first, and around cem the ranks are consecutive
    shown = await board(integration, "cem")
    assert ranking(shown["top"]) == [(1, "bob", 100), (2, "ana", 100), (3, "cem", 50), (4, "dil", 20)]
    assert ranking(shown["around"]) == [(2, "ana", 100), (3, "cem", 50), (4, "dil", 20)]
    assert shown["entry"] == {"rank": 3, "score": 50}
    assert shown["size"] == 4
    assert shown["periodStart"] is None
    assert shown["frozen"] is False
    # when ana earns one more point she passes bob
    await purchases(integration, ("e5", "ana", NOW - timedelta(minutes=5), "1"))
    await feed(services)
    assert ranking((await board(integration))["top"])[:2] == [(1, "ana", 101), (2, "bob", 100)]


async def test_redemptions_leave_the_board_and_reversals_take_points_off(
    integration: GraphQLClient, boss: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await members(integration, "ana", "bob")
    await purchases(
        integration,
        ("e1", "ana", NOW - timedelta(hours=1), "80"),
        ("e2", "bob", NOW - timedelta(hours=1), "60"),
    )
    await integration.data(
        'mutation { redeemPoints(memberExternalId: "ana", points: 70, reason: "mug", idempotencyKey: "r1") { id } }'
    )
    await feed(services)
    assert ranking((await board(integration))["top"]) == [(1, "ana", 80), (2, "bob", 60)]
    # when bob's accrual is reversed (a refund) his earned points are gone
    ledger = await boss.data('{ member(externalId: "bob") { ledger { edges { node { id } } } } }')
    entry_id = ledger["member"]["ledger"]["edges"][0]["node"]["id"]
    await boss.data(
        'mutation($id: ID!) { reverseLedgerEntry(id: $id, reason: "refund", idempotencyKey: "x1") { id } }',
        {"id": entry_id},
    )
    await feed(services)
    assert ranking((await board(integration))["top"]) == [(1, "ana", 80), (2, "bob", 0)]


async def test_periods_count_each_accrual_when_its_event_occurred(
    march: ShiftableClock, integration: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await members(integration, "today", "monday", "february")
    await purchases(
        integration,
        ("e1", "today", datetime(2027, 3, 10, 9, tzinfo=UTC), "10"),
        ("e2", "monday", datetime(2027, 3, 8, 0, tzinfo=UTC), "20"),
        ("e3", "february", datetime(2027, 2, 28, 23, 59, 59, tzinfo=UTC), "30"),
    )
    await feed(services)
    daily = await board(integration, period="DAILY")
    assert ranking(daily["top"]) == [(1, "today", 10)]
    assert daily["periodStart"] == "2027-03-10T00:00:00+00:00"
    weekly = await board(integration, period="WEEKLY")
    assert ranking(weekly["top"]) == [(1, "monday", 20), (2, "today", 10)]
    assert weekly["periodStart"] == "2027-03-08T00:00:00+00:00"
    assert ranking((await board(integration, period="MONTHLY"))["top"]) == [
        (1, "monday", 20),
        (2, "today", 10),
    ]
    february = await board(integration, period="MONTHLY", start=datetime(2027, 2, 1, tzinfo=UTC))
    assert ranking(february["top"]) == [(1, "february", 30)]
    assert ranking((await board(integration))["top"]) == [
        (1, "february", 30),
        (2, "monday", 20),
        (3, "today", 10),
    ]


async def test_periods_follow_the_program_timezone(
    integration: GraphQLClient, boss: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await members(integration, "late")
    # 22:30 UTC on the 9th is 01:30 on the 10th in Istanbul (UTC+3)
    await purchases(integration, ("e1", "late", datetime(2027, 3, 9, 22, 30, tzinfo=UTC), "5"))
    await feed(services)
    assert (await board(integration, period="DAILY"))["top"] == []
    data = await boss.data('mutation { setProgramTimezone(timezone: "Europe/Istanbul") { timezone } }')
    assert data["setProgramTimezone"]["timezone"] == "Europe/Istanbul"
    daily = await board(integration, period="DAILY")
    assert daily["periodStart"] == "2027-03-09T21:00:00+00:00"
    assert ranking(daily["top"]) == [(1, "late", 5)]
    error = await boss.error('mutation { setProgramTimezone(timezone: "Mars/Olympus") { timezone } }')
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Mars/Olympus" in error["message"]


async def test_bad_arguments_get_clear_errors_and_absent_members_empty_results(
    march: ShiftableClock, integration: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await members(integration, "ana", "bob")
    await purchases(integration, ("e1", "ana", NOW - timedelta(hours=1), "10"))
    await feed(services)
    shown = await board(integration, "bob")
    assert shown["entry"] is None
    assert shown["around"] == []
    assert (await board(integration, "ghost"))["entry"] is None
    cases = [
        ('{ leaderboard(key: "nope") { size } }', "NOT_FOUND", "nope"),
        ('{ leaderboard(key: "points") { top(first: 501) { rank } } }', "BAD_USER_INPUT", "first"),
        ('{ leaderboard(key: "points") { top(offset: -1) { rank } } }', "BAD_USER_INPUT", "offset"),
        (
            '{ leaderboard(key: "points") { around(memberExternalId: "ana", radius: 51) { rank } } }',
            "BAD_USER_INPUT",
            "radius",
        ),
        (
            '{ leaderboard(key: "points", period: DAILY, periodStart: "2027-03-10T05:00:00+00:00") { size } }',
            "BAD_USER_INPUT",
            "2027-03-10T00:00:00+00:00",
        ),
        (
            '{ leaderboard(key: "points", period: DAILY, periodStart: "2027-03-11T00:00:00+00:00") { size } }',
            "BAD_USER_INPUT",
            "future",
        ),
        (
            '{ leaderboard(key: "points", periodStart: "2027-03-01T00:00:00+00:00") { size } }',
            "BAD_USER_INPUT",
            "ALL_TIME",
        ),
        ('{ leaderboard(key: "points", period: HOURLY) { size } }', "BAD_USER_INPUT", "HOURLY"),
    ]
    for query, code, mentioned in cases:
        error = await integration.error(query)
        assert error["extensions"]["code"] == code, (query, error)
        assert mentioned in error["message"], (query, error)


async def test_metric_boards_rank_event_amounts_per_organization(
    integration: GraphQLClient, boss: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await boss.data(
        """mutation { setLeaderboard(input: {key: "sales", name: "Dealer sales", metric: EVENT_AMOUNT,
             eventType: "sale", scope: ORGANIZATION, periods: [ALL_TIME, MONTHLY]}) { key periods } }"""
    )
    await members(integration, "d1", "d2", organization="north")
    await members(integration, "d3", organization="south")
    await integration.data(
        "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status } } }",
        {
            "e": [
                {
                    "externalId": f"s{i}",
                    "memberExternalId": m,
                    "type": "sale",
                    "occurredAt": (NOW - timedelta(hours=i)).isoformat(),
                    "amount": a,
                }
                for i, (m, a) in enumerate(
                    [("d1", "10.90"), ("d1", "10.20"), ("d2", "20.50"), ("d3", "99")], start=1
                )
            ]
        },
    )
    await feed(services)
    query = """query($org: String) { leaderboard(key: "sales", organizationExternalId: $org) {
                 size top { rank score member { externalId } } } }"""
    north = (await boss.data(query, {"org": "north"}))["leaderboard"]
    # d1's 21.10 floors to 21 and ranks above d2's 20
    assert ranking(north["top"]) == [(1, "d1", 21), (2, "d2", 20)]
    south = (await boss.data(query, {"org": "south"}))["leaderboard"]
    assert ranking(south["top"]) == [(1, "d3", 99)]
    error = await boss.error(query, {"org": None})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "organizationExternalId" in error["message"]
    bad = await boss.error(
        'mutation { setLeaderboard(input: {key: "x", name: "X", metric: EVENT_COUNT}) { key } }'
    )
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    assert "eventType" in bad["message"]


async def test_rebuild_from_the_ledger_equals_the_fed_boards(
    integration: GraphQLClient,
    boss: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    await boss.data(
        """mutation { setLeaderboard(input: {key: "visits", name: "Visits", metric: EVENT_COUNT,
             eventType: "purchase"}) { key } }"""
    )
    names = [f"m{i}" for i in range(12)]
    await members(integration, *names)
    rows = [
        (f"e{i}", names[i % 12], NOW - timedelta(days=i % 40, minutes=i), str(5 + i % 7)) for i in range(60)
    ]
    await purchases(integration, *rows)
    await feed(services)
    redis = services.redis.client
    keys = sorted([k async for k in redis.scan_iter(match=board_pattern(services.redis, program.id, "*"))])
    before = {k: await redis.zrange(k, 0, -1, withscores=True) for k in keys}
    assert len(keys) >= 10  # ALL_TIME, 3 days, 2 weeks, 2 months... for two boards
    # when Redis loses every board key of the program and they are rebuilt
    await redis.delete(*keys)
    report = await rebuild(services.db, services.redis, clock.now(), program_ids=[program.id])
    # then every key is back with exactly the same members and scores
    after_keys = sorted(
        [k async for k in redis.scan_iter(match=board_pattern(services.redis, program.id, "*"))]
    )
    assert after_keys == keys
    assert {k: await redis.zrange(k, 0, -1, withscores=True) for k in keys} == before
    assert report.keys == len(keys)


async def test_reconciliation_reports_and_repairs_drift(
    march: ShiftableClock,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    await members(integration, "ana", "bob")
    await purchases(
        integration,
        ("e1", "ana", NOW - timedelta(hours=1), "10"),
        ("e2", "bob", NOW - timedelta(hours=2), "20"),
    )
    await feed(services)
    redis = services.redis.client
    pattern = board_pattern(services.redis, program.id, "points")
    (key,) = [k async for k in redis.scan_iter(match=pattern) if k.endswith(":all")]
    good = cast(list[tuple[str, float]], await redis.zrange(key, 0, -1, withscores=True))
    # given drift: a score changed, a member lost, a stranger added
    first, second = (str(member) for member, _ in good)
    await redis.zadd(key, {first: 7 * TIE_SPAN, "999999999": 5})
    await redis.zrem(key, second)
    async with services.db.read() as session:
        report = await reconcile(session, services.redis, clock.now(), program_ids=[program.id])
    assert (report.wrong, report.missing, report.extra) == (1, 1, 1)
    assert await redis.zrange(key, 0, -1, withscores=True) == good
    async with services.db.read() as session:
        assert (await reconcile(session, services.redis, clock.now(), program_ids=[program.id])).drift == 0


async def test_a_closed_period_is_frozen_and_readable_after_redis_lets_it_go(
    integration: GraphQLClient,
    boss: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
    program: ProgramFixture,
) -> None:
    await boss.data(
        """mutation { setLeaderboard(input: {key: "weekly", name: "Weekly", periods: [WEEKLY], keepPeriods: 1,
             snapshotSize: 2}) { key } }"""
    )
    await members(integration, "ana", "bob", "cem")
    await purchases(
        integration,
        ("e1", "ana", NOW - timedelta(hours=1), "10"),
        ("e2", "bob", NOW - timedelta(hours=2), "30"),
        ("e3", "cem", NOW - timedelta(hours=3), "20"),
    )
    await feed(services)
    closer = next(loop for loop in services.loops if isinstance(loop, PeriodCloser))
    week = datetime(2027, 3, 8, tzinfo=UTC)
    # when the week closes and two more pass (the board keeps one closed week in Redis)
    at(clock, datetime(2027, 3, 15, 0, 1, tzinfo=UTC))
    # this program's periods: a pass of the loop (run_once) would close those of every program of the run
    await closer.close_ended(clock.now(), program_ids=[program.id])
    await purchases(
        integration, ("late", "ana", datetime(2027, 3, 14, 23, tzinfo=UTC), "100")
    )  # after the close
    await feed(services)
    # the week is still kept live (the late purchase moved it); its frozen close is what payouts read
    live = await board(integration, "cem", period="WEEKLY", start=week, key="weekly")
    assert ranking(live["top"])[0] == (1, "ana", 110)
    frozen_query = """query($s: DateTime) { leaderboard(key: "weekly", period: WEEKLY, periodStart: $s,
                        frozen: true) { frozen size top { rank score member { externalId } } } }"""
    frozen = (await integration.data(frozen_query, {"s": week.isoformat()}))["leaderboard"]
    assert frozen["frozen"] is True
    assert ranking(frozen["top"]) == [(1, "bob", 30), (2, "cem", 20)]
    error = await integration.error(frozen_query, {"s": None})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "frozen" in error["message"]
    at(clock, datetime(2027, 3, 29, 12, tzinfo=UTC))
    await services.redis.client.delete(
        *[
            k
            async for k in services.redis.client.scan_iter(
                match=board_pattern(services.redis, program.id, "weekly")
            )
        ]
    )
    shown = await board(integration, "cem", period="WEEKLY", start=week, key="weekly")
    # then the week is read from its snapshot, as it stood at the close: top 2 kept, size of all 3
    assert shown["frozen"] is True
    assert shown["size"] == 3
    assert ranking(shown["top"]) == [(1, "bob", 30), (2, "cem", 20)]
    assert shown["entry"] == {"rank": 2, "score": 20}
    # a week never kept nor frozen is NOT_FOUND
    error = await integration.error(
        '{ leaderboard(key: "weekly", period: WEEKLY, periodStart: "2026-03-02T00:00:00+00:00") { size } }'
    )
    assert error["extensions"]["code"] == "NOT_FOUND"


async def test_member_tokens_read_public_boards_only(
    integration: GraphQLClient, boss: GraphQLClient, client: Any, services: Services, clock: ShiftableClock
) -> None:
    await members(integration, "ana")
    await purchases(integration, ("e1", "ana", NOW - timedelta(hours=1), "10"))
    await boss.data(
        'mutation { setLeaderboard(input: {key: "staff", name: "Staff", public: false}) { key } }'
    )
    await feed(services)
    token = await integration.data('mutation { issueMemberToken(memberExternalId: "ana") { token } }')
    member = GraphQLClient(client, token["issueMemberToken"]["token"])
    shown = await member.data(
        '{ leaderboard(key: "points") { entry(memberExternalId: "ana") { rank score } } }'
    )
    assert shown["leaderboard"]["entry"] == {"rank": 1, "score": 10}
    assert [b["key"] for b in (await member.data("{ leaderboards { key } }"))["leaderboards"]] == ["points"]
    error = await member.error('{ leaderboard(key: "staff") { size } }')
    assert error["extensions"]["code"] == "FORBIDDEN"
    # other members on a board show their externalId, never their data
    await members(integration, "bob")
    await purchases(integration, ("e2", "bob", NOW - timedelta(hours=2), "50"))
    await feed(services)
    query = '{ leaderboard(key: "points") { top { rank member { externalId %s } } } }'
    shown = await member.data(query % "")
    assert [e["member"]["externalId"] for e in shown["leaderboard"]["top"]] == ["bob", "ana"]
    error = await member.error(query % "pointsBalance attributes")
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"][:4] == ["leaderboard", "top", 0, "member"]
    mine = await member.data(
        '{ leaderboard(key: "points") { entry(memberExternalId: "ana") { member { pointsBalance } } } }'
    )
    assert mine["leaderboard"]["entry"]["member"]["pointsBalance"] == 10


@pytest.mark.parametrize("points", [0, 1, 100, MAX_POINTS, -5])
def test_scores_pack_points_and_first_reach_exactly(points: int) -> None:
    start = datetime(2027, 3, 1, tzinfo=UTC)
    early = encode(points, start + timedelta(seconds=5), start)
    late = encode(points, start + timedelta(days=30), start)
    assert decode(early).points == decode(late).points == points
    assert early > late > encode(points - 1, start, start)
    assert float(early) == early  # exact as a double


async def test_the_rebuild_command_restores_flushed_boards(
    integration: GraphQLClient, services: Services, program: ProgramFixture, settings: Any
) -> None:
    """`loyalty leaderboards rebuild` in its own process, on this run's database and Redis."""
    now = datetime.now(UTC)
    await members(integration, "ana", "bob", "cem")
    await purchases(
        integration,
        ("e1", "ana", now - timedelta(days=2), "40"),
        ("e2", "bob", now - timedelta(hours=1), "40"),
        ("e3", "cem", now - timedelta(days=40), "15"),
    )
    await feed(services)
    redis = services.redis.client
    pattern = board_pattern(services.redis, program.id, "*")
    keys = sorted([k async for k in redis.scan_iter(match=pattern)])
    before = {k: await redis.zrange(k, 0, -1, withscores=True) for k in keys}
    await redis.delete(*keys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")} | {
        "LOYALTY_DATABASE_URL": settings.database_url,
        "LOYALTY_REDIS_URL": settings.redis_url or "",
        "LOYALTY_REDIS_PREFIX": settings.redis_prefix,
        "LOYALTY_DATA_DIR": str(settings.data_dir),
        "LOYALTY_SECRET_KEY": settings.secret_key,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "loyalty"), "leaderboards", "rebuild", "--program", program.key],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keys"] == len(keys)
    assert f"] {json.loads(result.stdout)['periods']}/" in result.stderr  # the progress bar's last step
    assert sorted([k async for k in redis.scan_iter(match=pattern)]) == keys
    assert {k: await redis.zrange(k, 0, -1, withscores=True) for k in keys} == before

    # a board the program does not have is named, as an unknown segment is by `segments recompute`
    command = ["leaderboards", "rebuild", "--program", program.key, "--board", "nope"]
    unknown = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "loyalty"), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "loyalty: NOT_FOUND: board: no leaderboard 'nope' in this program\n"


async def test_checking_a_board_key_over_every_program_is_one_query(
    services: Services, program: ProgramFixture
) -> None:
    await new_program(services)  # two programs at least: it used to read each program's boards
    with counting_statements(services) as statements, pytest.raises(NotFound) as unknown:
        await services.leaderboards.rebuild(None, "nope")
    assert (len(statements), unknown.value.message) == (1, "board: no leaderboard 'nope' in any program")
    with pytest.raises(NotFound) as unknown:  # one program: its boards, as every other caller reads them
        await services.leaderboards.rebuild([program.id], "nope")
    assert unknown.value.message == "board: no leaderboard 'nope' in this program"


async def test_held_and_blocked_accruals_never_reach_a_board(
    march: ShiftableClock, integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given the pipeline with an audit that holds or blocks on request
    pipeline = EventService(services.db, services.clock, VerdictFromProperties())
    await members(integration, "ana", "bob", "cem")
    at_ = NOW - timedelta(hours=1)
    drafts = [
        EventDraft(f"h{i}", m, "purchase", at_, Decimal(30), {"verdict": v})
        for i, (m, v) in enumerate([("ana", "ALLOW"), ("bob", "REVIEW"), ("cem", "BLOCK")])
    ]
    # when the three purchases are recorded
    await pipeline.record_events(program.id, drafts)
    await feed(services)
    # then only the allowed one ranks, in every period
    for period in ("ALL_TIME", "MONTHLY", "WEEKLY", "DAILY"):
        assert ranking((await board(integration, period=period))["top"]) == [(1, "ana", 30)]
    async with services.db.read() as session:
        assert (await reconcile(session, services.redis, march.now(), program_ids=[program.id])).drift == 0


async def test_segment_boards_rank_the_segments_current_members(
    integration: GraphQLClient, boss: GraphQLClient, services: Services
) -> None:
    await boss.data(
        """mutation { createSegment(input: {key: "big", name: "Big spenders", kind: DYNAMIC,
             rule: "pointsBalance >= 100"}) { key } }"""
    )
    await boss.data(
        """mutation { setLeaderboard(input: {key: "bigs", name: "Big spenders", scope: SEGMENT,
             segmentKey: "big"}) { key scope segmentKey } }"""
    )
    await members(integration, "ana", "bob")
    await purchases(
        integration,
        ("e1", "ana", NOW - timedelta(hours=3), "150"),
        ("e2", "bob", NOW - timedelta(hours=2), "50"),
    )
    await feed(services)
    assert ranking((await board(integration, key="bigs"))["top"]) == [(1, "ana", 150)]
    # when bob's next purchase takes him into the segment, he joins its board with all his points
    await purchases(integration, ("e3", "bob", NOW - timedelta(hours=1), "60"))
    await feed(services)
    assert ranking((await board(integration, key="bigs"))["top"]) == [(1, "ana", 150), (2, "bob", 110)]
    # and when spending takes him out again, he leaves it
    await integration.data(
        'mutation { redeemPoints(memberExternalId: "bob", points: 20, reason: "mug", idempotencyKey: "r2") { id } }'
    )
    await feed(services)
    assert ranking((await board(integration, key="bigs"))["top"]) == [(1, "ana", 150)]
    bad = await boss.error(
        'mutation { setLeaderboard(input: {key: "x", name: "X", scope: SEGMENT, segmentKey: "ghost"}) { key } }'
    )
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    assert "ghost" in bad["message"]


async def test_deleting_a_defined_board_drops_its_keys_and_keeps_the_others(
    boss: GraphQLClient, integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given a defined board with rankings beside the built-in one
    await boss.data(
        'mutation { setLeaderboard(input: {key: "weekly", name: "Weekly", periods: [WEEKLY]}) { key } }'
    )
    await members(integration, "ana")
    await purchases(integration, ("e1", "ana", NOW - timedelta(hours=1), "10"))
    await feed(services)
    redis = services.redis.client

    async def keys(board_key: str) -> list[str]:
        return [k async for k in redis.scan_iter(match=board_pattern(services.redis, program.id, board_key))]

    assert await keys("weekly")
    points = await keys("points")
    # when it is deleted
    assert (await boss.data('mutation { deleteLeaderboard(key: "weekly") }'))["deleteLeaderboard"] is True
    # then its keys are gone, the built-in board's stay, and it is no longer defined
    assert await keys("weekly") == []
    assert sorted(await keys("points")) == sorted(points)
    error = await boss.error('mutation { deleteLeaderboard(key: "weekly") }')
    assert error["extensions"]["code"] == "NOT_FOUND"
