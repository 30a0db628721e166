"""Promotions in the accrual pass (pipeline step 3, after the base earning rule): docs/promotions.md.

`match` finds, per event, the promotions whose type, window and condition it meets: conditions
read the member as of when the batch began (the Python evaluator over facts loaded once for the
batch's members, like the tier multiplier) and the event itself (`event.`). `settle_batch` then
applies the stacking rule (`stacking.settle`) event by event in batch order against the budgets and
member caps, which hold under concurrency: the batch already holds its members' row locks (caps),
and it locks the budgeted promotions' rows in id order after them (budgets). `store_usage` writes
what the accruals that were not BLOCKED paid. `simulation.py` replays through the same steps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db.arrays import dialect_of, in_values
from domain.db.dialect import insert_for
from domain.models import Promotion, PromotionUsage
from domain.promotions.definitions import LOCAL_FORMAT, terms_of, tree_of
from domain.promotions.stacking import CapPeriod, Ledger, Paid, Terms, period_of, settle
from domain.segments.conditions import All, AnyOf, EventCompare, Node, Not, walk
from domain.segments.evaluate import EarnedEvent, Evaluation, MemberFacts
from domain.segments.facts import Needs, load_facts
from domain.segments.lifecycle import LifecycleThresholds


@dataclass(frozen=True)
class Candidate:
    """An event's accrual a promotion may add to: `base` is its earning rule's points (before the tier)."""

    member_id: int
    type: str
    occurred_at: datetime
    amount: Decimal | None
    properties: Mapping[str, Any]
    base: int


@dataclass(frozen=True)
class Live:
    """An active promotion as the pass reads it."""

    terms: Terms
    event_type: str
    tree: Node
    starts_local: str | None
    ends_local: str | None

    def in_window(self, local: str) -> bool:
        return (self.starts_local is None or self.starts_local <= local) and (
            self.ends_local is None or local < self.ends_local
        )


@dataclass(frozen=True)
class Payment:
    """What one promotion paid on one event, and where it counts (for the usage rows)."""

    terms: Terms
    member_id: int
    period: str
    points: int


@dataclass(frozen=True)
class Settled:
    paid: list[Paid]
    payments: list[Payment]

    @property
    def points(self) -> int:
        return sum(p.points for p in self.paid)


NONE = Settled([], [])


def live_of(row: Promotion) -> Live:
    return Live(terms_of(row), row.event_type, tree_of(row), row.starts_local, row.ends_local)


async def active_promotions(session: AsyncSession, program_id: int, event_types: Iterable[str]) -> list[Live]:
    """The program's active promotions for these event types (one query; none: the pass skips the rest)."""
    types = sorted(set(event_types))
    if not types:
        return []
    rows = await session.scalars(
        select(Promotion)
        .where(
            Promotion.program_id == program_id, Promotion.active.is_(True), Promotion.event_type.in_(types)
        )
        .order_by(Promotion.id)
    )
    return [live_of(row) for row in rows]


def reads_member(tree: Node) -> bool:
    """Whether a condition reads anything of the member (else only `event.` and and/or/not)."""
    return any(not isinstance(node, (All, AnyOf, Not, EventCompare)) for node in walk(tree))


#: The facts an event-only condition is evaluated against: it reads none of them.
_NO_FACTS = MemberFacts(0, "", "", None, {}, 0, datetime.min, datetime.min)


def local_text(at: datetime, zone: tzinfo) -> str:
    return at.astimezone(zone).strftime(LOCAL_FORMAT)


async def match(
    session: AsyncSession,
    program_id: int,
    promotions: Sequence[Live],
    candidates: Sequence[Candidate],
    now: datetime,
    zone: tzinfo,
    lifecycle: LifecycleThresholds,
) -> list[list[Live]]:
    """Per candidate, the promotions whose event type, window and condition it meets."""
    if not promotions or not candidates:
        return [[] for _ in candidates]
    members = sorted({c.member_id for c in candidates})
    if any(reads_member(p.tree) for p in promotions):
        facts = await load_facts(
            session, program_id, members, Needs.of([p.tree for p in promotions], zone), now
        )
    else:  # conditions on the event alone: no member fact is read (the batch holds every member's lock)
        facts = dict.fromkeys(members, _NO_FACTS)
    found: list[list[Live]] = []
    for candidate in candidates:
        member = facts.get(candidate.member_id)
        found.append([] if member is None else matching(promotions, candidate, member, now, zone, lifecycle))
    return found


def matching(
    promotions: Sequence[Live],
    candidate: Candidate,
    member: MemberFacts,
    now: datetime,
    zone: tzinfo,
    lifecycle: LifecycleThresholds,
) -> list[Live]:
    local = local_text(candidate.occurred_at, zone)
    event = EarnedEvent(candidate.type, candidate.occurred_at, candidate.amount, candidate.properties)
    evaluation = Evaluation(now, lifecycle, zone, event)
    return [
        p
        for p in promotions
        if p.event_type == candidate.type and p.in_window(local) and evaluation.holds(p.tree, member)
    ]


