"""`record_events`: the accrual pipeline of DESIGN.md, one pass and one transaction per batch.

The pass, in order (each step a few statements for the whole batch):
1. validate each event (pure); 2. deduplicate by externalId (recorded, or earlier in the
batch) and admit what the program accepts; 3. earn (pure earning rules); 4. audit (the
`Auditor` port: fraud/ judges each accrual over the members' history); 5. store the events;
6. post (`domain.ledger.posting`: entries, balances, buckets, feed), then refunds;
7. store the findings, linked to their entries; 8. settle compliance (the `non-compliant`
tag of members this batch blocked); 9. evaluate each touched member's segments once (the
first round of the message bus merges the changes of steps 6-8 into one `MembersChanged`,
which the challenge awarder also counts); 10. dispatch what follows, round by round
(triggers, bonuses, their cascades); 11. commit; 12. announce, then after-commit handlers.
A rejected event writes nothing; it never stops the good events of its batch.
An event whose externalId is recorded is DUPLICATE whatever else is wrong with it
now (a lowered maxEventAgeDays, a member erased since): a client re-sending a
batch learns that it arrived. A copy that is rejected claims nothing: a later
copy in the same batch is judged as it would be in the next batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.recording import record_conversions
from domain.audit import Auditor, AuditOutcome, ProposedAccrual, store_findings
from domain.changes import MembersChanged
from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database, UnitOfWork
from domain.enums import AccrualStatus, EventStatus, MemberKind, Verdict
from domain.errors import InvalidInput, NotFound
from domain.events.refunds import REFUND_TYPE, apply_refunds
from domain.events.system import ENGINE_ONLY_TYPES
from domain.events.validation import EventDraft, Rejection, ValidEvent, check_age, validate_event
from domain.events.writes import EventRow, existing_event_hashes, insert_events
from domain.ledger.earning import multiplied, points_for_event
from domain.ledger.posting import Accrual, post_accruals
from domain.members.service import lock_members, member_ids_by_external_id
from domain.models import Member, Program
from domain.ops.metrics import EVENTS
from domain.programs.calendar import program_timezone
from domain.programs.service import ProgramSettings, load_earning_rules
from domain.promotions.accrual import (
    NONE,
    Candidate,
    Settled,
    active_promotions,
    locked_ledger,
    match,
    settle_batch,
    store_usage,
)
from domain.referrals.progress import AcceptedEvent, note_qualifying_events
from domain.segments.lifecycle import LifecycleThresholds
from domain.tiers.store import held_multipliers

MAX_BATCH = 1000

_STATUS_BY_VERDICT = {
    Verdict.ALLOW: (EventStatus.ACCEPTED, AccrualStatus.POSTED),
    Verdict.REVIEW: (EventStatus.HELD_FOR_REVIEW, AccrualStatus.PENDING_REVIEW),
    Verdict.BLOCK: (EventStatus.BLOCKED, AccrualStatus.REJECTED),
}


@dataclass(frozen=True)
class EventOutcome:
    external_id: str
    status: EventStatus
    points_awarded: int = 0
    message: str | None = None


@dataclass(frozen=True)
class EventsRecorded:
    """A batch's answers (the domain event behind the events metric, counted after commit)."""

    statuses: tuple[EventStatus, ...]
    depth: int = field(default=0, kw_only=True)


async def count_events(recorded: EventsRecorded) -> None:
    """After commit: the events metric, by status."""
    for status, count in Counter(status.value for status in recorded.statuses).items():
        EVENTS.labels(status).inc(count)


class LockScope(Protocol):
    """Whom a batch's events reach beyond their own members (the segment engine's `org.AGG`
    roll-up fan-out): the batch locks them all in its one ordered lock statement, so no two
    batches fanning out over the same organizations ever take member locks in opposite orders."""

    async def reach(
        self, session: AsyncSession, program_id: int, event_types: Mapping[int, frozenset[str]]
    ) -> set[int]: ...


class Compliance(Protocol):
    """Pipeline step 8, a port fraud/ fills: tag (or untag) `non-compliant` from the stored findings."""

    async def settle(
        self,
        session: AsyncSession,
        program_id: int,
        now: datetime,
        *,
        member_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], list[int]]: ...


