"""Memberships that time alone changes flip at the exact instant, through the scheduler's passes.

Events are recorded through the services; the scheduler runs with a clock of its own
pinned to chosen instants, so "not yet at T - 1 µs, flipped at T" is checked to the
microsecond. Other tests' members may fall due in the same passes: assertions look at
this test's program only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from api.runtime import Services
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import Member, Segment, SegmentChange, SegmentMembership
from domain.segments.scheduler import TimeFlipScheduler
from domain.segments.service import SegmentDraft
from tests.support import ShiftableClock
from tests.support.backends import Backends
from tests.support.graphql import new_program
from tests.support.scheduler import PinnedClock, flips_at

DAY = timedelta(days=1)
US = timedelta(microseconds=1)


async def segments_of(services: Services, program_id: int, external_id: str) -> set[str]:
    async with services.db.read() as session:
        rows = await session.execute(
            select(Segment.key)
            .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
            .join(Member, Member.id == SegmentMembership.member_id)
            .where(Member.program_id == program_id, Member.external_id == external_id)
        )
        return set(rows.scalars())


async def due_of(services: Services, program_id: int, external_id: str) -> datetime | None:
    async with services.db.read() as session:
        return (
            await session.execute(
                select(Member.segments_due_at).where(
                    Member.program_id == program_id, Member.external_id == external_id
                )
            )
        ).scalar_one()


async def changes_of(services: Services, program_id: int) -> list[tuple[str, str, str, datetime]]:
    """The change log of the program: (segment, member, ENTERED/LEFT, at), in order."""
    async with services.db.read() as session:
        rows = await session.execute(
            select(Segment.key, Member.external_id, SegmentChange.change, SegmentChange.at)
            .join(Segment, Segment.id == SegmentChange.segment_id)
            .join(Member, Member.id == SegmentChange.member_id)
            .where(SegmentChange.program_id == program_id)
            .order_by(SegmentChange.id)
        )
        return [(key, member, change, at) for key, member, change, at in rows]


async def define(services: Services, program_id: int, key: str, rule: str, tag: str | None = None) -> None:
    await services.segments.create(
        program_id, SegmentDraft(key, key, "DYNAMIC", rule=rule, applies_tag=tag), actor="test"
    )


async def record(services: Services, program_id: int, member: str, kind: str, *times: datetime) -> None:
    drafts = [
        EventDraft(
            f"{member}-{kind}-{at.isoformat()}",
            member,
            kind,
            at,
            Decimal(10) if kind == "purchase" else None,
            {},
        )
        for at in times
    ]
    outcomes = await services.events.record_events(program_id, drafts)
    assert [o.status for o in outcomes] == ["ACCEPTED"] * len(drafts), outcomes


def midnight(at: datetime) -> datetime:
    return datetime.combine(at.date(), time(), tzinfo=UTC)


async def test_days_since_last_flips_exactly_thirty_days_after_the_purchase(services: Services) -> None:
    # given a win-back segment and a member whose last purchase was at T
    program = await new_program(services)
    await define(services, program.id, "win_back", "days_since_last(purchase) >= 30")
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    bought = services.clock.now().replace(microsecond=123456) - timedelta(hours=1)
    await record(services, program.id, "m1", "purchase", bought)
    assert await due_of(services, program.id, "m1") == bought + 30 * DAY

    # when the scheduler runs a microsecond early, then on time
    early = await flips_at(services, bought + 30 * DAY - US)
    assert await segments_of(services, program.id, "m1") == set()
    on_time = await flips_at(services, bought + 30 * DAY)

    # then the member enters exactly at T + 30 d, logged once, and nothing is due any more
    assert [f for f in early if f.segment_key == "win_back"] == []
    assert [(f.segment_key, f.entered) for f in on_time if f.segment_key == "win_back"] == [
        ("win_back", True)
    ]
    assert await segments_of(services, program.id, "m1") == {"win_back"}
    assert await changes_of(services, program.id) == [("win_back", "m1", "ENTERED", bought + 30 * DAY)]
    assert await due_of(services, program.id, "m1") is None


async def test_a_window_count_leaves_when_the_older_visit_is_thirty_days_old(services: Services) -> None:
    # given two visits a day apart and a segment of two visits in 30 days
    program = await new_program(services)
    await define(services, program.id, "regular", "count(visit, 30d) >= 2")
    await services.members.upsert_members(program.id, [MemberUpsert("v")])
    first = services.clock.now() - 2 * DAY
    await record(services, program.id, "v", "visit", first, first + DAY)
    assert await segments_of(services, program.id, "v") == {"regular"}

    # when time passes the older visit's 30 days
    await flips_at(services, first + 30 * DAY - US)
    still = await segments_of(services, program.id, "v")
    await flips_at(services, first + 30 * DAY)

    # then the member leaves at that instant and is due never again
    assert still == {"regular"}
    assert await segments_of(services, program.id, "v") == set()
    log = await changes_of(services, program.id)
    assert [c[:3] for c in log] == [("regular", "v", "ENTERED"), ("regular", "v", "LEFT")]
    assert log[1][3] == first + 30 * DAY
    assert await due_of(services, program.id, "v") is None


async def test_a_streak_breaks_at_the_second_utc_midnight_without_logins(services: Services) -> None:
    # given logins yesterday (23:00) and today (00:00)
    program = await new_program(services)
    await define(services, program.id, "streaker", "streak(login) >= 2")
    await services.members.upsert_members(program.id, [MemberUpsert("s")])
    today = midnight(services.clock.now())
    await record(services, program.id, "s", "login", today - timedelta(hours=1), today)
    assert await segments_of(services, program.id, "s") == {"streaker"}
    assert await due_of(services, program.id, "s") == today + 2 * DAY

    # when tomorrow passes without a login
    await flips_at(services, today + DAY)
    tomorrow = await segments_of(services, program.id, "s")
    await flips_at(services, today + 2 * DAY - US)
    last_moment = await segments_of(services, program.id, "s")
    await flips_at(services, today + 2 * DAY)

    # then the streak counts until the end of tomorrow and breaks at the next midnight
    assert tomorrow == last_moment == {"streaker"}
    assert await segments_of(services, program.id, "s") == set()
    assert (await changes_of(services, program.id))[-1] == ("streaker", "s", "LEFT", today + 2 * DAY)


async def test_lifecycle_moves_from_new_to_active_to_at_risk(
    services: Services, clock: ShiftableClock
) -> None:
    # given a member who joined at J and bought once at J + 1 d
    program = await new_program(services)
    for stage in ("NEW", "ACTIVE", "AT_RISK"):
        await define(services, program.id, stage.lower(), f'lifecycle = "{stage}"')
    joined = clock.now().replace(microsecond=0) - timedelta(minutes=10)
    await services.members.upsert_members(program.id, [MemberUpsert("l", joined_at=joined)])
    clock.shift(DAY)
    bought = clock.now()
    await record(services, program.id, "l", "purchase", bought)
    assert await segments_of(services, program.id, "l") == {"new"}

    # when the scheduler runs across the thresholds (new 30 d after joining, at risk 30 d after buying)
    seen = []
    for at in (joined + 30 * DAY - US, joined + 30 * DAY, bought + 30 * DAY - US, bought + 30 * DAY):
        await flips_at(services, at)
        seen.append(await segments_of(services, program.id, "l"))

    # then each stage begins at its instant
    assert seen == [{"new"}, {"active"}, {"active"}, {"at_risk"}]
    assert sorted((await changes_of(services, program.id))[1:], key=lambda c: (c[3], c[2])) == [
        ("active", "l", "ENTERED", joined + 30 * DAY),
        ("new", "l", "LEFT", joined + 30 * DAY),
        ("at_risk", "l", "ENTERED", bought + 30 * DAY),
        ("active", "l", "LEFT", bought + 30 * DAY),
    ]
    assert await due_of(services, program.id, "l") == bought + 90 * DAY  # LOST comes next


async def test_segments_reading_a_time_dependent_segment_follow_it_in_the_same_pass(
    services: Services,
) -> None:
    # given a segment reading the win-back segment and one reading the tag it applies
    program = await new_program(services)
    await define(services, program.id, "lapsed", "days_since_last(purchase) >= 30", tag="winback")
    await define(services, program.id, "lapsed_berlin", 'in_segment("lapsed") and city = "Berlin"')
    await define(services, program.id, "mail", 'has_tag("winback")')
    await services.members.upsert_members(program.id, [MemberUpsert("b", attributes={"city": "Berlin"})])
    bought = services.clock.now() - timedelta(hours=2)
    await record(services, program.id, "b", "purchase", bought)

    # when the purchase turns 30 days old
    flips = await flips_at(services, bought + 30 * DAY)

    # then all three flip in that pass, readers after what they read
    mine = [(f.segment_key, f.entered) for f in flips if f.segment_key in {"lapsed", "lapsed_berlin", "mail"}]
    assert mine == [("lapsed", True), ("lapsed_berlin", True), ("mail", True)]
    assert {c[0] for c in await changes_of(services, program.id)} == {"lapsed", "lapsed_berlin", "mail"}
    assert {c[3] for c in await changes_of(services, program.id)} == {bought + 30 * DAY}


async def test_a_member_with_nothing_time_dependent_is_never_due(services: Services) -> None:
    # given only segments that no clock can flip, and one that can but has no purchase to count from
    program = await new_program(services)
    await define(services, program.id, "berlin", 'city = "Berlin"')
    await define(services, program.id, "buyer", "count(purchase) >= 1 and sum(purchase.amount) > 5")
    await services.members.upsert_members(program.id, [MemberUpsert("n", attributes={"city": "Berlin"})])
    await record(services, program.id, "n", "purchase", services.clock.now() - DAY)
    assert await due_of(services, program.id, "n") is None

    # when a time-dependent segment is created, every member is due now (backfill) until a pass
    await define(services, program.id, "lapsed", "days_since_last(visit) >= 30")
    backfilled = await due_of(services, program.id, "n")
    await flips_at(services, services.clock.now())

    # then the pass finds nothing time can flip for this member
    assert backfilled is not None
    assert backfilled <= services.clock.now()
    assert await due_of(services, program.id, "n") is None
    assert await segments_of(services, program.id, "n") == {"berlin", "buyer"}


async def test_creating_a_time_dependent_segment_backfills_exact_due_times(services: Services) -> None:
    # given members whose purchases are older than any segment
    program = await new_program(services)
    await services.members.upsert_members(program.id, [MemberUpsert("a"), MemberUpsert("b")])
    now = services.clock.now()
    await record(services, program.id, "a", "purchase", now - 3 * DAY)
    await record(services, program.id, "b", "purchase", now - 40 * DAY)

    # when a lapsed segment is created and the scheduler runs once
    await define(services, program.id, "lapsed", "days_since_last(purchase) >= 30")
    await flips_at(services, services.clock.now())

    # then the recompute placed b, and a is due when its purchase turns 30 days old
    assert await segments_of(services, program.id, "b") == {"lapsed"}
    assert await due_of(services, program.id, "a") == now - 3 * DAY + 30 * DAY
    assert await due_of(services, program.id, "b") is None


async def test_concurrent_passes_never_take_the_same_member(services: Services, backends: Backends) -> None:
    # given 60 members whose purchases all turn 30 days old at the same instant
    program = await new_program(services)
    await define(services, program.id, "lapsed", "days_since_last(purchase) >= 30")
    members = [f"c{i:02}" for i in range(60)]
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in members])
    bought = services.clock.now() - timedelta(hours=1)
    drafts = [EventDraft(f"{m}-p", m, "purchase", bought, Decimal(5), {}) for m in members]
    assert all(o.status == "ACCEPTED" for o in await services.events.record_events(program.id, drafts))
    at = bought + 30 * DAY
    passes = [
        TimeFlipScheduler(services.db, PinnedClock(at), services.segments.engine, batch=7) for _ in "ab"
    ]

    # when two schedulers run their passes concurrently until nothing is due
    claimed_by_round: list[tuple[list[int], list[int]]] = []
    while True:
        (a, _), (b, _) = await asyncio.gather(passes[0].pass_once(), passes[1].pass_once())
        if not a and not b:
            break
        claimed_by_round.append((a, b))

    # then no member is claimed by both passes of a round, and each flipped exactly once
    for a, b in claimed_by_round:
        assert set(a).isdisjoint(b)
    log = await changes_of(services, program.id)
    assert sorted(member for _, member, _, _ in log) == members
    assert {(key, change, when) for key, _, change, when in log} == {("lapsed", "ENTERED", at)}
    if backends.pg_database:  # SKIP LOCKED: both passes took members in the same round
        assert any(a and b for a, b in claimed_by_round)


@pytest.mark.parametrize("mode", ["exact", "earlier"])
async def test_an_event_never_postpones_an_earlier_due_time(services: Services, mode: str) -> None:
    # given a member due when its first visit leaves the 30-day window
    program = await new_program(services)
    await define(services, program.id, "regular", "count(visit, 30d) >= 2")
    await define(services, program.id, "lapsed", "days_since_last(purchase) >= 30")
    await services.members.upsert_members(program.id, [MemberUpsert("e")])
    now = services.clock.now()
    await record(services, program.id, "e", "visit", now - 5 * DAY, now - 4 * DAY)
    await record(services, program.id, "e", "purchase", now - DAY)
    assert await due_of(services, program.id, "e") == now - 5 * DAY + 30 * DAY

    # when a later event re-evaluates only the purchase segment (due later), or a pass recomputes all
    if mode == "earlier":
        await record(services, program.id, "e", "purchase", now - timedelta(hours=1))
    else:
        async with services.db.unit_of_work() as uow:
            await uow.session.execute(
                update(Member)
                .where(Member.program_id == program.id)
                .values(segments_due_at=now - timedelta(minutes=1))
            )
        await flips_at(services, services.clock.now())

    # then the earlier instant stays the member's due time
    assert await due_of(services, program.id, "e") == now - 5 * DAY + 30 * DAY
