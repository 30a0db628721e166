"""The fraud invariant: whatever is held, blocked, approved, rejected, refunded or redeemed, it adds up.

Random interleavings of purchases (allowed, held for review or blocked by the audit),
review decisions, refunds and redemptions keep, for every member and after every step:

- pointsBalance == sum(points of POSTED entries) (accruals, and the negative refund
  reversals and redemptions), and == a plain-Python model of the balance;
- pendingPoints == sum(points of PENDING_REVIEW entries), and == the model;
- membership of dynamic segments over purchases and the balance == what an oracle
  computes from the purchases that were accepted (at once or on approval) and not refunded.

The audit is `VerdictFromProperties` (tests/support/audit.py) inside a pipeline wired like
`Services.events` (the same in-transaction listeners: the segment engine, challenges), and
the review queue decides on that pipeline. Like tests/test_leaderboard_properties.py this is
a sync test with a private event loop and services: hypothesis cannot re-enter
pytest-asyncio's session loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.runtime import Services
from domain.enums import AccrualStatus, EventStatus, Verdict
from domain.errors import Conflict, InvalidInput
from domain.events.refunds import REFUND_OF, REFUND_TYPE
from domain.events.service import EventOutcome, EventService
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import LedgerEntry, Member, Segment, SegmentMembership
from domain.segments.service import SegmentDraft
from domain.settings import Settings
from fraud.review import ReviewService
from tests.support import private_services
from tests.support.audit import VerdictFromProperties
from tests.support.examples import examples
from tests.support.fraud import reviewer
from tests.support.graphql import new_program

T = TypeVar("T")
MEMBERS = ["ana", "bob", "cem"]
#: The program's dynamic segments: a count, a sum of amounts and the balance, each a threshold.
SEGMENTS = {
    "frequent": "count(purchase) >= 2",
    "big_spender": "sum(purchase.amount) >= 50",
    "rich": "pointsBalance >= 30",
}
VERDICT_OF = {"accrue": Verdict.ALLOW, "hold": Verdict.REVIEW, "block": Verdict.BLOCK}
STATUS_OF = {
    Verdict.ALLOW: EventStatus.ACCEPTED,
    Verdict.REVIEW: EventStatus.HELD_FOR_REVIEW,
    Verdict.BLOCK: EventStatus.BLOCKED,
}


@dataclass(frozen=True)
class Action:
    """One step. `member` picks a member (accrue, hold, block, redeem); `pick` picks an earlier
    purchase (approve, reject, refund) or is the percentage of the balance to redeem."""

    kind: str
    member: int
    amount: Decimal
    pick: int


#: Purchase amounts: whole units, or cents (below 1: an event worth no points).
AMOUNTS = st.integers(0, 60).map(Decimal) | st.decimals(min_value=0, max_value=60, places=2)
#: Purchases and approvals weigh more, so that members reach the segments and then leave them.
KINDS = (
    ["accrue"] * 3 + ["hold"] * 2 + ["block", "approve", "approve", "reject", "refund", "refund", "redeem"]
)
ACTIONS = st.builds(
    Action,
    kind=st.sampled_from(KINDS),
    member=st.integers(0, len(MEMBERS) - 1),
    amount=AMOUNTS,
    pick=st.integers(1, 150),
)


@dataclass
class Purchase:
    """What the model knows of one purchase event."""

    external_id: str
    member: str
    amount: Decimal
    points: int
    status: EventStatus
    entry_id: int | None  # its ACCRUAL entry; None when it earned no points
    held: bool
    refunded: bool = False


@dataclass
class Model:
    members: list[str]
    balances: dict[str, int]
    pending: dict[str, int]
    purchases: list[Purchase] = field(default_factory=list)

    def counted(self, member: str) -> list[Purchase]:
        """The member's purchases that segments see: accepted (at once or on approval), not refunded."""
        return [
            p
            for p in self.purchases
            if p.member == member and p.status == EventStatus.ACCEPTED and not p.refunded
        ]

    def segments(self) -> dict[str, set[str]]:
        """The oracle: who is in each of SEGMENTS."""
        wanted: dict[str, set[str]] = {key: set() for key in SEGMENTS}
        for member in self.members:
            counted = self.counted(member)
            if len(counted) >= 2:
                wanted["frequent"].add(member)
            if sum((p.amount for p in counted), Decimal(0)) >= 50:
                wanted["big_spender"].add(member)
            if self.balances[member] >= 30:
                wanted["rich"].add(member)
        return wanted


