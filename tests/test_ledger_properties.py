"""Property tests of the points ledger (see the invariants in domain/ledger/service.py).

A hypothesis state machine drives accruals, redemptions, idempotent replays, reversals and
races (redemptions on separate sessions, twins of one request) against the suite's migrated
database, next to a plain-Python model, and after every step reads the database back:
balances equal the sum of posted entries and the model, never go below zero, and ledger rows
are only ever appended. Two races are pinned down deterministically (GatedDatabase), and the
earning arithmetic is checked against exact rational arithmetic. A second machine (LotsMachine)
drives expiry lots with a frozen clock: accruals dated in the past, goodwill adjustments and
corrections, redemptions, reversals and the expiry sweep, next to a model of every lot.

Hypothesis runs a state machine synchronously, while the services hold asyncpg/aiosqlite
connections bound to an event loop and the session loop of pytest-asyncio cannot be
re-entered from sync code. So these are plain sync tests: each builds its own loop, engine
and services (a `Harness`) and runs every step with `loop.run_until_complete`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Executable, Result, Update, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.runtime import wire_handlers
from domain.audit import AllowAll
from domain.auth.principal import Principal, PrincipalKind
from domain.auth.scopes import ALL_SCOPES
from domain.clock import Clock, SystemClock
from domain.db.engine import Database, UnitOfWork, create_engine
from domain.enums import AccrualStatus, EntryKind, EventStatus, SegmentKind, TierDowngrade
from domain.errors import Conflict, DomainError, InvalidInput
from domain.events.service import EventOutcome, EventService
from domain.events.validation import EventDraft
from domain.ledger.earning import MAX_FIXED_POINTS, MAX_POINTS_PER_UNIT, EarningRuleSpec
from domain.ledger.expiry import ExpirySweeper
from domain.ledger.service import LedgerService
from domain.members.service import MemberService, MemberUpsert
from domain.models import LedgerEntry, Member, PointsLot, Segment, SegmentMembership
from domain.programs.service import ProgramService
from domain.segments.engine import SegmentEngine
from domain.segments.scheduler import TimeFlipScheduler
from domain.settings import Settings
from domain.tiers.ladder import LadderDraft, TierDraft
from domain.tiers.service import MemberTierView, TierService
from tests.support import FrozenClock
from tests.support.examples import examples

T = TypeVar("T")

#: The lots machine's ladder: Silver from 150 spent in 7 days, earning 1.5x, kept 2 days after falling.
LADDER = LadderDraft(
    "sum(purchase.amount, 7d)",
    (TierDraft("base", "Base", Decimal(0)), TierDraft("silver", "Silver", Decimal(150), Decimal("1.5"))),
    TierDowngrade.RECALCULATE.value,
    2,
)

#: One ledger row, every column: a row seen once must read back identical forever.
Row = tuple[object, ...]

STATEFUL = hypothesis_settings(
    max_examples=examples(30),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Event amounts as a POS sends them: at most 4 decimal places (AMOUNT_SCALE), or none at all.
AMOUNTS = st.none() | st.decimals(
    min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False
)


@dataclass
class Harness:
    """A private event loop with its own engine and services, for sync (hypothesis) tests."""

    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    db: Database
    programs: ProgramService
    members: MemberService
    events: EventService
    ledger: LedgerService
    clock: Clock
    expiry: ExpirySweeper
    tiers: TierService
    flips: TimeFlipScheduler

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(step)


@contextmanager
def open_harness(database_url: str, clock: Clock | None = None) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    engine = create_engine(database_url)
    db = Database(engine)
    clock = clock or SystemClock()
    segments = SegmentEngine()
    wire_handlers(db.bus, segments)  # the segment engine (and tiers) re-evaluate in each transaction
    harness = Harness(
        loop,
        engine,
        db,
        ProgramService(db, clock),
        MemberService(db, clock),
        EventService(db, clock, AllowAll()),
        LedgerService(db, clock),
        clock,
        ExpirySweeper(db, clock, batch=7),
        TierService(db, clock, segments),
        TimeFlipScheduler(db, clock, segments),
    )
    try:
        yield harness
    finally:
        loop.run_until_complete(engine.dispose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with open_harness(settings.database_url) as opened:
        yield opened


async def new_program(harness: Harness, member_count: int) -> tuple[int, dict[str, int]]:
    """A fresh program (a unique key, so examples never share rows) and its members' ids."""
    program = await harness.programs.create_program(f"lp-{uuid.uuid4().hex[:16]}", "Ledger properties", "B2C")
    names = [f"m{i}" for i in range(member_count)]
    await harness.members.upsert_members(program.id, [MemberUpsert(name) for name in names])
    ids = {}
    for name in names:
        member = await harness.members.get(program.id, name)
        assert member is not None
        ids[name] = member.id
    return program.id, ids


async def entry_by_key(db: Database, program_id: int, key: str) -> LedgerEntry | None:
    async with db.read() as session:
        result = await session.execute(
            select(LedgerEntry).where(
                LedgerEntry.program_id == program_id, LedgerEntry.idempotency_key == key
            )
        )
        return result.scalar_one_or_none()


def row_of(entry: LedgerEntry) -> Row:
    return (
        entry.id,
        entry.program_id,
        entry.member_id,
        entry.points,
        entry.status,
        entry.kind,
        entry.reason,
        entry.event_id,
        entry.idempotency_key,
        entry.request_hash,
        entry.reverses_entry_id,
        entry.created_at,
        entry.decided_at,
        entry.decided_by,
    )


