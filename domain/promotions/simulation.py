"""`simulatePromotion`: replay the last N days of recorded events through a promotion draft. Read only.

As the fraud backtest does (fraud/backtest.py), events are replayed in the order they were
recorded (event id). Each recorded accrual of the promotion's event type that was not BLOCKED,
and occurred in the last `days` days, is judged by the accrual pass's own steps
(`accrual.matching` and `accrual.settle_batch`): the base points of today's earning rules, the
condition over the member as of now and the event, the member caps and the budget (starting
unspent). Stated approximations (docs/promotions.md): the window and the active flag are not
applied (the question is "what had it run then"), other promotions are left out (no stacking),
and the member side of the condition reads the members as they are now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.enums import EventStatus
from domain.errors import InvalidInput
from domain.ledger.earning import points_for_event
from domain.models import Event
from domain.programs.service import load_earning_rules
from domain.promotions.accrual import Candidate, Live, matching, settle_batch
from domain.promotions.definitions import CheckedDraft
from domain.promotions.stacking import Ledger, Stacking, Terms
from domain.segments.evaluate import MemberFacts
from domain.segments.facts import Needs, load_facts
from domain.segments.lifecycle import LifecycleThresholds

MAX_DAYS = 366
CHUNK = 1000
#: The statuses of recorded accruals a promotion would have paid on (BLOCKED ones pay nothing).
REPLAYED = (EventStatus.ACCEPTED.value, EventStatus.HELD_FOR_REVIEW.value)


@dataclass(frozen=True)
class SimulationReport:
    days: int
    since: datetime
    #: Recorded events of the type in the window (the replay's input).
    events_replayed: int
    #: Events the promotion would have added points to.
    events: int
    members: int
    points: int
    #: points x the program's point value when it has one; else the points.
    cost: Decimal


def draft_live(checked: CheckedDraft) -> Live:
    """The draft as the pass would read it, without its window (see the module docstring)."""
    draft = checked.draft
    terms = Terms(
        0,
        draft.key,
        draft.multiplier,
        draft.bonus_points or 0,
        draft.priority,
        Stacking.STACK,
        draft.cap_points,
        draft.cap_period,
        draft.budget_points,
    )
    return Live(terms, draft.event_type, checked.tree, None, None)


async def simulate(
    session: AsyncSession,
    program_id: int,
    checked: CheckedDraft,
    days: int,
    now: datetime,
    zone: tzinfo,
    lifecycle: LifecycleThresholds,
    point_value: Decimal | None = None,
) -> SimulationReport:
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days: must be between 1 and {MAX_DAYS}, got {days}")
    since = now - timedelta(days=days)
    live = draft_live(checked)
    rules = await load_earning_rules(session, program_id)
    rows = (
        await session.execute(
            select(Event.member_id, Event.type, Event.occurred_at, Event.amount, Event.properties)
            .where(
                Event.program_id == program_id,
                Event.type == live.event_type,
                Event.status.in_(REPLAYED),
                Event.occurred_at > since,
                Event.occurred_at <= now,
            )
            .order_by(Event.id)
        )
    ).all()
    candidates = [
        Candidate(m, t, at, amount, properties or {}, points_for_event(rules, t, amount))
        for m, t, at, amount, properties in rows
    ]
    facts: dict[int, MemberFacts] = {}
    ids = sorted({c.member_id for c in candidates})
    needs = Needs.of([live.tree], zone)
    for start in range(0, len(ids), CHUNK):
        facts.update(await load_facts(session, program_id, ids[start : start + CHUNK], needs, now))
    matched = [
        [] if c.member_id not in facts else matching([live], c, facts[c.member_id], now, zone, lifecycle)
        for c in candidates
    ]
    settled = settle_batch(matched, candidates, Ledger({}, {}), zone)
    paid = [(c, s) for c, s in zip(candidates, settled, strict=True) if s.points > 0]
    points = sum(s.points for _, s in paid)
    return SimulationReport(
        days=days,
        since=since,
        events_replayed=len(candidates),
        events=len(paid),
        members=len({c.member_id for c, _ in paid}),
        points=points,
        cost=Decimal(points) * (point_value if point_value is not None else 1),
    )