@dataclass
class Observed:
    balances: dict[str, int]
    pending: dict[str, int]
    posted_sums: dict[str, int]
    pending_sums: dict[str, int]
    segments: dict[str, set[str]]


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    services: Services
    #: The pipeline of `services.events` with the stand-in audit, and the review queue deciding on it.
    events: EventService
    review: ReviewService

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings) as opened:
        services = opened.services
        events = EventService(services.db, services.clock, VerdictFromProperties())
        yield Harness(opened.loop, services, events, ReviewService(services.db, services.clock))


@settings(
    max_examples=examples(80),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(member_count=st.integers(2, 3), actions=st.lists(ACTIONS, min_size=5, max_size=25))
def test_balances_pending_points_and_segments_follow_only_posted_purchases(
    harness: Harness, member_count: int, actions: list[Action]
) -> None:
    harness.run(_interleave(harness, MEMBERS[:member_count], actions))


async def _interleave(harness: Harness, members: list[str], actions: list[Action]) -> None:
    # given a fresh program with its segments and members, all at zero
    services = harness.services
    program = await new_program(services)
    for key, rule in SEGMENTS.items():
        await services.segments.create(program.id, SegmentDraft(key, key, "DYNAMIC", rule=rule), actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in members])
    model = Model(members, dict.fromkeys(members, 0), dict.fromkeys(members, 0))
    steps = Steps(harness, program.id, f"admin:{program.admin_email}", model)
    await steps.check()
    for action in actions:
        # when any of the actions happens
        await steps.take(action)
        # then the ledger, the balances and the segments still agree with the model
        await steps.check()
    for key, inside in model.segments().items():
        event(f"{key}: {'someone' if inside else 'nobody'} inside at the end")


