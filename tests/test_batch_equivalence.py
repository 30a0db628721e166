"""A batch of events has the effect of the same events sent one at a time (issue 15, Tests).

Two programs with one set-up (earning rules, dynamic segments that read event
counts, a window, the balance, other segments and tags, triggers that award
points and tags, a daily challenge with a bonus, a segment-scoped board, fraud
rules that hold purchases above 50 points, block reused receipts and tag a
member non-compliant at a second block) get the same generated script of
purchases, visits, logins, refunds and resent events on one frozen clock:
program A in a few batches, program B one event per call. After each of A's
batches (and after the same events in B) a reviewer approves or rejects the
same held accruals in both. Compared, by externalId and key: every event's
outcome; balances and pending points; ledger entries (kind, status, points,
reason, event, reversed event, decider); events; fraud findings; daily
aggregates; memberships; tags with their sources; the segment change log (in
order per member and segment); challenge completions; the standings feed; and,
once the leaderboard feeder has drained the feed, every board key in Redis.
Program A is also checked against two oracles: balances are the sums of the
ledger's posted and pending entries, and the daily buckets are the fold of the
accepted events that were not refunded.

What the property assumes, and why (each pinned by an example below):

- New events are sent in occurredAt order (ties by externalId). The audit judges a
  batch in that order, "as it happened" (docs/fraud.md); events sent out of order
  are judged in another order one at a time, so another one of two events with
  the same receipt is blocked.
- A refund is a batch of its own in program A. A batch evaluates each touched
  member's segments once, after all of its events (docs/architecture.md, step
  5): a member who enters a segment and leaves it again within one batch (a
  purchase and its refund) never enters it, so nothing is logged and no trigger
  fires, where one event at a time logs both changes and keeps the bonus.
- No trigger sizes its bonus from the member's history: a percentOfLifetimeValue
  bonus is sized when the member enters, which for a batch is after all of the
  batch's purchases.

- A tier's earnMultiplier is the one of the tier held when the batch began
  (docs/tiers.md): a batch whose first purchases lift a member to a tier earns
  its later purchases at the tier below; one at a time they earn at the new tier.

The known differences are pinned by the `test_known_difference_*` examples, as
the code behaves today: if a change makes batch and one-at-a-time agree there,
the example fails, and the assumption above can go with it.

Sync tests with a private event loop, like tests/test_fraud_invariant.py:
hypothesis cannot re-enter pytest-asyncio's session loop.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api.runtime import Services
from domain.campaigns.definitions import TriggerDraft
from domain.db.types import amount_to_units
from domain.events.refunds import REFUND_OF, REFUND_TYPE
from domain.events.service import EventOutcome
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.programs.service import ProgramSettings
from domain.segments.service import SegmentDraft
from domain.settings import Settings
from gamification.challenges.definitions import ChallengeDraft
from gamification.leaderboards.boards import BoardDefinition, BoardMetric, BoardScope
from gamification.periods import PeriodKind
from tests.support import FrozenClock, Harness, private_services
from tests.support.accruals import MEMBERS, Script, scripts, splits
from tests.support.examples import examples
from tests.support.fraud import reviewer
from tests.support.snapshots import ProgramState, drain_feed, read_boards, read_state
from tests.support.tiers import spend_ladder

#: Created in this order (a segment is created after those it reads).
SEGMENTS = (
    SegmentDraft("buyer", "Buyers", "DYNAMIC", rule="count(purchase) >= 2", applies_tag="regular"),
    SegmentDraft("rich", "Rich", "DYNAMIC", rule="pointsBalance >= 40"),
    SegmentDraft("vip", "VIP", "DYNAMIC", rule='in_segment("rich") and has_tag("regular")'),
    SegmentDraft("spender", "Spenders", "DYNAMIC", rule="sum(purchase.amount, 2d) >= 60"),
    SegmentDraft("flagged", "Flagged", "DYNAMIC", rule='has_tag("non-compliant")'),
    SegmentDraft("golden", "Golden", "DYNAMIC", rule='has_tag("gold") and count(visit) >= 1'),
)
Triggers = Mapping[str, Sequence[TriggerDraft]]
TRIGGERS: Triggers = {
    "rich": [
        TriggerDraft("ENTER", "AWARD_POINTS", points=5, reason="rich welcome"),
        TriggerDraft("ENTER", "ADD_TAG", tag="gold"),
        TriggerDraft("LEAVE", "REMOVE_TAG", tag="gold"),
    ],
    "vip": [TriggerDraft("ENTER", "AWARD_POINTS", points=10, reason="vip welcome")],
}
CHALLENGE = ChallengeDraft("two-visits", "Two visits a day", "visit", 2, "DAILY", 15)
BOARD = BoardDefinition(
    "rich-board",
    "Points of the rich",
    BoardMetric.POINTS,
    None,
    BoardScope.SEGMENT,
    "rich",
    (PeriodKind.ALL_TIME, PeriodKind.DAILY),
    keep_periods=3,  # the script's three days (a rebuild on creation walks every kept period)
)
#: Held: a purchase above 50 points; blocked: a reused receipt; tagged non-compliant: a second block.
FRAUD_RULES = {"single_accrual_cap": {"maxPoints": 50}, "non_compliant": {"maxBlocks": 1}}
REVIEWER = "admin:reviewer@example.com"
#: Each example sets up two programs and runs up to 12 events twice (about 1.5 s of CPU).
EXAMPLES = examples(int(os.environ.get("BATCH_EQUIVALENCE_EXAMPLES", "15")))


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings, FrozenClock()) as opened:
        yield opened


async def open_program(services: Services, members: int, triggers: Triggers = TRIGGERS) -> int:
    """A fresh program with the set-up above and the first `members` of MEMBERS."""
    program = await services.programs.create_program(
        f"be-{uuid.uuid4().hex[:12]}", "Batch equivalence", "B2C", ProgramSettings(auto_create_members=True)
    )
    await services.programs.set_earning_rule(program.id, "login", None, 1, actor="test")
    for rule, params in FRAUD_RULES.items():
        await services.fraud_settings.set_rule(program.id, rule, params=params, actor="test")
    for draft in SEGMENTS:
        await services.segments.create(program.id, draft, actor="test")
    for key, drafts in triggers.items():
        await services.campaigns.set_triggers(program.id, key, drafts, actor="test")
    await services.challenges.set_challenge(program.id, CHALLENGE, actor="test")
    await services.leaderboards.set_board(program.id, BOARD, actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in MEMBERS[:members]])
    return program.id


async def decide(services: Services, program_id: int, decisions: Sequence[tuple[str, str]]) -> None:
    """Approve or reject, in order, the held accruals of the named events (others are not held)."""
    if not decisions:
        return
    held = {r.event_external_id: r.entry_id for r in await services.review.review_queue(program_id, 500)}
    for external_id, decision in decisions:
        entry_id = held.get(external_id)
        if entry_id is None:
            continue
        if decision == "approve":
            await services.review.approve(reviewer(program_id, services.clock, REVIEWER), entry_id)
        else:
            await services.review.reject(
                reviewer(program_id, services.clock, REVIEWER), entry_id, "receipt does not match"
            )


async def run_both(
    services: Services,
    members: int,
    drafts: Sequence[EventDraft],
    batches: Sequence[Sequence[int]],
    decisions: Sequence[tuple[str, str]] = (),
    triggers: Triggers = TRIGGERS,
) -> tuple[list[EventOutcome], list[EventOutcome], int, int]:
    """Program A records `drafts` in `batches`, program B one at a time; after each of A's batches
    (and after the same events in B) a reviewer decides, alike in both, on the held accruals of the
    batch's events that `decisions` names (externalId, approve | reject), in that order.

    Returns both programs' outcomes (in the order the events were sent) and their ids.
    """
    batched, single = await asyncio.gather(
        open_program(services, members, triggers), open_program(services, members, triggers)
    )
    outcomes_a: list[EventOutcome] = []
    outcomes_b: list[EventOutcome] = []
    for batch in batches:
        outcomes_a += await services.events.record_events(batched, [drafts[i] for i in batch])
        for i in batch:
            outcomes_b += await services.events.record_events(single, [drafts[i]])
        sent = {drafts[i].external_id for i in batch}
        now = [(external_id, decision) for external_id, decision in decisions if external_id in sent]
        await decide(services, batched, now)
        await decide(services, single, now)
    return outcomes_a, outcomes_b, batched, single


def answers(outcomes: Sequence[EventOutcome]) -> list[tuple[str, str, int, str | None]]:
    """The outcomes, without the message of a DUPLICATE: "repeated earlier in this batch" in a
    batch is "already recorded" one at a time."""
    return [
        (o.external_id, o.status.value, o.points_awarded, None if o.status == "DUPLICATE" else o.message)
        for o in outcomes
    ]


async def assert_equivalent(
    services: Services,
    members: int,
    drafts: Sequence[EventDraft],
    batches: Sequence[Sequence[int]],
    decisions: Sequence[tuple[str, str]] = (),
    triggers: Triggers = TRIGGERS,
) -> tuple[list[EventOutcome], ProgramState]:
    """Run both programs and assert every part of their states is equal; returns A's outcomes and state."""
    outcomes_a, outcomes_b, batched, single = await run_both(
        services, members, drafts, batches, decisions, triggers
    )
    # then every event had the same outcome (a DUPLICATE's message says where the first copy was)
    assert answers(outcomes_a) == answers(outcomes_b)
    # and both programs hold the same balances, ledger, segments, tags, change log and feed
    state_a, state_b = await read_state(services, batched), await read_state(services, single)
    differences = state_a.differences(state_b)
    assert not differences, "batched (first) and one at a time (second) differ in " + "\n".join(differences)
    # and what they hold adds up: balances are the ledger's sums, buckets the accepted events'
    assert state_a.balances == ledger_sums(state_a)
    assert state_a.aggregates == folded_events(state_a)
    # and once the feed is drained, the boards rank the same members with the same scores
    await drain_feed(services)
    assert await read_boards(services, batched) == await read_boards(services, single)
    return outcomes_a, state_a


