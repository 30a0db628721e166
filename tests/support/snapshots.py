"""What the accrual pipeline left behind in one program, in terms two programs can be compared in.

Database ids differ between programs, so everything is named by what a client
names it by: members by externalId, events by externalId, segments, challenges
and boards by key. Ids inside free text (idempotency keys of bonuses) are left
out; reasons are kept as written. Rows whose order means nothing are sorted; the
segment change log keeps its order per member and segment.

Limits: messages, webhooks and the outbox, experiments and the due times of the
time-flip scheduler are not read (a due time may legitimately be earlier than
needed: waking early is harmless).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from domain.models import (
    Challenge,
    ChallengeCompletion,
    Event,
    EventAggregate,
    FraudFinding,
    LedgerEntry,
    Member,
    MemberTag,
    Segment,
    SegmentChange,
    SegmentMembership,
    StandingsFeed,
)
from gamification.leaderboards.feeder import StandingsFeeder
from gamification.leaderboards.store import board_pattern

if TYPE_CHECKING:
    from api.runtime import Services

Row = tuple[Any, ...]


@dataclass(frozen=True)
class ProgramState:
    #: member -> (pointsBalance, pendingPoints)
    balances: dict[str, tuple[int, int]]
    #: member -> sorted (kind, status, points, reason, event, reversed event, decided by)
    ledger: dict[str, list[Row]]
    #: event -> (member, type, status, pointsAwarded, message, occurredAt, amount)
    events: dict[str, Row]
    #: sorted (event, rule, verdict, detail, shadow)
    findings: list[Row]
    #: sorted (member, type, day, count, amounts, sum, min, max, first, last)
    aggregates: list[Row]
    #: sorted (segment, member, since)
    memberships: list[Row]
    #: sorted (member, tag, source, since)
    tags: list[Row]
    #: (member, segment) -> [(ENTERED | LEFT, at), ...] in log order
    changes: dict[tuple[str, str], list[tuple[str, datetime]]]
    #: sorted (challenge, member, period start, points)
    completions: list[Row]
    #: the standings feed not yet drained: (member, when it counts), as a set
    feed: frozenset[tuple[str, datetime]]

    def differences(self, other: ProgramState) -> list[str]:
        """The names of the parts that differ from `other`'s, each with both values."""
        return [
            f"{f.name}:\n  {getattr(self, f.name)!r}\n  {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


async def read_state(services: Services, program_id: int) -> ProgramState:
    async with services.db.read() as session:
        names = await _names(session, program_id)
        return ProgramState(
            balances=await _balances(session, program_id),
            ledger=await _ledger(session, program_id, names),
            events=await _events(session, program_id, names),
            findings=await _findings(session, program_id),
            aggregates=await _aggregates(session, program_id, names),
            memberships=await _memberships(session, program_id, names),
            tags=await _tags(session, program_id, names),
            changes=await _changes(session, program_id, names),
            completions=await _completions(session, program_id, names),
            feed=await _feed(session, program_id, names),
        )


async def drain_feed(services: Services) -> None:
    """Run the leaderboard feeder until the standings feed is empty (every program's)."""
    feeder = next(loop for loop in services.loops if isinstance(loop, StandingsFeeder))
    await feeder.lease.take_over()  # a server process another test ran may still hold it
    while await feeder.run_once():
        pass


async def read_boards(services: Services, program_id: int) -> dict[str, dict[str, int]]:
    """Every board key of the program in Redis, without the program id: {member: packed score}."""
    async with services.db.read() as session:
        names = await _names(session, program_id)
    client = services.redis.client
    boards: dict[str, dict[str, int]] = {}
    async for key in client.scan_iter(match=board_pattern(services.redis, program_id, "*")):
        text = key.decode() if isinstance(key, bytes) else str(key)
        board = text.split("{", 1)[1].split(":", 1)[1]  # "<board>}:<scope>:<period>:<start>"
        scores = cast(list[tuple[Any, float]], await client.zrange(key, 0, -1, withscores=True))
        boards[board] = {names[int(member)]: int(score) for member, score in scores}
    return boards


async def _names(session: AsyncSession, program_id: int) -> dict[int, str]:
    rows = await session.execute(select(Member.id, Member.external_id).where(Member.program_id == program_id))
    return {member_id: external_id for member_id, external_id in rows}  # noqa: C416 - Row objects


async def _balances(session: AsyncSession, program_id: int) -> dict[str, tuple[int, int]]:
    rows = await session.execute(
        select(Member.external_id, Member.points_balance, Member.pending_points).where(
            Member.program_id == program_id
        )
    )
    return {name: (balance, pending) for name, balance, pending in rows}


async def _ledger(session: AsyncSession, program_id: int, names: dict[int, str]) -> dict[str, list[Row]]:
    original = aliased(LedgerEntry)
    reversed_event = aliased(Event)
    rows = await session.execute(
        select(
            LedgerEntry.member_id,
            LedgerEntry.kind,
            LedgerEntry.status,
            LedgerEntry.points,
            LedgerEntry.reason,
            Event.external_id,
            reversed_event.external_id,
            LedgerEntry.decided_by,
        )
        .outerjoin(Event, Event.id == LedgerEntry.event_id)
        .outerjoin(original, original.id == LedgerEntry.reverses_entry_id)
        .outerjoin(reversed_event, reversed_event.id == original.event_id)
        .where(LedgerEntry.program_id == program_id)
    )
    ledger: dict[str, list[Row]] = defaultdict(list)
    for member_id, *entry in rows:
        ledger[names[member_id]].append(tuple(entry))
    return {member: sorted(entries, key=repr) for member, entries in ledger.items()}


async def _events(session: AsyncSession, program_id: int, names: dict[int, str]) -> dict[str, Row]:
    rows = await session.execute(
        select(
            Event.external_id,
            Event.member_id,
            Event.type,
            Event.status,
            Event.points_awarded,
            Event.message,
            Event.occurred_at,
            Event.amount,
        ).where(Event.program_id == program_id)
    )
    return {external_id: (names[m], *rest) for external_id, m, *rest in rows}


async def _findings(session: AsyncSession, program_id: int) -> list[Row]:
    rows = await session.execute(
        select(
            Event.external_id,
            FraudFinding.rule,
            FraudFinding.verdict,
            FraudFinding.detail,
            FraudFinding.shadow,
        )
        .join(Event, Event.id == FraudFinding.event_id)
        .where(FraudFinding.program_id == program_id)
    )
    return sorted((tuple(r) for r in rows), key=repr)


async def _aggregates(session: AsyncSession, program_id: int, names: dict[int, str]) -> list[Row]:
    a = EventAggregate
    rows = await session.execute(
        select(
            a.member_id,
            a.event_type,
            a.day,
            a.count,
            a.amount_count,
            a.amount_sum,
            a.amount_min,
            a.amount_max,
            a.first_at,
            a.last_at,
        ).where(a.program_id == program_id)
    )
    return sorted(((names[m], *rest) for m, *rest in rows), key=repr)


async def _memberships(session: AsyncSession, program_id: int, names: dict[int, str]) -> list[Row]:
    rows = await session.execute(
        select(Segment.key, SegmentMembership.member_id, SegmentMembership.since)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(Segment.program_id == program_id)
    )
    return sorted((key, names[m], since) for key, m, since in rows)


async def _tags(session: AsyncSession, program_id: int, names: dict[int, str]) -> list[Row]:
    rows = await session.execute(
        select(MemberTag.member_id, MemberTag.key, MemberTag.source, MemberTag.since).where(
            MemberTag.program_id == program_id
        )
    )
    return sorted((names[m], key, source, since) for m, key, source, since in rows)


async def _changes(
    session: AsyncSession, program_id: int, names: dict[int, str]
) -> dict[tuple[str, str], list[tuple[str, datetime]]]:
    rows = await session.execute(
        select(SegmentChange.member_id, Segment.key, SegmentChange.change, SegmentChange.at)
        .join(Segment, Segment.id == SegmentChange.segment_id)
        .where(SegmentChange.program_id == program_id)
        .order_by(SegmentChange.id)
    )
    log: dict[tuple[str, str], list[tuple[str, datetime]]] = defaultdict(list)
    for member_id, key, change, at in rows:
        log[(names[member_id], key)].append((change, at))
    return dict(log)


async def _completions(session: AsyncSession, program_id: int, names: dict[int, str]) -> list[Row]:
    c = ChallengeCompletion
    rows = await session.execute(
        select(Challenge.key, c.member_id, c.period_start, c.points)
        .join(Challenge, Challenge.id == c.challenge_id)
        .where(c.program_id == program_id)
    )
    return sorted((key, names[m], start, points) for key, m, start, points in rows)


async def _feed(
    session: AsyncSession, program_id: int, names: dict[int, str]
) -> frozenset[tuple[str, datetime]]:
    rows = await session.execute(
        select(StandingsFeed.member_id, StandingsFeed.at).where(StandingsFeed.program_id == program_id)
    )
    return frozenset((names[m], at) for m, at in rows)