class EventService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        auditor: Auditor,
        compliance: Compliance | None = None,
        lock_scope: LockScope | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.lock_scope = lock_scope
        self.auditor = auditor
        #: Settles the non-compliant tag of members this batch blocked (None: tagging off).
        self.compliance = compliance

    async def record_events(self, program_id: int, drafts: Sequence[EventDraft]) -> list[EventOutcome]:
        """A client's batch (`recordEvents`): the engine's own event types are REJECTED in it."""
        if len(drafts) > MAX_BATCH:
            raise InvalidInput(f"events: at most {MAX_BATCH} per call, got {len(drafts)}")
        now = self.clock.now()
        # 11. committed; 12. announced, and the after-commit handlers (metrics) run as the block ends
        async with self.db.unit_of_work() as uow:
            return await self.record_in(uow, program_id, drafts, now, refuse=ENGINE_ONLY_TYPES)

    async def record_in(
        self,
        uow: UnitOfWork,
        program_id: int,
        drafts: Sequence[EventDraft],
        now: datetime,
        *,
        refuse: frozenset[str] = frozenset(),
    ) -> list[EventOutcome]:
        """Steps 1 to 10 inside the caller's unit of work (a coupon redemption records its event so);
        events of a type in `refuse` are REJECTED."""
        # 1. validate
        valid, rejected = _validate_batch(drafts, now, refuse)
        session = uow.session
        stored = (await session.execute(select(Program.settings).where(Program.id == program_id))).first()
        if stored is None:
            raise NotFound(f"program {program_id} does not exist")
        settings = ProgramSettings.from_json(stored.settings)
        # 2. deduplicate, and admit what the program accepts (creating members it may create)
        known = await existing_event_hashes(session, program_id, _ids(valid))
        members = await member_ids_by_external_id(session, program_id, _member_ids(valid))
        admitted, refused = _admit(valid, known, partial(_refusal, now, settings, members))
        created = await _create_members(session, program_id, admitted, members, now)
        for i in [i for i, e in admitted.items() if e.member_external_id not in members]:
            refused[i] = _erased(admitted.pop(i))  # its name is an erased member's pseudonym
        if created:  # every condition is new to them
            uow.collect(MembersChanged(program_id, created=created, at=now))
        types: dict[int, frozenset[str]] = {}
        for e in admitted.values():
            member_id = members[e.member_external_id]
            types[member_id] = types.get(member_id, frozenset()) | {e.type}
        reached = (
            set() if self.lock_scope is None else await self.lock_scope.reach(session, program_id, types)
        )
        touched = await lock_members(session, set(types) | reached) & set(types)
        for i in [i for i, e in admitted.items() if members[e.member_external_id] not in touched]:
            refused[i] = _erased(admitted.pop(i))  # erased while this batch waited for its row
        # 3. earn: the rule's points times the multiplier of the tier held when the batch began
        rules = await load_earning_rules(session, program_id)
        multipliers = await held_multipliers(session, program_id, sorted(touched))
        order = sorted(admitted)
        bases = {
            i: 0
            if admitted[i].type == REFUND_TYPE
            else points_for_event(rules, admitted[i].type, admitted[i].amount)
            for i in order
        }
        # ... then the promotions (docs/promotions.md), as of the members' state when the batch began
        promoted = await _promote(session, program_id, stored.settings, now, admitted, members, bases, order)
        proposals = [
            ProposedAccrual(
                program_id,
                members[admitted[i].member_external_id],
                admitted[i],
                multiplied(bases[i], multipliers.get(members[admitted[i].member_external_id]))
                + promoted[i].points,
            )
            for i in order
        ]
        # 4. audit
        verdicts = await self.auditor.audit(uow, proposals)
        rows = {i: _row(p, v) for i, p, v in zip(order, proposals, verdicts, strict=True)}
        # 5. store the events (a concurrent batch may have recorded some first: DUPLICATE)
        inserted = await insert_events(session, program_id, list(rows.values()), now)
        recorded = {i: row for i, row in rows.items() if row.event.external_id in inserted}
        raced = {i: _raced(row) for i, row in rows.items() if i not in recorded}
        # 6. post the accruals, then the refunds (which may refund an event of this batch);
        # what promotions paid on accruals not BLOCKED spends their budgets and member caps
        accruals = {i: row for i, row in recorded.items() if row.event.type != REFUND_TYPE}
        await store_usage(
            session,
            program_id,
            (
                payment
                for i, row in accruals.items()
                if row.status != EventStatus.BLOCKED
                for payment in promoted[i].payments
            ),
        )
        entries = await post_accruals(
            session,
            program_id,
            [_accrual(row, inserted, promoted[i]) for i, row in accruals.items()],
            now,
        )
        refunded = await apply_refunds(
            session,
            program_id,
            {i: row for i, row in recorded.items() if i not in accruals},
            inserted,
            now,
        )
        refunds = {i: EventOutcome(r.external_id, r.status, 0, r.message) for i, r in refunded.items()}
        # (a referred member's first accepted qualifying event starts its referrer's wait)
        await note_qualifying_events(
            session,
            program_id,
            (
                AcceptedEvent(
                    row.member_id, inserted[row.event.external_id], row.event.type, row.event.occurred_at
                )
                for row in accruals.values()
                if row.status == EventStatus.ACCEPTED
            ),
        )
        # 7. store the findings, linked to the entries they judged
        await store_findings(uow, proposals, verdicts, inserted, entries, now)
        # 8. settle compliance for the members this batch blocked
        blocked = sorted({row.member_id for row in recorded.values() if row.status == EventStatus.BLOCKED})
        if blocked and self.compliance is not None:
            await self.compliance.settle(session, program_id, now, member_ids=blocked)
        # 9. evaluate each touched member's segments once: the changes of steps 2-8, merged
        await uow.dispatch(rounds=1)
        # 10. dispatch what followed, round by round: triggers, bonuses, their cascades
        await uow.dispatch()
        # (stored conversions: after the entries and messages this batch logged)
        await record_conversions(session, program_id, ((r.member_id, r.event) for r in recorded.values()))
        answered = _answers(
            drafts,
            rejected | refused | raced | {i: _recorded(row) for i, row in accruals.items()} | refunds,
        )
        uow.collect(EventsRecorded(tuple(outcome.status for outcome in answered)))
        return answered