def ledger_sums(state: ProgramState) -> dict[str, tuple[int, int]]:
    """Per member: (sum of POSTED points, sum of PENDING_REVIEW points)."""
    sums = dict.fromkeys(state.balances, (0, 0))
    for member, entries in state.ledger.items():
        posted = sum(points for _, status, points, *_ in entries if status == "POSTED")
        pending = sum(points for _, status, points, *_ in entries if status == "PENDING_REVIEW")
        sums[member] = (posted, pending)
    return sums


def folded_events(state: ProgramState) -> list[tuple[object, ...]]:
    """The daily buckets the accepted events that were not refunded make, as `aggregates` lists them."""
    refunded = {
        reversed_event
        for entries in state.ledger.values()
        for kind, *_, reversed_event, _ in entries
        if kind == "REVERSAL"
    }
    days: dict[tuple[str, str, date], list[tuple[datetime, Decimal | None]]] = defaultdict(list)
    for external_id, (member, event_type, status, _, _, at, amount) in state.events.items():
        if status == "ACCEPTED" and external_id not in refunded:
            days[(member, event_type, at.date())].append((at, amount))
    buckets = []
    for (member, event_type, day), events in days.items():
        units = [amount_to_units(amount) for _, amount in events if amount is not None]
        times = [at for at, _ in events]
        buckets.append(
            (
                member,
                event_type,
                day,
                len(events),
                len(units),
                sum(units),
                min(units, default=None),
                max(units, default=None),
                min(times),
                max(times),
            )
        )
    return sorted(buckets, key=repr)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), script=scripts())