class Steps:
    """Runs actions against the services and the model side by side."""

    def __init__(self, harness: Harness, program_id: int, admin: str, model: Model) -> None:
        self.harness = harness
        self.services = harness.services
        self.program_id = program_id
        self.admin = admin
        self.model = model
        self.ids = itertools.count(1)
        self.inside: dict[str, set[str]] = {key: set() for key in SEGMENTS}

    async def take(self, action: Action) -> None:
        if action.kind in VERDICT_OF:
            member = self.model.members[action.member % len(self.model.members)]
            await self.purchase(member, action.amount, VERDICT_OF[action.kind])
        elif action.kind in ("approve", "reject"):
            await self.decide(action.kind, action.pick)
        elif action.kind == "refund":
            await self.refund(action.pick)
        else:
            member = self.model.members[action.member % len(self.model.members)]
            await self.redeem(member, action.pick)

    async def record(self, draft: EventDraft) -> EventOutcome:
        (outcome,) = await self.harness.events.record_events(self.program_id, [draft])
        return outcome

    def draft(self, member: str, event_type: str, amount: Decimal | None, properties: object) -> EventDraft:
        at = self.services.clock.now() - timedelta(hours=1)
        return EventDraft(f"e{next(self.ids)}", member, event_type, at, amount, properties)

    async def purchase(self, member: str, amount: Decimal, verdict: Verdict) -> None:
        """ALLOW posts the points, REVIEW holds them as pending, BLOCK moves nothing."""
        draft = self.draft(member, "purchase", amount, {"verdict": verdict.value})
        points = int(amount)  # 1 point per whole unit, rounded down
        outcome = await self.record(draft)
        status = STATUS_OF[verdict]
        assert (outcome.status, outcome.points_awarded) == (
            status,
            points if status == EventStatus.ACCEPTED else 0,
        ), outcome
        entry_id = await self.entry_id(draft.external_id) if points else None
        assert (entry_id is None) == (points == 0)
        self.model.purchases.append(
            Purchase(
                draft.external_id,
                member,
                amount,
                points,
                status,
                entry_id,
                held=verdict == Verdict.REVIEW,
            )
        )
        if status == EventStatus.ACCEPTED:
            self.model.balances[member] += points
        elif status == EventStatus.HELD_FOR_REVIEW:
            self.model.pending[member] += points

    async def decide(self, decision: str, pick: int) -> None:
        """A held accrual is approved (posted) or rejected (released) once; a second decision is Conflict."""
        held = [p for p in self.model.purchases if p.held and p.entry_id is not None]
        if not held:
            return
        chosen = held[pick % len(held)]
        assert chosen.entry_id is not None
        review = self.harness.review
        decider = reviewer(self.program_id, self.services.clock, self.admin)
        call = (
            review.approve(decider, chosen.entry_id)
            if decision == "approve"
            else review.reject(decider, chosen.entry_id, "looks like card testing")
        )
        event(f"{decision}: {'decided' if chosen.status == EventStatus.HELD_FOR_REVIEW else 'conflict'}")
        if chosen.status != EventStatus.HELD_FOR_REVIEW:
            with pytest.raises(Conflict):
                await call
            return
        entry = await call
        self.model.pending[chosen.member] -= chosen.points
        if decision == "approve":
            assert (entry.status, entry.points) == (AccrualStatus.POSTED, chosen.points)
            chosen.status = EventStatus.ACCEPTED
            self.model.balances[chosen.member] += chosen.points
        else:
            assert (entry.status, entry.points) == (AccrualStatus.REJECTED, chosen.points)
            chosen.status = EventStatus.BLOCKED

    async def refund(self, pick: int) -> None:
        """Only a posted, unrefunded purchase the balance still covers is refunded; the rest are REJECTED."""
        if not self.model.purchases:
            return
        original = self.model.purchases[pick % len(self.model.purchases)]
        draft = self.draft(original.member, REFUND_TYPE, None, {REFUND_OF: original.external_id})
        refundable = (
            original.status == EventStatus.ACCEPTED
            and original.points > 0
            and not original.refunded
            and self.model.balances[original.member] >= original.points
        )
        outcome = await self.record(draft)
        event(f"refund: {'accepted' if refundable else 'rejected'}")
        if not refundable:
            assert outcome.status == EventStatus.REJECTED, (original, outcome)
            return
        assert outcome.status == EventStatus.ACCEPTED, (original, outcome)
        original.refunded = True
        self.model.balances[original.member] -= original.points

    async def redeem(self, member: str, percent: int) -> None:
        """Up to the balance posts a redemption; beyond it is InvalidInput and moves nothing."""
        balance = self.model.balances[member]
        points = max(1, balance * percent // 100)
        call = self.services.ledger.redeem(self.program_id, member, points, "gift", f"r{next(self.ids)}")
        event(f"redeem: {'beyond' if points > balance else 'within'} the balance")
        if points > balance:
            with pytest.raises(InvalidInput):
                await call
            return
        entry = await call
        assert (entry.points, entry.status) == (-points, AccrualStatus.POSTED)
        self.model.balances[member] -= points

    async def entry_id(self, external_id: str) -> int | None:
        async with self.services.db.read() as session:
            found: int | None = await session.scalar(
                select(LedgerEntry.id).where(
                    LedgerEntry.program_id == self.program_id,
                    LedgerEntry.idempotency_key == f"event:{external_id}",
                )
            )
        return found

    async def check(self) -> None:
        seen = await self.observe()
        model = self.model
        assert seen.balances == seen.posted_sums == model.balances, seen
        assert seen.pending == seen.pending_sums == model.pending, seen
        wanted = model.segments()
        assert seen.segments == wanted, (seen.segments, model.purchases, model.balances)
        for key, inside in wanted.items():
            if self.inside[key] - inside:
                event(f"{key}: someone left")
            self.inside[key] = inside

    async def observe(self) -> Observed:
        program_id = self.program_id
        async with self.services.db.read() as session:
            members = (
                await session.execute(
                    select(Member.external_id, Member.points_balance, Member.pending_points).where(
                        Member.program_id == program_id
                    )
                )
            ).all()
            sums = (
                await session.execute(
                    select(Member.external_id, LedgerEntry.status, func.sum(LedgerEntry.points))
                    .join(Member, Member.id == LedgerEntry.member_id)
                    .where(LedgerEntry.program_id == program_id)
                    .group_by(Member.external_id, LedgerEntry.status)
                )
            ).all()
            memberships = (
                await session.execute(
                    select(Segment.key, Member.external_id)
                    .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
                    .join(Member, Member.id == SegmentMembership.member_id)
                    .where(Segment.program_id == program_id)
                )
            ).all()
        by_status: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(self.model.members, 0))
        for member, status, points in sums:
            by_status[status][member] = int(points)
        segments: dict[str, set[str]] = {key: set() for key in SEGMENTS}
        for key, member in memberships:
            segments[key].add(member)
        return Observed(
            balances={m: balance for m, balance, _ in members},
            pending={m: pending for m, _, pending in members},
            posted_sums=by_status[AccrualStatus.POSTED.value],
            pending_sums=by_status[AccrualStatus.PENDING_REVIEW.value],
            segments=segments,
        )