async def locked_ledger(
    session: AsyncSession, matched: Sequence[Sequence[Live]], candidates: Sequence[Candidate], zone: tzinfo
) -> tuple[Ledger, dict[int, Terms]]:
    """The room left, read under lock: the budgeted promotions' rows locked in id order (after the
    member locks the batch holds) and their spent points re-read, and the members' cap usage.
    Returns the ledger and the promotions' terms as re-read (a concurrent update may have changed them)."""
    involved = {p.terms.id: p.terms for found in matched for p in found}
    if not involved:
        return Ledger({}, {}), {}
    fresh: dict[int, Terms] = dict(involved)
    budget_left: dict[int, int] = {}
    budgeted = sorted(i for i, t in involved.items() if t.budget_points is not None)
    if budgeted:
        rows = await session.scalars(
            select(Promotion)
            .where(in_values(Promotion.id, budgeted, dialect_of(session)))
            .order_by(Promotion.id)
            .with_for_update()
            .execution_options(populate_existing=True)  # spent as of the lock, not as first read
        )
        for row in rows:
            fresh[row.id] = terms_of(row)
            if row.budget_points is not None:
                budget_left[row.id] = row.budget_points - row.spent_points
    capped = sorted(i for i, t in fresh.items() if t.cap_points is not None)
    used: dict[tuple[int, int, str], int] = {}
    if capped:
        members = sorted({c.member_id for c in candidates})
        usage = PromotionUsage.__table__
        result = await session.execute(
            select(usage.c.promotion_id, usage.c.member_id, usage.c.period, usage.c.points).where(
                in_values(usage.c.promotion_id, capped, dialect_of(session)),
                in_values(usage.c.member_id, members, dialect_of(session)),
            )
        )
        used = {(p, m, period): int(points) for p, m, period, points in result}
    return Ledger(budget_left, used), fresh


def settle_batch(
    matched: Sequence[Sequence[Live]],
    candidates: Sequence[Candidate],
    ledger: Ledger,
    zone: tzinfo,
    fresh: Mapping[int, Terms] | None = None,
) -> list[Settled]:
    """The stacking rule, event by event in batch order, each seeing what the ones before it paid."""
    settled: list[Settled] = []
    for found, candidate in zip(matched, candidates, strict=True):
        if not found:
            settled.append(NONE)
            continue
        terms = [fresh.get(p.terms.id, p.terms) if fresh else p.terms for p in found]
        local = candidate.occurred_at.astimezone(zone).replace(tzinfo=None)
        paid = settle(terms, candidate.base, candidate.member_id, local, ledger)
        by_key = {t.key: t for t in terms}
        payments = [
            Payment(by_key[p.key], candidate.member_id, _period(by_key[p.key], local), p.points) for p in paid
        ]
        settled.append(Settled(paid, payments))
    return settled


def _period(terms: Terms, local: datetime) -> str:
    return period_of(terms.cap_period or CapPeriod.TOTAL, local)


async def store_usage(session: AsyncSession, program_id: int, payments: Iterable[Payment]) -> None:
    """Spend the budgets (one conditional UPDATE per promotion, in id order) and add the capped
    promotions' usage per member and period."""
    spent: dict[int, int] = defaultdict(int)
    usage: dict[tuple[int, int, str], int] = defaultdict(int)
    for payment in payments:
        if payment.terms.budget_points is not None:
            spent[payment.terms.id] += payment.points
        if payment.terms.cap_points is not None:
            usage[(payment.terms.id, payment.member_id, payment.period)] += payment.points
    for promotion_id in sorted(spent):
        await session.execute(
            update(Promotion)
            .where(Promotion.id == promotion_id)
            .values(spent_points=Promotion.spent_points + spent[promotion_id])
            .execution_options(synchronize_session=False)
        )
    if usage:
        table = PromotionUsage.__table__
        statement = insert_for(session, table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.promotion_id, table.c.member_id, table.c.period, table.c.program_id],
            set_={"points": table.c.points + statement.excluded.points},
        )
        await session.execute(
            statement,
            [
                {
                    "promotion_id": p,
                    "member_id": m,
                    "period": period,
                    "program_id": program_id,
                    "points": points,
                }
                for (p, m, period), points in sorted(usage.items())
            ],
        )


def reason_suffix(paid: Sequence[Paid]) -> str:
    """What the ledger entry's reason adds: ` + promotions: a +10, b +5`."""
    if not paid:
        return ""
    return " + promotions: " + ", ".join(f"{p.key} +{p.points}" for p in paid)