def test_a_batch_has_the_effect_of_its_events_one_at_a_time(
    harness: Harness, data: st.DataObject, script: Script
) -> None:
    # given a script of events, cut into batches for program A
    batches = data.draw(splits(script), label="batches")
    clock = harness.services.clock
    assert isinstance(clock, FrozenClock)
    clock.at = datetime.now(UTC)  # boards expire closed periods by the real clock (Redis)
    drafts = script.drafts(clock.at)
    # when A records them in those batches, B one by one, and a reviewer decides alike in both
    # after each of A's batches
    # then everything both programs hold is the same
    outcomes, state = harness.run(
        assert_equivalent(harness.services, script.members, drafts, batches, script.decisions())
    )
    _label(outcomes, state, batches)


def _label(outcomes: Sequence[EventOutcome], state: ProgramState, batches: Sequence[Sequence[int]]) -> None:
    """What the example exercised (pytest --hypothesis-show-statistics)."""
    for status in sorted({o.status.value for o in outcomes}):
        event(f"an event {status}")
    kinds = Counter(kind for entries in state.ledger.values() for kind, *_ in entries)
    for kind in ("ADJUSTMENT", "REVERSAL"):
        if kinds[kind]:
            event(f"a {kind} entry")
    if any(decided for entries in state.ledger.values() for *_, decided in entries):
        event("a reviewer decided")
    for (_, segment), changes in state.changes.items():
        event(f"{segment}: {changes[-1][0]}")
    if any(tag == "non-compliant" for _, tag, _, _ in state.tags):
        event("tagged non-compliant")
    if state.completions:
        event("challenge completed")
    event(f"largest batch: {max(len(b) for b in batches)}")