def _answers(drafts: Sequence[EventDraft], outcomes: Mapping[int, EventOutcome]) -> list[EventOutcome]:
    return [outcomes[i] for i in range(len(drafts))]


def _validate_batch(
    drafts: Sequence[EventDraft], now: datetime, refuse: frozenset[str]
) -> tuple[dict[int, ValidEvent], dict[int, EventOutcome]]:
    """The well-formed events by their index in the batch (in batch order), and the others REJECTED."""
    valid: dict[int, ValidEvent] = {}
    rejected: dict[int, EventOutcome] = {}
    for i, draft in enumerate(drafts):
        try:
            event = validate_event(draft, now)
            if event.type in refuse:
                raise Rejection(f"type: {event.type} events are recorded by the engine itself, not sent")
            valid[i] = event
        except Rejection as rejection:
            rejected[i] = EventOutcome(draft.external_id, EventStatus.REJECTED, 0, str(rejection))
    return valid, rejected


def _admit(
    valid: Mapping[int, ValidEvent],
    known: Mapping[str, str],
    refusal: Callable[[ValidEvent], str | None],
) -> tuple[dict[int, ValidEvent], dict[int, EventOutcome]]:
    """The events to record, and the answers of the others.

    A recorded externalId is DUPLICATE (with a note when the content differs). Of the
    rest, the first copy of each externalId that `refusal` lets through is admitted;
    copies after it are DUPLICATE whatever they hold, copies before it REJECTED with their reason.
    """
    admitted: dict[int, ValidEvent] = {}
    answers: dict[int, EventOutcome] = {}
    kept: set[str] = set()
    for i, event in valid.items():
        content_hash = known.get(event.external_id)
        if content_hash is not None:
            message = (
                "externalId already recorded"
                if content_hash == event.content_hash
                else "externalId already recorded with different content; the first event is kept"
            )
            answers[i] = EventOutcome(event.external_id, EventStatus.DUPLICATE, 0, message)
        elif event.external_id in kept:
            answers[i] = EventOutcome(
                event.external_id, EventStatus.DUPLICATE, 0, "externalId repeated earlier in this batch"
            )
        elif (reason := refusal(event)) is not None:
            answers[i] = EventOutcome(event.external_id, EventStatus.REJECTED, 0, reason)
        else:
            kept.add(event.external_id)
            admitted[i] = event
    return admitted, answers


def _refusal(
    now: datetime, settings: ProgramSettings, members: dict[str, int], event: ValidEvent
) -> str | None:
    """Why the program refuses a well-formed event: too old, or its member unknown (and not created)."""
    try:
        check_age(event, now, settings.max_event_age)
    except Rejection as rejection:
        return str(rejection)
    if event.member_external_id not in members and not settings.auto_create_members:
        return f"memberExternalId: no member {event.member_external_id!r} in this program"
    return None


