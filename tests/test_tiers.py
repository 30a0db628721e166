"""Tier transitions through the services: upgrades in the event's transaction, downgrades after grace
(each policy at the exact edges, through the time-flip scheduler), the earn multiplier, TIER segments
read by user segments and triggers, parallel batches, and the set-based placement of setTierLadder."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import select

from api.runtime import Services
from domain.campaigns.definitions import TriggerDraft
from domain.errors import Conflict, InvalidInput
from domain.events.refunds import REFUND_OF, REFUND_TYPE
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import Member, Segment, SegmentMembership
from domain.segments.service import SegmentDraft
from domain.tiers.ladder import LadderDraft, TierDraft
from tests.support import ShiftableClock, move_to
from tests.support.fraud import reviewer
from tests.support.graphql import new_program
from tests.support.scheduler import flips_at
from tests.support.tiers import Held, due_at, held, spend_ladder, tier_changes

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
_ids = iter(range(10**9))


async def buy(services: Services, program_id: int, member: str, amount: int, at: datetime) -> list[int]:
    """Record a purchase; the points it earned."""
    outcomes = await services.events.record_events(
        program_id, [EventDraft(f"{member}-{next(_ids)}", member, "purchase", at, Decimal(amount), {})]
    )
    assert [o.status for o in outcomes] == ["ACCEPTED"], outcomes
    return [o.points_awarded for o in outcomes]


async def test_new_members_hold_the_first_tier_and_move_up_in_the_events_transaction(
    services: Services,
) -> None:
    # given a ladder and a new member
    program = await new_program(services)
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m")])
    first = await held(services, program.id, "m")

    # when purchases lift the 30-day spend to 120, then to 620
    now = services.clock.now()
    await buy(services, program.id, "m", 120, now - SECOND)
    silver = await held(services, program.id, "m")
    await buy(services, program.id, "m", 500, now - SECOND)

    # then the member moved up at once, one TIER segment at a time, each change logged once
    assert first == Held("bronze", None, ("tier-bronze",))
    assert silver == Held("silver", None, ("tier-silver",))
    assert await held(services, program.id, "m") == Held("gold", None, ("tier-gold",))
    assert await tier_changes(services, program.id) == [
        ("tier-bronze", "m", "ENTERED"),
        ("tier-bronze", "m", "LEFT"),
        ("tier-silver", "m", "ENTERED"),
        ("tier-silver", "m", "LEFT"),
        ("tier-gold", "m", "ENTERED"),
    ]


async def gold_member(services: Services, policy: str, grace_days: int) -> tuple[int, datetime]:
    """A program whose member "g" bought 520 at T (gold on 30-day spend); the program and T."""
    program = await new_program(services)
    await services.tiers.set_ladder(
        program.id, spend_ladder(downgrade=policy, grace_days=grace_days), actor="test"
    )
    await services.members.upsert_members(program.id, [MemberUpsert("g")])
    bought = services.clock.now().replace(microsecond=0) - SECOND
    await buy(services, program.id, "g", 520, bought)
    assert await held(services, program.id, "g") == Held("gold", None, ("tier-gold",))
    return program.id, bought


@pytest.mark.parametrize(
    ("policy", "after_grace", "next_grace"),
    [("RECALCULATE", "bronze", None), ("ONE_DOWN", "silver", 10 * DAY), ("NEVER", "gold", None)],
)
async def test_a_sliding_window_starts_the_grace_and_the_policy_applies_at_its_end(
    services: Services, policy: str, after_grace: str, next_grace: timedelta | None
) -> None:
    # given a gold member whose only purchase leaves the 30-day window at T + 30 d, 10 grace days
    program_id, bought = await gold_member(services, policy, 10)
    falls = bought + 30 * DAY

    # when the scheduler runs a microsecond before the fall, at it, a second before the grace ends, at it
    await flips_at(services, falls - timedelta(microseconds=1))
    before_fall = await held(services, program_id, "g")
    due_before = await due_at(services, program_id, "g")
    await flips_at(services, falls)
    at_fall = await held(services, program_id, "g")
    due_in_grace = await due_at(services, program_id, "g")
    ends = falls + 10 * DAY
    await flips_at(services, ends - SECOND)
    before_end = await held(services, program_id, "g")
    await flips_at(services, ends)

    # then the tier is kept through the grace and the policy decides at its exact end; the member
    # was due at the fall, then at the grace's end (the scheduler claims by due time, no rescans)
    assert due_before == falls
    assert due_in_grace == (None if policy == "NEVER" else ends)
    assert before_fall == Held("gold", None, ("tier-gold",))
    grace = None if policy == "NEVER" else ends
    assert at_fall == Held("gold", grace, ("tier-gold",))
    assert before_end == Held("gold", grace, ("tier-gold",))
    kept = None if next_grace is None else ends + next_grace
    assert await held(services, program_id, "g") == Held(after_grace, kept, (f"tier-{after_grace}",))


async def test_one_down_steps_again_after_a_second_grace(services: Services) -> None:
    # given a gold member under ONE_DOWN with 10 grace days, already down to silver at T + 40 d
    program_id, bought = await gold_member(services, "ONE_DOWN", 10)
    await flips_at(services, bought + 30 * DAY)
    await flips_at(services, bought + 40 * DAY)
    silver = await held(services, program_id, "g")

    # when the second grace ends
    await flips_at(services, bought + 50 * DAY - SECOND)
    still = await held(services, program_id, "g")
    await flips_at(services, bought + 50 * DAY)

    # then it steps down once more, to the bottom, with no grace left to run
    assert silver == still == Held("silver", bought + 50 * DAY, ("tier-silver",))
    assert await held(services, program_id, "g") == Held("bronze", None, ("tier-bronze",))
    assert (await tier_changes(services, program_id))[-4:] == [
        ("tier-gold", "g", "LEFT"),
        ("tier-silver", "g", "ENTERED"),
        ("tier-silver", "g", "LEFT"),
        ("tier-bronze", "g", "ENTERED"),
    ]


async def test_zero_grace_days_downgrade_at_the_instant_the_value_falls(services: Services) -> None:
    # given a gold member with no grace
    program_id, bought = await gold_member(services, "RECALCULATE", 0)

    # when the purchase leaves the window
    await flips_at(services, bought + 30 * DAY - timedelta(microseconds=1))
    before = await held(services, program_id, "g")
    await flips_at(services, bought + 30 * DAY)

    # then it is bronze at that instant
    assert before == Held("gold", None, ("tier-gold",))
    assert await held(services, program_id, "g") == Held("bronze", None, ("tier-bronze",))


async def test_requalifying_inside_the_grace_clears_it(services: Services, clock: ShiftableClock) -> None:
    # given a gold member in grace since T + 30 d
    program_id, bought = await gold_member(services, "RECALCULATE", 10)
    await flips_at(services, bought + 30 * DAY)
    in_grace = await held(services, program_id, "g")

    # when it buys 500 again five days into the grace (the clock there), and the old grace end passes
    move_to(clock, bought + 35 * DAY)
    await buy(services, program_id, "g", 500, bought + 35 * DAY - SECOND)
    requalified = await held(services, program_id, "g")
    await flips_at(services, bought + 40 * DAY)

    # then the grace is gone and the member stays gold
    assert in_grace == Held("gold", bought + 40 * DAY, ("tier-gold",))
    assert requalified == Held("gold", None, ("tier-gold",))
    assert await held(services, program_id, "g") == Held("gold", None, ("tier-gold",))


async def test_the_earn_multiplier_is_the_tier_held_before_the_event_floored(services: Services) -> None:
    # given Gold at 1.5x, and a member one purchase short of it
    program = await new_program(services)
    await services.fraud_settings.set_rule(
        program.id, "single_accrual_cap", params={"maxPoints": 10_000}, actor="t"
    )
    await services.tiers.set_ladder(program.id, spend_ladder(gold_multiplier=Decimal("1.5")), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m")])
    now = services.clock.now()

    # when it buys for 500 (reaching Gold), then for 15
    lifting = await buy(services, program.id, "m", 500, now - SECOND)
    after = await buy(services, program.id, "m", 15, now - SECOND)

    # then the lifting purchase earns at Bronze and the next at Gold, floored: 15 x 1.5 -> 22
    assert (lifting, after) == ([500], [22])


async def test_a_user_segment_reads_the_new_tier_and_a_trigger_pays_on_entering_gold(
    services: Services,
) -> None:
    # given a ladder, a segment of gold members who visited, and a welcome bonus on entering gold
    program = await new_program(services)
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    await services.segments.create(
        program.id,
        SegmentDraft(
            "gold_visitors", "Gold visitors", "DYNAMIC", rule='in_segment("tier-gold") and count(visit) >= 1'
        ),
        actor="test",
    )
    await services.campaigns.set_triggers(
        program.id,
        "tier-gold",
        [TriggerDraft("ENTER", "AWARD_POINTS", points=100, reason="welcome to Gold")],
        actor="test",
    )
    await services.members.upsert_members(program.id, [MemberUpsert("m")])
    now = services.clock.now()
    outcomes = await services.events.record_events(
        program.id, [EventDraft(f"v-{next(_ids)}", "m", "visit", now - SECOND, None, {})]
    )
    assert [o.status for o in outcomes] == ["ACCEPTED"]

    # when one purchase lifts the member to gold
    await buy(services, program.id, "m", 500, now - SECOND)

    # then in the same pass it is in the user segment, and the bonus is paid once
    async with services.db.read() as session:
        member = (
            await session.execute(
                select(Member).where(Member.program_id == program.id, Member.external_id == "m")
            )
        ).scalar_one()
        keys = set(
            (
                await session.execute(
                    select(Segment.key)
                    .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
                    .where(SegmentMembership.member_id == member.id)
                )
            ).scalars()
        )
    assert keys == {"tier-gold", "gold_visitors"}
    assert member.points_balance == 10 + 500 + 100


@pytest.mark.skipif(os.environ.get("LOYALTY_TEST_BACKEND") == "sqlite", reason="SQLite has one writer")
async def test_parallel_batches_lift_a_member_once(services: Services) -> None:
    # given a member and a ladder
    program = await new_program(services)
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("p")])
    now = services.clock.now()

    # when eight batches of 100 each arrive at once
    await asyncio.gather(*(buy(services, program.id, "p", 100, now - SECOND) for _ in range(8)))

    # then the member ends at gold, in exactly one TIER segment, each change logged once
    assert await held(services, program.id, "p") == Held("gold", None, ("tier-gold",))
    changes = await tier_changes(services, program.id)
    assert changes.count(("tier-gold", "p", "ENTERED")) == 1
    assert changes.count(("tier-silver", "p", "ENTERED")) == 1
    assert changes.count(("tier-bronze", "p", "LEFT")) == 1
    assert len(changes) == 5


def ladder_of(qualifier: str, *thresholds: str) -> LadderDraft:
    names = ["bronze", "silver", "gold", "platinum"]
    return LadderDraft(
        qualifier, [TierDraft(names[i], names[i].title(), Decimal(t)) for i, t in enumerate(thresholds)]
    )


@pytest.mark.parametrize(
    ("qualifier", "thresholds"),
    [
        ("sum(purchase.amount, 30d)", ("0", "100", "500")),
        ("count(purchase, 30d)", ("0", "2", "3")),
        ("avg(purchase.amount)", ("0", "99.5", "250")),
        ('max(purchase.amount, 30d where channel = "web")', ("0", "100", "400.0001")),
    ],
)
async def test_set_ladder_places_every_member_as_the_per_member_rules_would(
    services: Services, qualifier: str, thresholds: tuple[str, ...]
) -> None:
    # given members with purchases around the thresholds, some out of the window, before any ladder
    program = await new_program(services)
    now = services.clock.now()
    spends = {
        "none": [],
        "edge": [Decimal("99.5"), Decimal("0.5")],
        "under": [Decimal("99.4999")],
        "two": [Decimal(60), Decimal(40)],
        "big": [Decimal("400.0001"), Decimal("99.9999")],
        "old": [Decimal(1000)],
        "three": [Decimal(100), Decimal(200), Decimal(250)],
    }
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in spends])
    drafts = [
        EventDraft(
            f"{member}-{i}",
            member,
            "purchase",
            now - (40 * DAY if member == "old" else SECOND),
            amount,
            {"channel": "web" if i % 2 == 0 else "shop"},
        )
        for member, amounts in spends.items()
        for i, amount in enumerate(amounts)
    ]
    await services.events.record_events(program.id, drafts)

    # when the ladder is set (one set-based pass), and the same members are evaluated one by one
    ladder = await services.tiers.set_ladder(program.id, ladder_of(qualifier, *thresholds), actor="test")
    async with services.db.read() as session:
        query = select(Member.external_id, Member.id).where(Member.program_id == program.id)
        ids = {row[0]: row[1] for row in await session.execute(query)}
    views = await services.tiers.member_tiers(program.id, list(ids.values()))

    # then each member holds the tier its value (measured in memory) reaches, and only that segment
    for member, member_id in ids.items():
        expected = ladder.tiers[ladder.reach(Fraction(views[member_id].qualifying_value))].key
        assert await held(services, program.id, member) == Held(expected, None, (f"tier-{expected}",)), member
    placed = {m: (await held(services, program.id, m)).tier for m in ids}
    assert len(set(placed.values())) > 1, placed


async def test_replacing_the_ladder_moves_members_and_drops_the_tiers_it_no_longer_has(
    services: Services,
) -> None:
    # given a three-tier ladder, a silver member, and a segment reading tier-gold
    program = await new_program(services)
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m")])
    await buy(services, program.id, "m", 150, services.clock.now() - SECOND)
    await services.segments.create(
        program.id, SegmentDraft("golden", "Golden", "DYNAMIC", rule='in_segment("tier-gold")'), actor="test"
    )

    # when a ladder without gold is set, then the reader goes and it is set again
    with pytest.raises(Conflict, match="tier-gold"):
        await services.tiers.set_ladder(
            program.id, ladder_of("sum(purchase.amount, 30d)", "0", "150"), actor="test"
        )
    refused = await held(services, program.id, "m")
    await services.segments.delete(program.id, "golden", actor="test")
    await services.tiers.set_ladder(
        program.id, ladder_of("sum(purchase.amount, 30d)", "0", "150"), actor="test"
    )

    # then nothing moved on the refusal; after it the member is silver under the new thresholds
    assert refused == Held("silver", None, ("tier-silver",))
    assert await held(services, program.id, "m") == Held("silver", None, ("tier-silver",))
    async with services.db.read() as session:
        keys = set(
            (await session.execute(select(Segment.key).where(Segment.program_id == program.id))).scalars()
        )
    assert keys == {"tier-bronze", "tier-silver"}


async def test_deleting_the_ladder_removes_its_segments_and_states(services: Services) -> None:
    # given a ladder with a member
    program = await new_program(services)
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m")])

    # when it is deleted, twice
    first, second = (
        await services.tiers.delete_ladder(program.id, actor="test"),
        await services.tiers.delete_ladder(program.id, actor="test"),
    )

    # then the first call removed everything and the second had nothing to remove
    assert (first, second) == (True, False)
    assert await held(services, program.id, "m") == Held(None, None, ())
    assert await services.tiers.ladder(program.id) is None
    assert await tier_changes(services, program.id) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s, p: s.segments.create(
            p, SegmentDraft("tier-x", "X", "DYNAMIC", rule="count(visit) >= 1"), actor="test"
        ),
        lambda s, p: s.segments.update(
            p, SegmentDraft("tier-gold", "X", "DYNAMIC", rule="count(visit) >= 1"), actor="test"
        ),
        lambda s, p: s.segments.delete(p, "tier-gold", actor="test"),
        lambda s, p: s.segments.import_static(p, "tier-gold", "externalId\nm\n", actor="test"),
        lambda s, p: s.segments.create(
            p, SegmentDraft("mine", "X", "TIER", rule="count(visit) >= 1"), actor="test"
        ),
    ],
)
async def test_users_may_not_touch_tier_segments(services: Services, call: Any) -> None:
    program = await new_program(services)
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    with pytest.raises(InvalidInput, match=r"^(key|kind): .*(tier-|setTierLadder)"):
        await call(services, program.id)


async def test_an_approval_lifts_and_a_refund_lowers_the_tier_in_their_transactions(
    services: Services,
) -> None:
    # given purchases above 50 points held for review, and no grace
    program = await new_program(services)
    await services.fraud_settings.set_rule(
        program.id, "single_accrual_cap", params={"maxPoints": 50}, actor="t"
    )
    await services.tiers.set_ladder(program.id, spend_ladder(), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("r")])
    now = services.clock.now()
    outcomes = await services.events.record_events(
        program.id, [EventDraft("big", "r", "purchase", now - SECOND, Decimal(600), {})]
    )
    assert [o.status for o in outcomes] == ["HELD_FOR_REVIEW"]
    while_held = await held(services, program.id, "r")

    # when the reviewer approves it, then the purchase is refunded
    [review] = await services.review.review_queue(program.id)
    await services.review.approve(reviewer(program.id, services.clock), review.entry_id)
    approved = await held(services, program.id, "r")
    refund = EventDraft("back", "r", REFUND_TYPE, now, None, {REFUND_OF: "big"})
    assert [o.status for o in await services.events.record_events(program.id, [refund])] == ["ACCEPTED"]

    # then the approval lifted the member to gold and the refund took it back to bronze
    assert while_held == Held("bronze", None, ("tier-bronze",))
    assert approved == Held("gold", None, ("tier-gold",))
    assert await held(services, program.id, "r") == Held("bronze", None, ("tier-bronze",))