# -- the known differences (see the module docstring) ------------------------------------------------


def _drafts(now: datetime, *events: tuple[str, str, int, Decimal | None, dict[str, str]]) -> list[EventDraft]:
    """(externalId, type, minutes ago, amount, properties) each, all of member ana."""
    return [
        EventDraft(external_id, "ana", kind, now - timedelta(minutes=ago), amount, properties)
        for external_id, kind, ago, amount, properties in events
    ]


async def both_states(
    services: Services,
    drafts: Sequence[EventDraft],
    triggers: Triggers = TRIGGERS,
) -> tuple[list[EventOutcome], ProgramState, list[EventOutcome], ProgramState]:
    """Member ana's events in one batch (A) and one at a time (B): both outcomes and states."""
    outcomes_a, outcomes_b, batched, single = await run_both(
        services, 1, drafts, [list(range(len(drafts)))], (), triggers
    )
    return outcomes_a, await read_state(services, batched), outcomes_b, await read_state(services, single)


def test_known_difference_a_segment_entered_and_left_within_one_batch(harness: Harness) -> None:
    """One at a time, ana enters `rich` with a purchase of 45, earns its 5-point bonus, and leaves
    it when the purchase is refunded: ENTERED and LEFT are logged and the bonus stays. In one
    batch the segments are evaluated once, after the refund: nothing is logged, no bonus."""
    # given a purchase worth 45 points and its refund
    drafts = _drafts(
        harness.services.clock.now(),
        ("e1", "purchase", 2, Decimal(45), {}),
        ("e2", REFUND_TYPE, 1, None, {REFUND_OF: "e1"}),
    )
    # when A records both in one batch and B one at a time
    _, batched, _, single = harness.run(both_states(harness.services, drafts))
    # then only B saw ana in `rich`, and only B paid the bonus
    assert (batched.balances, single.balances) == ({"ana": (0, 0)}, {"ana": (5, 0)})
    assert batched.changes == {}
    assert [change for change, _ in single.changes[("ana", "rich")]] == ["ENTERED", "LEFT"]


def test_known_difference_a_bonus_sized_by_lifetime_value_counts_the_whole_batch(harness: Harness) -> None:
    """A 10 % lifetime-value bonus on entering `spender` (60 spent in 2 days): one at a time, ana
    enters with 80 spent (8 points); in one batch she enters after all three purchases (12)."""
    # given three purchases of 40, and a spender trigger sized by lifetime value
    lifetime = TriggerDraft("ENTER", "AWARD_POINTS", percent_of_lifetime_value=Decimal(10))
    drafts = _drafts(
        harness.services.clock.now(),
        ("e1", "purchase", 3, Decimal(40), {}),
        ("e2", "purchase", 2, Decimal(40), {}),
        ("e3", "purchase", 1, Decimal(40), {}),
    )
    # when A records them in one batch and B one at a time
    _, batched, _, single = harness.run(
        both_states(harness.services, drafts, {**TRIGGERS, "spender": [lifetime]})
    )

    # then the bonus is 12 in A and 8 in B
    def bonus(state: ProgramState) -> list[int]:
        return [points for _, _, points, reason, *_ in state.ledger["ana"] if reason.endswith("(spender)")]

    assert (bonus(batched), bonus(single)) == ([12], [8])