def expected_accrual(event_type: str, amount: Decimal | None) -> int:
    """The default earning rules, restated: purchase floor(amount x 1), visit 10 fixed."""
    if event_type == "visit":
        return 10
    return 0 if amount is None else math.floor(amount)


@dataclass
class ModelEntry:
    id: int
    member: str
    points: int
    kind: EntryKind
    reverses: int | None = None
    reversed_by: int | None = None


@dataclass
class Redemption:
    """A redemption request as its idempotency key names it; `entry_id` None: refused, key still free."""

    key: str
    member: str
    points: int
    reason: str
    entry_id: int | None


class LedgerMachine(RuleBasedStateMachine):
    """The ledger next to a model: {member: balance} and the entries every step should have written.

    Which of several racing redemptions wins depends on scheduling, so the model's state after a
    race differs between runs of one example. Hypothesis needs every example to draw the same
    choices when replayed, so no draw depends on that state: no state-dependent preconditions or
    bounds; a rule that finds nothing to do (no entry to reverse, too few points) is a no-op.
    """

    members: Bundle[str] = Bundle("members")
    event_ids: Bundle[str] = Bundle("event_ids")
    redemptions: Bundle[Redemption] = Bundle("redemptions")

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        self.program_id = 0
        self.member_ids: dict[str, int] = {}
        self.balances: dict[str, int] = {}
        self.entries: dict[int, ModelEntry] = {}
        self.seen_rows: dict[int, Row] = {}
        self.counter = itertools.count(1)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    # -- setup -------------------------------------------------------------------------------------

    @initialize(
        target=members,
        opening=st.lists(st.none() | st.integers(min_value=0, max_value=2000), min_size=1, max_size=3),
    )
    def open_program(self, opening: list[int | None]) -> MultipleResults[str]:
        """A fresh program per example; each member starts with an opening purchase, or nothing."""
        self.program_id, self.member_ids = self.harness.run(new_program(self.harness, len(opening)))
        self.balances = dict.fromkeys(self.member_ids, 0)
        for member, amount in zip(self.member_ids, opening, strict=True):
            if amount is not None:
                self.post_accrual(self.fresh("ev"), member, "purchase", Decimal(amount))
        return multiple(*self.member_ids)

    # -- accruals ----------------------------------------------------------------------------------

    @rule(target=event_ids, member=members, event_type=st.sampled_from(["purchase", "visit"]), amount=AMOUNTS)
    def accrue(self, member: str, event_type: str, amount: Decimal | None) -> str:
        """A new externalId is ACCEPTED and posts exactly the points of the default earning rules."""
        # given a fresh externalId
        external_id = self.fresh("ev")
        self.post_accrual(external_id, member, event_type, amount)
        return external_id

    def post_accrual(self, external_id: str, member: str, event_type: str, amount: Decimal | None) -> None:
        points = expected_accrual(event_type, amount)
        # when the event is recorded
        outcome = self.record(external_id, member, event_type, amount)
        # then it is accepted with its points, posted as one ACCRUAL entry
        assert outcome == EventOutcome(external_id, EventStatus.ACCEPTED, points, None)
        if points:
            entry = self.harness.run(entry_by_key(self.harness.db, self.program_id, f"event:{external_id}"))
            assert entry is not None
            assert (entry.member_id, entry.points, entry.kind) == (
                self.member_ids[member],
                points,
                EntryKind.ACCRUAL,
            )
            self.entries[entry.id] = ModelEntry(entry.id, member, points, EntryKind.ACCRUAL)
            self.balances[member] += points

    @rule(
        external_id=event_ids,
        member=members,
        event_type=st.sampled_from(["purchase", "visit"]),
        amount=AMOUNTS,
    )
    def accrue_again(self, external_id: str, member: str, event_type: str, amount: Decimal | None) -> None:
        """A reused externalId is DUPLICATE whatever its content, and earns nothing (invariants: no row)."""
        # given an externalId that was already recorded
        # when it is sent again, with the same or different content
        outcome = self.record(external_id, member, event_type, amount)
        # then it is a duplicate worth no points
        assert outcome.status == EventStatus.DUPLICATE
        assert outcome.points_awarded == 0

    def record(self, external_id: str, member: str, event_type: str, amount: Decimal | None) -> EventOutcome:
        draft = EventDraft(external_id, member, event_type, datetime.now(UTC) - timedelta(hours=1), amount)
        (outcome,) = self.harness.run(self.harness.events.record_events(self.program_id, [draft]))
        return outcome

    # -- redemptions -------------------------------------------------------------------------------

    def share_of_balance(self, member: str, percent: int) -> int:
        """Points as a share of the model's balance (at least 1): redemptions that land on both sides
        of the balance, with draws that do not depend on it (see the class docstring)."""
        return max(1, self.balances[member] * percent // 100)

    @rule(target=redemptions, member=members, percent=st.integers(min_value=1, max_value=120))
    def redeem(self, member: str, percent: int) -> Redemption:
        """A redemption within the balance posts one entry; beyond it is InvalidInput and writes nothing."""
        # given a fresh idempotency key, for up to 120% of the balance
        points = self.share_of_balance(member, percent)
        request = Redemption(self.fresh("redeem"), member, points, "reward", None)
        # when it is redeemed, then it succeeds exactly when the model's balance covers it
        self.attempt(request)
        return request

    @rule(request=redemptions, change=st.sampled_from(["nothing", "points", "reason"]))
    def retry(self, request: Redemption, change: str) -> None:
        """Replaying a key returns its first entry and changes nothing; new content under it is Conflict."""
        # given a key used before, sent again with the same or changed content
        points = request.points + (change == "points")
        reason = request.reason + (" (edited)" if change == "reason" else "")
        if request.entry_id is None:
            # when the first attempt was refused, then the key is still free: this is a new attempt
            self.attempt(Redemption(request.key, request.member, points, reason, None), into=request)
            return
        replay = self.harness.ledger.redeem(self.program_id, request.member, points, reason, request.key)
        if change == "nothing":
            # when the content is the same, then the first entry comes back and nothing moves
            entry = self.harness.run(replay)
            assert (entry.id, entry.points, entry.kind) == (request.entry_id, -points, EntryKind.REDEMPTION)
        else:
            # when the content differs, then the key refuses it
            with pytest.raises(Conflict):
                self.harness.run(replay)

    def attempt(self, request: Redemption, into: Redemption | None = None) -> None:
        """Redeem on a key the ledger has not used: the model says whether it must succeed."""
        balance = self.balances[request.member]
        call = self.harness.ledger.redeem(
            self.program_id, request.member, request.points, request.reason, request.key
        )
        if request.points > balance:
            with pytest.raises(InvalidInput):
                self.harness.run(call)
            return
        entry = self.harness.run(call)
        self.posted_redemption(request, entry, into or request)

    def posted_redemption(self, request: Redemption, entry: LedgerEntry, record: Redemption) -> None:
        assert (entry.member_id, entry.points, entry.kind, entry.status) == (
            self.member_ids[request.member],
            -request.points,
            EntryKind.REDEMPTION,
            AccrualStatus.POSTED,
        )
        assert entry.id not in self.entries
        record.points, record.reason, record.entry_id = request.points, request.reason, entry.id
        self.entries[entry.id] = ModelEntry(entry.id, request.member, -request.points, EntryKind.REDEMPTION)
        self.balances[request.member] -= request.points

    # -- reversals ---------------------------------------------------------------------------------

    @rule(pick=st.integers(min_value=0, max_value=2**16))
    def reverse(self, pick: int) -> None:
        """A reversal posts the opposite points once; twice is Conflict; never below zero; never of a reversal."""
        # given any entry the ledger has posted (none yet: nothing to reverse)
        if not self.entries:
            return
        original = sorted(self.entries.values(), key=lambda e: e.id)[pick % len(self.entries)]
        # when it is reversed with a fresh key
        call = self.harness.ledger.reverse(
            self.program_id, original.id, "correction", self.fresh("reverse"), actor="test"
        )
        # then the outcome is the one the model predicts
        expected = self.reversal_refusal(original)
        if expected is not None:
            with pytest.raises(expected):
                self.harness.run(call)
            return
        self.posted_reversal(original, self.harness.run(call))

    def reversal_refusal(self, original: ModelEntry) -> type[DomainError] | None:
        """Why the model refuses to reverse `original`, or None when it must succeed."""
        if original.kind == EntryKind.REVERSAL:
            return InvalidInput  # a reversal is not reversed
        if original.reversed_by is not None:
            return Conflict  # an entry is reversed once
        if self.balances[original.member] - original.points < 0:
            return InvalidInput  # taking the points back would overdraw
        return None

    def posted_reversal(self, original: ModelEntry, entry: LedgerEntry) -> None:
        assert (entry.member_id, entry.points, entry.kind, entry.status, entry.reverses_entry_id) == (
            self.member_ids[original.member],
            -original.points,
            EntryKind.REVERSAL,
            AccrualStatus.POSTED,
            original.id,
        )
        assert entry.id not in self.entries
        original.reversed_by = entry.id
        self.entries[entry.id] = ModelEntry(
            entry.id, original.member, -original.points, EntryKind.REVERSAL, reverses=original.id
        )
        self.balances[original.member] -= original.points

    # -- concurrency -------------------------------------------------------------------------------

    @rule(
        target=redemptions,
        member=members,
        percents=st.lists(st.integers(min_value=1, max_value=50), min_size=2, max_size=5),
    )
    def redeem_concurrently(self, member: str, percents: list[int]) -> MultipleResults[Redemption]:
        """Racing redemptions on separate sessions never overdraw: the refused ones did not fit."""
        # given several redemptions for one member, each on its own key
        requests = [
            Redemption(self.fresh("race"), member, self.share_of_balance(member, p), "race", None)
            for p in percents
        ]
        before = self.balances[member]
        # when they run together
        results = self.harness.run(self.race(requests))
        # then the ones that succeeded add up to what left the balance, and every refusal was
        # for more than was left at the end (the balance only fell while they ran)
        succeeded = [(r, e) for r, e in zip(requests, results, strict=True) if isinstance(e, LedgerEntry)]
        spent = sum(r.points for r, _ in succeeded)
        assert spent <= before
        for request, result in zip(requests, results, strict=True):
            if not isinstance(result, LedgerEntry):
                assert isinstance(result, InvalidInput), repr(result)
                assert request.points > before - spent
        for request, entry in succeeded:
            self.posted_redemption(request, entry, request)
        return multiple(*requests)

    @rule(
        target=redemptions,
        member=members,
        percent=st.integers(min_value=1, max_value=50),
        count=st.integers(min_value=2, max_value=6),
    )
    def redeem_equal_amounts_concurrently(
        self, member: str, percent: int, count: int
    ) -> MultipleResults[Redemption]:
        """Racing equal redemptions: exactly min(count, floor(balance / points)) succeed."""
        # given `count` equal redemptions for one member
        points = self.share_of_balance(member, percent)
        requests = [Redemption(self.fresh("race"), member, points, "race", None) for _ in range(count)]
        expected = min(count, self.balances[member] // points)
        # when they run together
        results = self.harness.run(self.race(requests))
        # then exactly as many as the balance covers succeed, the others are InvalidInput
        succeeded = [(r, e) for r, e in zip(requests, results, strict=True) if isinstance(e, LedgerEntry)]
        assert all(isinstance(e, (LedgerEntry, InvalidInput)) for e in results), results
        assert len(succeeded) == expected, results
        for request, entry in succeeded:
            self.posted_redemption(request, entry, request)
        return multiple(*requests)

    @rule(
        target=redemptions,
        member=members,
        count=st.integers(min_value=2, max_value=4),
        percent=st.integers(min_value=1, max_value=120),
    )
    def redeem_twins_concurrently(self, member: str, count: int, percent: int) -> Redemption:
        """Racing twins of one redemption: one entry that every twin gets back, or all refused."""
        # given one request, sent `count` times at once
        request = Redemption(self.fresh("twin"), member, self.share_of_balance(member, percent), "twin", None)
        # when the twins run together
        results = self.harness.run(self.race([request] * count))
        # then, if the balance covers it (once is enough), all of them return the same single entry
        if request.points > self.balances[member]:
            assert all(isinstance(r, InvalidInput) for r in results), results
            return request
        assert all(isinstance(r, LedgerEntry) for r in results), results
        entries = [r for r in results if isinstance(r, LedgerEntry)]
        assert len({e.id for e in entries}) == 1, results
        self.posted_redemption(request, entries[0], request)
        return request

    @rule(pick=st.integers(min_value=0, max_value=2**16), count=st.integers(min_value=2, max_value=3))
    def reverse_twins_concurrently(self, pick: int, count: int) -> None:
        """Racing twins of one reversal: the outcome of a single reversal, shared by every twin."""
        # given any entry the ledger has posted, and `count` twins of one reversal of it
        if not self.entries:
            return
        original = sorted(self.entries.values(), key=lambda e: e.id)[pick % len(self.entries)]
        key = self.fresh("reverse-twin")
        ledger = self.harness.ledger

        async def twins() -> list[LedgerEntry | BaseException]:
            calls = [
                ledger.reverse(self.program_id, original.id, "correction", key, actor="test")
                for _ in range(count)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

        # when they run together
        results = self.harness.run(twins())
        # then every twin sees what one reversal would: the same error, or the same single entry
        expected = self.reversal_refusal(original)
        if expected is not None:
            assert all(isinstance(r, expected) for r in results), results
            return
        assert all(isinstance(r, LedgerEntry) for r in results), results
        entries = [r for r in results if isinstance(r, LedgerEntry)]
        assert len({e.id for e in entries}) == 1, results
        self.posted_reversal(original, entries[0])

    async def race(self, requests: list[Redemption]) -> list[LedgerEntry | BaseException]:
        ledger = self.harness.ledger
        return await asyncio.gather(
            *(ledger.redeem(self.program_id, r.member, r.points, r.reason, r.key) for r in requests),
            return_exceptions=True,
        )

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def ledger_adds_up(self) -> None:
        """Cached balances equal the posted entries and the model; entries are append-only."""
        balances, entries = self.harness.run(self.read_back())
        # every member: points_balance == sum(POSTED) == model >= 0, pending == sum(PENDING_REVIEW) == 0
        posted: dict[int, int] = defaultdict(int)
        pending: dict[int, int] = defaultdict(int)
        for entry in entries:
            if entry.status == AccrualStatus.POSTED:
                posted[entry.member_id] += entry.points
            elif entry.status == AccrualStatus.PENDING_REVIEW:
                pending[entry.member_id] += entry.points
        assert set(balances) == set(self.member_ids)
        for name, (balance, pending_points) in balances.items():
            member_id = self.member_ids[name]
            assert balance == posted[member_id] == self.balances[name], (name, balance, posted[member_id])
            assert balance >= 0
            assert pending_points == pending[member_id] == 0
        # the ledger holds exactly the entries the model expects, and rows seen before are unchanged
        rows = {entry.id: row_of(entry) for entry in entries}
        assert set(rows) == set(self.entries)
        assert len(rows) >= len(self.seen_rows)
        for entry_id, row in self.seen_rows.items():
            assert rows.get(entry_id) == row, (entry_id, row, rows.get(entry_id))
        for entry in entries:
            model = self.entries[entry.id]
            assert (entry.points, entry.kind, entry.reverses_entry_id) == (
                model.points,
                model.kind,
                model.reverses,
            )
        self.seen_rows = rows

    async def read_back(self) -> tuple[dict[str, tuple[int, int]], list[LedgerEntry]]:
        async with self.harness.db.read() as session:
            members = await session.execute(
                select(Member.external_id, Member.points_balance, Member.pending_points).where(
                    Member.program_id == self.program_id
                )
            )
            balances = {name: (balance, pending) for name, balance, pending in members}
            entries = await session.execute(
                select(LedgerEntry).where(LedgerEntry.program_id == self.program_id).order_by(LedgerEntry.id)
            )
            return balances, list(entries.scalars())


def test_the_ledger_keeps_its_invariants(harness: Harness) -> None:
    """Any sequence of accruals, redemptions, replays, reversals and races keeps the ledger whole."""

    class BoundLedgerMachine(LedgerMachine):
        def __init__(self) -> None:
            super().__init__(harness)

    run_state_machine_as_test(BoundLedgerMachine, settings=STATEFUL)


# -- expiry lots -------------------------------------------------------------------------------------

EXPIRY_DAYS = 10
#: An admin fresh from its TOTP check (adjustments above the threshold need one).
OPERATOR = Principal(PrincipalKind.API_KEY, 0, 0, "apikey:props", ALL_SCOPES)


@dataclass
class ModelLot:
    entry_id: int
    member: str
    points: int
    remaining: int
    expires_at: datetime
    #: Creation order: lot ids grow with it, and break ties of equal expiry instants.
    seq: int


@dataclass
class LotEntry:
    id: int
    member: str
    points: int
    kind: EntryKind
    reversed: bool = False


class LotsMachine(RuleBasedStateMachine):
    """The ledger with a 10-day expiry and a tier ladder next to a model of every lot, under a
    frozen clock.

    Steps: accruals dated 0 to 14 days back (older ones form lots already due), goodwill
    credits and corrections (adjustPoints), redemptions, reversals, and the clock moving on
    with the sweep and the time-flip scheduler run to completion. The ladder (LADDER: Silver
    from 150 spent in 7 days, earning 1.5x, RECALCULATE after 2 grace days) moves members up
    with accruals and down as the window slides: each accrual earns its points times the
    multiplier of the tier held before it; each member holds exactly one tier, never below the
    one its spend reaches, and above it only within the grace. After each step: balance == sum of posted entries ==
    model; lots are never negative and match the model exactly (so debits spent the soonest
    lots first, reversals their own lot first, and expiry took only what was left); the open
    lots never hold more than the balance. At the end the same commands replayed into a fresh
    program from the same instant write the same ledger.
    """

    members: Bundle[str] = Bundle("members")

    def __init__(self, harness: Harness, start: datetime) -> None:
        super().__init__()
        self.harness = harness
        self.start = start
        self.commands: list[tuple[str, tuple[Any, ...]]] = []
        self.program_id = 0
        self.member_ids: dict[str, int] = {}
        self.balances: dict[str, int] = {}
        self.lots: dict[int, ModelLot] = {}
        self.entries: dict[int, LotEntry] = {}
        self.counter = itertools.count(1)

    @property
    def clock(self) -> FrozenClock:
        assert isinstance(self.harness.clock, FrozenClock)
        return self.harness.clock

    async def open(self) -> None:
        self.clock.at = self.start
        self.program_id, self.member_ids = await new_program(self.harness, 3)
        programs = self.harness.programs
        await programs.set_points_expiry(self.program_id, EXPIRY_DAYS, actor="test")
        await self.harness.tiers.set_ladder(self.program_id, LADDER, actor="test")

    @initialize(target=members)
    def open_program(self) -> MultipleResults[str]:
        self.harness.run(self.open())
        self.balances = dict.fromkeys(self.member_ids, 0)
        return multiple(*self.member_ids)

    # -- the model's spending order ---------------------------------------------------------------

    def spend(self, member: str, points: int, own: int | None = None) -> None:
        order = sorted(
            (lot for lot in self.lots.values() if lot.member == member and lot.remaining > 0),
            key=lambda lot: (lot.entry_id != own, lot.expires_at, lot.seq),
        )
        for lot in order:
            take = min(points, lot.remaining)
            lot.remaining -= take
            points -= take
            if points == 0:
                return

    def credit(self, entry: LedgerEntry, member: str, earned_at: datetime) -> None:
        self.lots[entry.id] = ModelLot(
            entry.id, member, entry.points, entry.points, earned_at + timedelta(days=EXPIRY_DAYS), entry.id
        )

    def posted(self, entry: LedgerEntry, member: str, kind: EntryKind) -> None:
        assert (entry.kind, entry.status, entry.member_id) == (
            kind,
            AccrualStatus.POSTED,
            self.member_ids[member],
        )
        self.entries[entry.id] = LotEntry(entry.id, member, entry.points, kind)
        self.balances[member] += entry.points

    # -- rules --------------------------------------------------------------------------------------

    @rule(member=members, points=st.integers(min_value=1, max_value=200), age=st.integers(0, 14))
    def accrue(self, member: str, points: int, age: int) -> None:
        """A purchase dated `age` days back forms a lot expiring 10 days after it occurred."""
        self.commands.append(("accrue", (member, points, age)))
        external_id = self.fresh("ev")
        occurred_at = self.clock.now() - timedelta(days=age)
        held = self.harness.run(self.tiers())[member]
        draft = EventDraft(external_id, member, "purchase", occurred_at, Decimal(points))
        (outcome,) = self.harness.run(self.harness.events.record_events(self.program_id, [draft]))
        assert outcome.status == EventStatus.ACCEPTED
        entry = self.harness.run(entry_by_key(self.harness.db, self.program_id, f"event:{external_id}"))
        assert entry is not None
        assert entry.points == int(points * held.tier.earn_multiplier)  # floored, by the tier held before
        self.posted(entry, member, EntryKind.ACCRUAL)
        self.credit(entry, member, occurred_at)

    @rule(member=members, points=st.integers(min_value=-300, max_value=300).filter(bool))
    def adjust(self, member: str, points: int) -> None:
        """A goodwill credit forms a lot dated now; a correction spends the soonest lots."""
        self.commands.append(("adjust", (member, points)))
        call = self.harness.ledger.adjust(
            self.program_id, member, points, "props", self.fresh("adj"), OPERATOR
        )
        if points < 0 and -points > self.balances[member]:
            with pytest.raises(InvalidInput):
                self.harness.run(call)
            return
        entry = self.harness.run(call)
        self.posted(entry, member, EntryKind.ADJUSTMENT)
        if points > 0:
            self.credit(entry, member, self.clock.now())
        else:
            self.spend(member, -points)

    @rule(member=members, percent=st.integers(min_value=1, max_value=120))
    def redeem(self, member: str, percent: int) -> None:
        """A redemption spends the soonest-expiring lots, points without a lot last."""
        self.commands.append(("redeem", (member, percent)))
        points = max(1, self.balances[member] * percent // 100)
        call = self.harness.ledger.redeem(self.program_id, member, points, "reward", self.fresh("redeem"))
        if points > self.balances[member]:
            with pytest.raises(InvalidInput):
                self.harness.run(call)
            return
        self.posted(self.harness.run(call), member, EntryKind.REDEMPTION)
        self.spend(member, points)

    @rule(pick=st.integers(min_value=0, max_value=2**16))
    def reverse(self, pick: int) -> None:
        """Reversing a credit takes its own lot first; reversing a debit credits a lot dated now."""
        self.commands.append(("reverse", (pick,)))
        if not self.entries:
            return
        original = sorted(self.entries.values(), key=lambda e: e.id)[pick % len(self.entries)]
        call = self.harness.ledger.reverse(
            self.program_id, original.id, "correction", self.fresh("rev"), actor="test"
        )
        if original.kind == EntryKind.REVERSAL or original.reversed:
            with pytest.raises((InvalidInput, Conflict)):
                self.harness.run(call)
            return
        if self.balances[original.member] - original.points < 0:
            with pytest.raises(InvalidInput):
                self.harness.run(call)
            return
        entry = self.harness.run(call)
        original.reversed = True
        self.posted(entry, original.member, EntryKind.REVERSAL)
        if entry.points < 0:
            self.spend(original.member, -entry.points, own=original.id)
        else:
            self.credit(entry, original.member, self.clock.now())

    @rule(days=st.integers(min_value=0, max_value=6), hours=st.integers(min_value=0, max_value=23))
    def expire(self, days: int, hours: int) -> None:
        """Time passes and the sweep runs: what is left of each due lot leaves as one EXPIRY entry."""
        self.commands.append(("expire", (days, hours)))
        self.clock.at += timedelta(days=days, hours=hours)
        self.harness.run(self.harness.expiry.drain(self.program_id))
        while self.harness.run(self.harness.flips.pass_once())[0]:
            pass  # tiers (and segments) whose instant has come
        now = self.clock.now()
        due = sorted(
            (lot for lot in self.lots.values() if lot.expires_at <= now and lot.remaining > 0),
            key=lambda lot: lot.seq,
        )
        expiries = self.harness.run(self.expiry_entries())
        fresh = [e for e in expiries if e.id not in self.entries]
        # one entry per due lot, for exactly what was left of it
        assert sorted((e.member_id, e.points) for e in fresh) == sorted(
            (self.member_ids[lot.member], -lot.remaining) for lot in due
        )
        for entry in fresh:
            assert entry.reason == "points expired"
            assert entry.actor is None
            name = next(n for n, i in self.member_ids.items() if i == entry.member_id)
            self.posted(entry, name, EntryKind.EXPIRY)
        for lot in due:
            lot.remaining = 0

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    async def expiry_entries(self) -> list[LedgerEntry]:
        async with self.harness.db.read() as session:
            rows = await session.execute(
                select(LedgerEntry)
                .where(LedgerEntry.program_id == self.program_id, LedgerEntry.kind == EntryKind.EXPIRY.value)
                .order_by(LedgerEntry.id)
            )
            return list(rows.scalars())

    async def tiers(self) -> dict[str, MemberTierView]:
        views = await self.harness.tiers.member_tiers(self.program_id, list(self.member_ids.values()))
        return {name: views[member_id] for name, member_id in self.member_ids.items()}

    async def tier_segments(self) -> dict[int, list[str]]:
        async with self.harness.db.read() as session:
            rows = await session.execute(
                select(SegmentMembership.member_id, Segment.key)
                .join(Segment, Segment.id == SegmentMembership.segment_id)
                .where(Segment.program_id == self.program_id, Segment.kind == SegmentKind.TIER.value)
            )
            held: dict[int, list[str]] = defaultdict(list)
            for member_id, key in rows:
                held[member_id].append(key)
            return held

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def tiers_hold(self) -> None:
        if not self.program_id:
            return
        views, segments = self.harness.run(self.tiers()), self.harness.run(self.tier_segments())
        order = [tier.key for tier in LADDER.tiers]
        for name, view in views.items():
            assert segments[self.member_ids[name]] == [f"tier-{view.tier.key}"]  # exactly one, the one held
            reached = max(i for i, tier in enumerate(LADDER.tiers) if tier.threshold <= view.qualifying_value)
            held = order.index(view.tier.key)
            assert held >= reached  # upgrades at once
            if held > reached:  # above what the spend reaches only within the grace
                assert view.kept_until is not None
                assert view.kept_until > self.clock.now()

    @invariant()
    def lots_add_up(self) -> None:
        if not self.program_id:
            return
        balances, entries, lots = self.harness.run(self.read_back(self.program_id))
        posted: dict[int, int] = defaultdict(int)
        for entry in entries:
            assert entry.status == AccrualStatus.POSTED
            posted[entry.member_id] += entry.points
        assert {e.id for e in entries} == set(self.entries)
        for name, member_id in self.member_ids.items():
            assert balances[name] == posted[member_id] == self.balances[name] >= 0
        # every lot as the model says: never negative, never above its points
        assert {lot.entry_id: lot.remaining for lot in lots} == {
            lot.entry_id: lot.remaining for lot in self.lots.values()
        }
        open_points: dict[int, int] = defaultdict(int)
        for lot in lots:
            assert 0 <= lot.remaining <= lot.points
            open_points[lot.member_id] += lot.remaining
        for name, member_id in self.member_ids.items():
            assert open_points[member_id] <= balances[name]

    async def read_back(self, program_id: int) -> tuple[dict[str, int], list[LedgerEntry], list[PointsLot]]:
        async with self.harness.db.read() as session:
            members = await session.execute(
                select(Member.external_id, Member.points_balance).where(Member.program_id == program_id)
            )
            balances = {name: balance for name, balance in members}  # noqa: C416 - Rows
            entries = await session.execute(
                select(LedgerEntry).where(LedgerEntry.program_id == program_id).order_by(LedgerEntry.id)
            )
            lots = await session.execute(select(PointsLot).where(PointsLot.program_id == program_id))
            return balances, list(entries.scalars()), list(lots.scalars())

    def teardown(self) -> None:
        """Replaying the same commands into a fresh program from the same instant writes the same ledger."""
        if not self.program_id or not self.commands:
            return
        first = self.harness.run(self.read_back(self.program_id))
        replay = LotsMachine(self.harness, self.start)
        replay.open_program()
        for name, args in self.commands:
            getattr(replay, name)(*args)
        second = self.harness.run(replay.read_back(replay.program_id))
        assert first[0] == second[0]
        assert _shape(first[1], self.member_ids) == _shape(second[1], replay.member_ids)
        assert sorted(_lot_shape(lot, first[1]) for lot in first[2]) == sorted(
            _lot_shape(lot, second[1]) for lot in second[2]
        )


def _shape(entries: list[LedgerEntry], member_ids: dict[str, int]) -> list[tuple[object, ...]]:
    """The ledger without its ids: who, what and when, in order."""
    names = {i: n for n, i in member_ids.items()}
    return [
        (names[e.member_id], e.kind, e.status, e.points, e.reason, e.created_at, e.actor) for e in entries
    ]


def _lot_shape(lot: PointsLot, entries: list[LedgerEntry]) -> tuple[object, ...]:
    position = [e.id for e in entries].index(lot.entry_id)
    return (position, lot.points, lot.remaining, lot.earned_at, lot.expires_at)


@pytest.fixture
def frozen_harness(settings: Settings) -> Iterator[Harness]:
    with open_harness(settings.database_url, FrozenClock()) as opened:
        yield opened


def test_lots_keep_their_invariants(frozen_harness: Harness) -> None:
    """Any sequence of accruals, adjustments, redemptions, reversals and expiry keeps the lots exact."""
    start = datetime.now(UTC).replace(microsecond=0)

    class BoundLotsMachine(LotsMachine):
        def __init__(self) -> None:
            super().__init__(frozen_harness, start)

    run_state_machine_as_test(BoundLotsMachine, settings=STATEFUL)


# -- racing twins, made deterministic ----------------------------------------------------------------


class Gate:
    """The first `parties` callers of `wait` wait for one another; later callers pass straight on.

    A racer that does not arrive within `patience` seconds is blocked on a row lock held by
    one that did: the database is already serialising them, so the gate opens.
    """

    def __init__(self, parties: int, patience: float = 2.0) -> None:
        self.left = parties
        self.patience = patience
        self.opened = asyncio.Event()

    async def wait(self) -> None:
        if self.opened.is_set():
            return
        self.left -= 1
        if self.left == 0:
            self.opened.set()
            return
        try:
            await asyncio.wait_for(self.opened.wait(), self.patience)
        except TimeoutError:
            self.opened.set()


class GatedSession(AsyncSession):
    """A session whose first UPDATE waits at the `Gate` in its `info`."""

    async def execute(
        self,
        statement: Executable,
        params: Any = None,
        *,
        execution_options: Any = None,
        bind_arguments: Any = None,
        **kw: Any,
    ) -> Result[Any]:
        gate = self.info.get("gate")
        if isinstance(statement, Update) and isinstance(gate, Gate):
            await gate.wait()
        return await super().execute(
            statement, params, execution_options=execution_options or {}, bind_arguments=bind_arguments, **kw
        )


class GatedDatabase(Database):
    """Makes a race deterministic: every racer has done all its reads before any of them writes.

    On PostgreSQL the racers wait for one another at their first UPDATE (inside their
    transactions, after every SELECT); on SQLite, where BEGIN IMMEDIATE serialises whole
    transactions, at the start of their units of work (after the idempotency-key lookup).
    """

    def __init__(self, engine: AsyncEngine, parties: int) -> None:
        super().__init__(engine)
        self.gate = Gate(parties)
        if self.dialect != "sqlite":
            self.sessions = async_sessionmaker(
                engine, class_=GatedSession, expire_on_commit=False, autoflush=False, info={"gate": self.gate}
            )

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        if self.dialect == "sqlite":
            await self.gate.wait()
        async with super().unit_of_work() as uow:
            yield uow


async def member_with_two_purchases(harness: Harness) -> tuple[int, LedgerEntry]:
    """A program whose member m0 has 110 points: an accrual of 60 (returned) and one of 50."""
    program_id, _ = await new_program(harness, 1)
    at = datetime.now(UTC) - timedelta(hours=1)
    drafts = [
        EventDraft("e1", "m0", "purchase", at, Decimal(60)),
        EventDraft("e2", "m0", "purchase", at, Decimal(50)),
    ]
    await harness.events.record_events(program_id, drafts)
    accrual = await entry_by_key(harness.db, program_id, "event:e1")
    assert accrual is not None
    return program_id, accrual


async def balance_of(harness: Harness, program_id: int, member: str) -> int:
    found = await harness.members.get(program_id, member)
    assert found is not None
    return found.points_balance


async def ledger_size(harness: Harness, program_id: int) -> int:
    async with harness.db.read() as session:
        rows = await session.execute(select(LedgerEntry.id).where(LedgerEntry.program_id == program_id))
        return len(rows.all())


@pytest.mark.parametrize(("operation", "left"), [("redeem", 10), ("reverse", 50)])
def test_twins_refused_by_the_balance_still_get_the_first_entry(
    harness: Harness, operation: str, left: int
) -> None:
    """An idempotency key names one request: racing twins of it all get its one entry.

    Protects clients that retry a request whose first attempt is still in flight: when the
    balance covers it once but not twice, the twin that loses the balance check must replay
    the winner's entry, not report that the balance is too low (the bug fixed in accb1d1).
    """
    # given a member with 110 points, and two twins that both find their key unused
    program_id, accrual = harness.run(member_with_two_purchases(harness))
    before = harness.run(ledger_size(harness, program_id))
    gated = LedgerService(GatedDatabase(harness.engine, parties=2), SystemClock())

    # when the twins (a redemption of 100, or a reversal of the accrual of 60) run together
    async def twins() -> list[LedgerEntry | BaseException]:
        if operation == "redeem":
            calls = [gated.redeem(program_id, "m0", 100, "reward", "k1") for _ in range(2)]
        else:
            calls = [
                gated.reverse(program_id, accrual.id, "correction", "k1", actor="test") for _ in range(2)
            ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = harness.run(twins())

    # then both get the one entry, and the balance moved once
    assert all(isinstance(r, LedgerEntry) for r in results), results
    assert len({r.id for r in results if isinstance(r, LedgerEntry)}) == 1
    assert harness.run(balance_of(harness, program_id, "m0")) == left
    assert harness.run(ledger_size(harness, program_id)) == before + 1


def test_racing_reversals_of_one_entry_the_loser_is_conflict(harness: Harness) -> None:
    """A second reversal of an entry is CONFLICT (docs/api.md), also when the two race.

    Protects the error contract: the loser of the race must learn the entry is already
    reversed, not that the balance is too low (a retry would never succeed either way, but
    BAD_USER_INPUT says "not enough points" to a caller who has plenty).
    """
    # given a member with 110 points, and two reversals of the accrual of 60 under different keys
    program_id, accrual = harness.run(member_with_two_purchases(harness))
    gated = LedgerService(GatedDatabase(harness.engine, parties=2), SystemClock())

    # when they run together
    async def racers() -> list[LedgerEntry | BaseException]:
        calls = [
            gated.reverse(program_id, accrual.id, "correction", key, actor="test") for key in ("k1", "k2")
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = harness.run(racers())

    # then one posts the reversal and the other is told the entry is already reversed
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "LedgerEntry"], results
    assert harness.run(balance_of(harness, program_id, "m0")) == 50


# -- the earning arithmetic --------------------------------------------------------------------------

POINTS_PER_UNIT = st.decimals(min_value=0, max_value=MAX_POINTS_PER_UNIT, places=4)
EARNED_AMOUNTS = st.decimals(min_value=0, max_value=Decimal("1e12") - Decimal("0.0001"), places=4)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    amount=st.none() | EARNED_AMOUNTS | EARNED_AMOUNTS.map(Decimal.normalize),
    per_unit=st.none() | POINTS_PER_UNIT | POINTS_PER_UNIT.map(Decimal.normalize),
    fixed=st.none() | st.integers(min_value=0, max_value=MAX_FIXED_POINTS),
)
def test_points_for_is_floor_of_amount_times_rate_plus_fixed(
    amount: Decimal | None, per_unit: Decimal | None, fixed: int | None
) -> None:
    """points_for is exact: floor(amount x pointsPerUnit) + fixedPoints, with no decimal rounding.

    Protects against the Decimal context rounding the product before the floor (28 digits are
    enough for amounts < 1e12 and rates <= 1000 at 4 places), against rounding to nearest
    instead of down, and against representations such as 1E+3 or 12.3400 pricing differently.
    """
    # given a rule and an amount
    rule_spec = EarningRuleSpec("purchase", per_unit, fixed)
    # when it prices the amount
    points = rule_spec.points_for(amount)
    # then it matches the same sum in exact rational arithmetic
    per_unit_points = (
        0 if amount is None or per_unit is None else math.floor(Fraction(amount) * Fraction(per_unit))
    )
    assert points == per_unit_points + (fixed or 0)
