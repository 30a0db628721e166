"""Property test (issue 21): with random promotions and events, the points the pipeline posts equal a
plain reference computation of the stacking rule documented in docs/promotions.md, "Stacking".

The reference below is written out on its own (it imports nothing of domain/promotions): per event,
in batch order, the promotions whose type, window and condition match and that have room left
(budget, member cap in the event's local period) are *applicable*; the highest-priority exclusive
one (ties: smaller key) alone applies if any is exclusive, else every stackable one; each pays
floor(base x (multiplier - 1)) + bonus, cut to its room; the event earns base + what they pay.
Sync test on a private event loop (hypothesis cannot re-enter pytest-asyncio's loop).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.runtime import Services
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.programs.service import ProgramSettings
from domain.promotions.definitions import PromotionDraft
from domain.promotions.stacking import CapPeriod, Stacking
from domain.settings import Settings
from tests.support import FrozenClock, Harness, private_services

EXAMPLES = int(os.environ.get("PROMOTION_PROPERTY_EXAMPLES", "25"))
NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)
MEMBERS = ("ana", "bo")
#: (condition, how the reference reads it)
CONDITIONS: dict[str, Callable[[Purchase], bool]] = {
    "true": lambda e: True,
    'event.category = "coffee"': lambda e: e.category == "coffee",
    "event.amount >= 20": lambda e: e.amount >= 20,
    "event.weekday in [6, 7]": lambda e: e.at.isoweekday() in (6, 7),
    'not (event.category = "tea")': lambda e: e.category != "tea",
}


@dataclass(frozen=True)
class Promo:
    key: str
    condition: str
    multiplier: Fraction | None
    bonus: int
    priority: int
    stacking: str
    cap: int | None
    cap_daily: bool
    budget: int | None
    starts_day: int | None  # the window: [NOW - starts_day days, ...) when given


@dataclass(frozen=True)
class Purchase:
    member: str
    amount: int
    category: str
    at: datetime


promos = st.builds(
    Promo,
    key=st.sampled_from(["a", "b", "c", "d"]),
    condition=st.sampled_from(sorted(CONDITIONS)),
    multiplier=st.one_of(
        st.none(), st.sampled_from([Fraction(3, 2), Fraction(2), Fraction(3), Fraction(5, 4)])
    ),
    bonus=st.sampled_from([0, 0, 3, 10]),
    priority=st.integers(0, 2),
    stacking=st.sampled_from(["STACK", "STACK", "EXCLUSIVE"]),
    cap=st.one_of(st.none(), st.integers(1, 30)),
    cap_daily=st.booleans(),
    budget=st.one_of(st.none(), st.integers(1, 60)),
    starts_day=st.one_of(st.none(), st.integers(1, 4)),
).filter(lambda p: (p.multiplier is not None and p.multiplier > 1) or p.bonus > 0)
purchases = st.builds(
    Purchase,
    member=st.sampled_from(MEMBERS),
    amount=st.integers(1, 40),
    category=st.sampled_from(["coffee", "tea", "cake"]),
    at=st.integers(0, 6 * 24).map(lambda h: NOW - timedelta(hours=h)),
)


def reference(promotions: list[Promo], events: list[Purchase]) -> list[int]:
    """The documented rule, plainly: each event's points, in order."""
    spent: dict[str, int] = {}
    used: dict[tuple[str, str, str], int] = {}
    answers = []
    for event in events:
        base = event.amount  # the default rule: 1 point per whole unit

        def room(p: Promo, event: Purchase = event) -> float:
            left = math.inf if p.budget is None else p.budget - spent.get(p.key, 0)
            if p.cap is not None:
                period = event.at.date().isoformat() if p.cap_daily else "TOTAL"
                left = min(left, p.cap - used.get((p.key, event.member, period), 0))
            return left

        def matches(p: Promo, event: Purchase = event) -> bool:
            started = p.starts_day is None or event.at >= NOW - timedelta(days=p.starts_day)
            return started and CONDITIONS[p.condition](event)

        applicable = [p for p in promotions if matches(p) and room(p) > 0]
        exclusive = [p for p in applicable if p.stacking == "EXCLUSIVE"]
        chosen = (
            [min(exclusive, key=lambda p: (-p.priority, p.key))]
            if exclusive
            else sorted(applicable, key=lambda p: (-p.priority, p.key))
        )
        total = base
        for p in chosen:
            raw = math.floor(base * ((p.multiplier or 1) - 1)) + p.bonus
            pay = int(min(raw, room(p)))
            if pay <= 0:
                continue
            total += pay
            spent[p.key] = spent.get(p.key, 0) + pay
            period = event.at.date().isoformat() if p.cap_daily else "TOTAL"
            used[(p.key, event.member, period)] = used.get((p.key, event.member, period), 0) + pay
        answers.append(total)
    return answers


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings, FrozenClock(NOW)) as opened:
        yield opened


async def posted(services: Services, promotions: list[Promo], batches: list[list[Purchase]]) -> list[int]:
    program = await services.programs.create_program(
        f"pp-{uuid.uuid4().hex[:12]}", "Promotion property", "B2C", ProgramSettings()
    )
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in MEMBERS])
    for p in promotions:
        draft = PromotionDraft(
            key=p.key,
            name=p.key,
            event_type="purchase",
            condition=p.condition,
            multiplier=None
            if p.multiplier is None
            else Decimal(p.multiplier.numerator) / p.multiplier.denominator,
            bonus_points=p.bonus,
            starts_at=None
            if p.starts_day is None
            else (NOW - timedelta(days=p.starts_day)).replace(tzinfo=None).isoformat(),
            cap_points=p.cap,
            cap_period=None if p.cap is None else (CapPeriod.DAY if p.cap_daily else CapPeriod.TOTAL),
            budget_points=p.budget,
            priority=p.priority,
            stacking=Stacking(p.stacking),
        )
        await services.promotions.create(program.id, draft, actor="test")
    points: list[int] = []
    numbered = iter(range(10_000))
    for batch in batches:
        drafts = [
            EventDraft(
                f"e{next(numbered)}", e.member, "purchase", e.at, Decimal(e.amount), {"category": e.category}
            )
            for e in batch
        ]
        outcomes = await services.events.record_events(program.id, drafts)
        assert all(o.status.value == "ACCEPTED" for o in outcomes), outcomes
        points.extend(o.points_awarded for o in outcomes)
    return points


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    promotions=st.lists(promos, max_size=4, unique_by=lambda p: p.key),
    batches=st.lists(st.lists(purchases, min_size=1, max_size=5), min_size=1, max_size=3),
)
def test_posted_points_equal_the_documented_stacking_rule(
    harness: Harness, promotions: list[Promo], batches: list[list[Purchase]]
) -> None:
    # given random promotions, when random purchases are recorded in batches
    points = harness.run(posted(harness.services, promotions, batches))
    # then each event earned what the reference computes
    assert points == reference(promotions, [e for batch in batches for e in batch])