def test_known_difference_a_refund_sent_before_its_purchase_in_one_batch(harness: Harness) -> None:
    """A batch applies its refunds after all of its accruals: a refund sent before its purchase in
    the same batch is ACCEPTED; one at a time it names an unknown event and is REJECTED."""
    # given a refund of e2, sent before e2
    drafts = _drafts(
        harness.services.clock.now(),
        ("e1", REFUND_TYPE, 2, None, {REFUND_OF: "e2"}),
        ("e2", "purchase", 1, Decimal(30), {}),
    )
    # when A records both in one batch and B one at a time
    outcomes_a, batched, outcomes_b, single = harness.run(both_states(harness.services, drafts))
    # then A refunded the purchase and B refused the refund
    assert [(o.status, o.points_awarded) for o in outcomes_a] == [("ACCEPTED", 0), ("ACCEPTED", 30)]
    assert [(o.status, o.points_awarded) for o in outcomes_b] == [("REJECTED", 0), ("ACCEPTED", 30)]
    assert (batched.balances, single.balances) == ({"ana": (0, 0)}, {"ana": (30, 0)})


def test_known_difference_events_sent_out_of_occurred_at_order(harness: Harness) -> None:
    """Two purchases on one receipt, the later one sent first: one at a time the first sent is
    accepted and the second blocked; a batch judges them as they happened, the other way round."""
    # given e1 (10, a minute ago) and e2 (20, five minutes ago) on receipt r1, e1 sent first
    drafts = _drafts(
        harness.services.clock.now(),
        ("e1", "purchase", 1, Decimal(10), {"receiptId": "r1"}),
        ("e2", "purchase", 5, Decimal(20), {"receiptId": "r1"}),
    )
    # when A records both in one batch and B one at a time
    outcomes_a, _, outcomes_b, _ = harness.run(both_states(harness.services, drafts))
    # then A blocks e1 (e2 occurred first) and B blocks e2 (e1 arrived first)
    assert [o.status for o in outcomes_a] == ["BLOCKED", "ACCEPTED"]
    assert [o.status for o in outcomes_b] == ["ACCEPTED", "BLOCKED"]


def test_known_difference_an_earn_multiplier_is_the_tiers_held_when_the_batch_began(
    harness: Harness,
) -> None:
    """A Gold multiplier of 2 from 500 spent in 30 days: one at a time, ana's first purchase (500)
    lifts her to Gold and her second (30) earns 60; in one batch both earn at Bronze, 1x."""
    services = harness.services
    # given a ladder in both programs, and two purchases
    drafts = _drafts(
        services.clock.now(), ("e1", "purchase", 2, Decimal(500), {}), ("e2", "purchase", 1, Decimal(30), {})
    )

    async def run() -> tuple[list[EventOutcome], list[EventOutcome]]:
        batched, single = await asyncio.gather(open_program(services, 1, {}), open_program(services, 1, {}))
        for program_id in (batched, single):
            await services.tiers.set_ladder(
                program_id, spend_ladder(gold_multiplier=Decimal(2)), actor="test"
            )
        await services.fraud_settings.set_rule(
            batched, "single_accrual_cap", params={"maxPoints": 10_000}, actor="t"
        )
        await services.fraud_settings.set_rule(
            single, "single_accrual_cap", params={"maxPoints": 10_000}, actor="t"
        )
        outcomes_a = await services.events.record_events(batched, drafts)
        outcomes_b = [o for d in drafts for o in await services.events.record_events(single, [d])]
        return outcomes_a, outcomes_b

    # when A records both in one batch and B one at a time
    outcomes_a, outcomes_b = harness.run(run())
    # then the second purchase earns 30 in A and 60 in B
    assert [o.points_awarded for o in outcomes_a] == [500, 30]
    assert [o.points_awarded for o in outcomes_b] == [500, 60]