def _ids(valid: Mapping[int, ValidEvent]) -> list[str]:
    return list(dict.fromkeys(event.external_id for event in valid.values()))


def _member_ids(valid: Mapping[int, ValidEvent]) -> list[str]:
    return sorted({event.member_external_id for event in valid.values()})


async def _create_members(
    session: AsyncSession,
    program_id: int,
    admitted: Mapping[int, ValidEvent],
    members: dict[str, int],
    now: datetime,
) -> frozenset[int]:
    """Create the members the admitted events name that do not exist yet (the program's
    autoCreateMembers; `_refusal` rejected their events otherwise), add them to `members`, and
    return their ids."""
    missing = [external_id for external_id in _member_ids(admitted) if external_id not in members]
    if not missing:
        return frozenset()
    table = Member.__table__
    await session.execute(
        insert_for(session, table).on_conflict_do_nothing(
            index_elements=[table.c.program_id, table.c.external_id]
        ),
        [
            {
                "program_id": program_id,
                "external_id": external_id,
                "kind": MemberKind.CUSTOMER.value,
                "attributes": {},
                "channels": [],
                "joined_at": now,
                "created_at": now,
                "updated_at": now,
                "points_balance": 0,
                "pending_points": 0,
            }
            for external_id in missing
        ],
    )
    created = await member_ids_by_external_id(session, program_id, missing)
    members.update(created)
    return frozenset(created.values())


def _row(proposal: ProposedAccrual, outcome: AuditOutcome) -> EventRow:
    status, entry_status = _STATUS_BY_VERDICT[outcome.verdict]
    message = (
        "; ".join(
            f"{f.rule}: {f.detail}" for f in outcome.findings if f.verdict != Verdict.ALLOW and not f.shadow
        )
        or None
    )
    return EventRow(proposal.event, proposal.member_id, status, entry_status, proposal.points, message)


def _accrual(row: EventRow, inserted: Mapping[str, int], promoted: Settled) -> Accrual:
    return Accrual(
        row.member_id,
        row.event,
        inserted[row.event.external_id],
        row.points,
        row.entry_status,
        tuple((p.key, p.points) for p in promoted.paid) if row.points else (),
    )


async def _promote(
    session: AsyncSession,
    program_id: int,
    settings: dict[str, Any] | None,
    now: datetime,
    admitted: Mapping[int, ValidEvent],
    members: Mapping[str, int],
    bases: Mapping[int, int],
    order: Sequence[int],
) -> dict[int, Settled]:
    """What the active promotions add to each admitted event (NONE for most: one query when none
    is active for the batch's event types)."""
    promotions = await active_promotions(
        session, program_id, {e.type for e in admitted.values() if e.type != REFUND_TYPE}
    )
    if not promotions:
        return dict.fromkeys(order, NONE)
    chosen = [i for i in order if admitted[i].type != REFUND_TYPE]
    candidates = [
        Candidate(
            members[admitted[i].member_external_id],
            admitted[i].type,
            admitted[i].occurred_at,
            admitted[i].amount,
            admitted[i].properties,
            bases[i],
        )
        for i in chosen
    ]
    zone = program_timezone(settings)
    lifecycle = LifecycleThresholds.from_settings(settings or {})
    matched = await match(session, program_id, promotions, candidates, now, zone, lifecycle)
    ledger, fresh = await locked_ledger(session, matched, candidates, zone)
    settled = settle_batch(matched, candidates, ledger, zone, fresh)
    found = dict.fromkeys(order, NONE)
    found.update(zip(chosen, settled, strict=True))
    return found


def _recorded(row: EventRow) -> EventOutcome:
    points = row.points if row.status == EventStatus.ACCEPTED else 0
    return EventOutcome(row.event.external_id, row.status, points, row.message)


def _erased(event: ValidEvent) -> EventOutcome:
    """An event naming an erased member's pseudonym: autoCreateMembers cannot create that member
    (the name is taken), and the erased one takes no events."""
    return EventOutcome(
        event.external_id, EventStatus.REJECTED, 0, "memberExternalId: names an erased member"
    )


def _raced(row: EventRow) -> EventOutcome:
    """A concurrent batch recorded the event first."""
    return EventOutcome(row.event.external_id, EventStatus.DUPLICATE, 0, "externalId already recorded")
