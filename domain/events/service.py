"""`record_events`: the accrual pipeline of DESIGN.md, one transaction per batch.

1 validate, 2 deduplicate by externalId, 3 earning rules, 4 audit (a port that
fraud/ fills), 5 post / hold / reject the accrual and fold accepted events into
the daily aggregates, 6 after commit: tell the listeners (leaderboards, live
segment changes) what was posted.
A rejected event writes nothing; it never stops the good events of its batch.
An event whose externalId is recorded is DUPLICATE whatever else is wrong with it
now (a lowered maxEventAgeDays, a member erased since): a client re-sending a
batch learns that it arrived. A copy that is rejected claims nothing: a later
copy in the same batch is judged as it would be in the next batch.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.recording import record_conversions
from domain.audit import Auditor, AuditOutcome, ProposedAccrual, store_findings
from domain.changes import ChangeListener, MembersChanged, NoListener
from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.enums import AccrualStatus, EntryKind, EventStatus, MemberKind, Verdict
from domain.errors import InvalidInput, NotFound
from domain.events.refunds import REFUND_TYPE, Refunded, apply_refunds
from domain.events.validation import EventDraft, Rejection, ValidEvent, check_age, validate_event
from domain.events.writes import (
    EventRow,
    add_to_aggregates,
    add_to_balances,
    existing_event_hashes,
    insert_events,
    insert_ledger_entries,
)
from domain.ledger.earning import points_for_event
from domain.ledger.service import request_hash
from domain.members.service import lock_members, member_ids_by_external_id
from domain.models import Member, Program
from domain.ops.metrics import EVENTS
from domain.programs.service import ProgramSettings, load_earning_rules
from domain.standings import mark_standings

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
class PostedAccrual:
    member_id: int
    event_type: str
    occurred_at: datetime
    points: int


@dataclass(frozen=True)
class BatchPosted:
    """What a committed batch changed: the input of after-commit listeners."""

    program_id: int
    accruals: tuple[PostedAccrual, ...]


PostingListener = Callable[[BatchPosted], Awaitable[None]]


class EventService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        auditor: Auditor,
        listeners: Sequence[PostingListener] = (),
        in_transaction: ChangeListener | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.auditor = auditor
        self.listeners = list(listeners)
        #: Told what each batch changed before it commits: segment membership commits with its cause.
        self.in_transaction = in_transaction or NoListener()

    async def record_events(self, program_id: int, drafts: Sequence[EventDraft]) -> list[EventOutcome]:
        if len(drafts) > MAX_BATCH:
            raise InvalidInput(f"events: at most {MAX_BATCH} per call, got {len(drafts)}")
        now = self.clock.now()
        outcomes: dict[int, EventOutcome] = {}
        valid = _validate_batch(drafts, now, outcomes)
        async with self.db.unit_of_work() as uow:
            session = uow.session
            program = await session.get(Program, program_id)
            if program is None:
                raise NotFound(f"program {program_id} does not exist")
            settings = ProgramSettings.from_json(program.settings)
            _drop_known(valid, await existing_event_hashes(session, program_id, _ids(valid)), outcomes)
            members = await member_ids_by_external_id(session, program_id, _member_ids(valid))
            _admit(valid, partial(_refusal, now, settings, members), outcomes)
            created = await _create_members(session, program, valid, members, now)
            await lock_members(session, {members[e.member_external_id] for e in valid.values()})
            rules = await load_earning_rules(session, program_id)
            order = sorted(valid)
            proposals = [
                ProposedAccrual(
                    program_id,
                    members[valid[i].member_external_id],
                    valid[i],
                    0
                    if valid[i].type == REFUND_TYPE
                    else points_for_event(rules, valid[i].type, valid[i].amount),
                )
                for i in order
            ]
            verdicts = await self.auditor.audit(uow, proposals)
            rows = {i: _row(p, v) for i, p, v in zip(order, proposals, verdicts, strict=True)}
            inserted = await insert_events(session, program_id, list(rows.values()), now)
            refunds = {i: row for i, row in rows.items() if row.event.type == REFUND_TYPE}
            accruing = {i: row for i, row in rows.items() if i not in refunds}
            posted = await self._apply(session, program_id, accruing, inserted, outcomes, now)
            await store_findings(uow, proposals, verdicts, inserted, now)
            refund_outcomes, refunded = await apply_refunds(session, program_id, refunds, inserted, now)
            for i, done in refund_outcomes.items():
                outcomes[i] = EventOutcome(done.external_id, done.status, 0, done.message)
            rows.update(refunds)
            await self.in_transaction.members_changed(
                session, _changes(program_id, rows, inserted, created, refunded), now
            )
            await record_conversions(session, program_id, ((r.member_id, r.event) for r in rows.values()))
            if posted.accruals:
                for (
                    listener
                ) in self.listeners:  # derived data: a failure is logged, the batch stays acknowledged
                    uow.after_commit(partial(listener, posted))
            answered = [outcomes[i] for i in range(len(drafts))]
            uow.after_commit(partial(_count, answered))
        return answered

    async def _apply(
        self,
        session: AsyncSession,
        program_id: int,
        rows: dict[int, EventRow],
        inserted: dict[str, int],
        outcomes: dict[int, EventOutcome],
        now: datetime,
    ) -> BatchPosted:
        entries: list[dict[str, object]] = []
        posted: dict[int, int] = defaultdict(int)
        pending: dict[int, int] = defaultdict(int)
        accepted: list[tuple[int, ValidEvent]] = []
        accruals: list[PostedAccrual] = []
        for i, row in rows.items():
            event = row.event
            event_id = inserted.get(event.external_id)
            if event_id is None:  # a concurrent batch recorded it first
                outcomes[i] = EventOutcome(
                    event.external_id, EventStatus.DUPLICATE, 0, "externalId already recorded"
                )
                continue
            status = EventStatus(row.status)
            outcomes[i] = EventOutcome(
                event.external_id, status, row.points if status == EventStatus.ACCEPTED else 0, row.message
            )
            if status == EventStatus.ACCEPTED:
                accepted.append((row.member_id, event))
            if row.points == 0:
                continue
            entry_status = AccrualStatus(row.entry_status)
            entries.append(
                {
                    "program_id": program_id,
                    "member_id": row.member_id,
                    "points": row.points,
                    "status": entry_status.value,
                    "kind": EntryKind.ACCRUAL.value,
                    "reason": f"{event.type} {event.external_id}"[:500],
                    "event_id": event_id,
                    "idempotency_key": f"event:{event.external_id}",
                    "request_hash": request_hash(EntryKind.ACCRUAL, event.content_hash),
                    "created_at": now,
                }
            )
            if entry_status == AccrualStatus.POSTED:
                posted[row.member_id] += row.points
                accruals.append(PostedAccrual(row.member_id, event.type, event.occurred_at, row.points))
            elif entry_status == AccrualStatus.PENDING_REVIEW:
                pending[row.member_id] += row.points
        await insert_ledger_entries(session, entries)
        await add_to_balances(session, posted, pending)
        await add_to_aggregates(session, program_id, accepted)
        await mark_standings(session, program_id, ((m, e.occurred_at) for m, e in accepted))
        return BatchPosted(program_id, tuple(accruals))


async def _count(answered: Sequence[EventOutcome]) -> None:
    """The events metric, by status, once the batch has committed."""
    for status, count in Counter(outcome.status.value for outcome in answered).items():
        EVENTS.labels(status).inc(count)


def _validate_batch(
    drafts: Sequence[EventDraft], now: datetime, outcomes: dict[int, EventOutcome]
) -> dict[int, ValidEvent]:
    """The well-formed events by their index in the batch (in batch order); the others REJECTED."""
    valid: dict[int, ValidEvent] = {}
    for i, draft in enumerate(drafts):
        try:
            valid[i] = validate_event(draft, now)
        except Rejection as rejection:
            outcomes[i] = EventOutcome(draft.external_id, EventStatus.REJECTED, 0, str(rejection))
    return valid


def _admit(
    valid: dict[int, ValidEvent],
    refusal: Callable[[ValidEvent], str | None],
    outcomes: dict[int, EventOutcome],
) -> None:
    """Keep the first copy of each externalId that `refusal` lets through; copies after it are
    DUPLICATE whatever they hold, copies before it REJECTED with their reason."""
    kept: set[str] = set()
    for i, event in list(valid.items()):
        if event.external_id in kept:
            outcomes[i] = EventOutcome(
                event.external_id, EventStatus.DUPLICATE, 0, "externalId repeated earlier in this batch"
            )
        elif (reason := refusal(event)) is not None:
            outcomes[i] = EventOutcome(event.external_id, EventStatus.REJECTED, 0, reason)
        else:
            kept.add(event.external_id)
            continue
        del valid[i]


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


def _ids(valid: dict[int, ValidEvent]) -> list[str]:
    return list(dict.fromkeys(event.external_id for event in valid.values()))


def _member_ids(valid: dict[int, ValidEvent]) -> list[str]:
    return sorted({event.member_external_id for event in valid.values()})


def _drop_known(
    valid: dict[int, ValidEvent], known: dict[str, str], outcomes: dict[int, EventOutcome]
) -> None:
    for i, event in list(valid.items()):
        content_hash = known.get(event.external_id)
        if content_hash is None:
            continue
        message = (
            "externalId already recorded"
            if content_hash == event.content_hash
            else "externalId already recorded with different content; the first event is kept"
        )
        outcomes[i] = EventOutcome(event.external_id, EventStatus.DUPLICATE, 0, message)
        del valid[i]


def _changes(
    program_id: int,
    rows: dict[int, EventRow],
    inserted: dict[str, int],
    created: frozenset[int],
    refunded: Sequence[Refunded] = (),
) -> MembersChanged:
    types: dict[int, set[str]] = defaultdict(set)
    occurred: dict[tuple[int, str], set[datetime]] = defaultdict(set)
    balances: set[int] = set()
    for row in rows.values():
        if row.status != EventStatus.ACCEPTED or row.event.external_id not in inserted:
            continue
        types[row.member_id].add(row.event.type)
        occurred[(row.member_id, row.event.type)].add(row.event.occurred_at)
        if row.points:
            balances.add(row.member_id)
    for refund in refunded:  # the refunded event no longer counts in its type's aggregates
        types[refund.member_id].add(refund.event_type)
        occurred[(refund.member_id, refund.event_type)].add(refund.occurred_at)
        balances.add(refund.member_id)
    return MembersChanged(
        program_id,
        {member_id: frozenset(found) for member_id, found in types.items()},
        {key: frozenset(times) for key, times in occurred.items()},
        balances=frozenset(balances),
        created=created,
    )


async def _create_members(
    session: AsyncSession,
    program: Program,
    valid: dict[int, ValidEvent],
    members: dict[str, int],
    now: datetime,
) -> frozenset[int]:
    """Create the members the admitted events name that do not exist yet (the program's
    autoCreateMembers; `_refusal` rejected their events otherwise), add them to `members`, and
    return their ids."""
    missing = [external_id for external_id in _member_ids(valid) if external_id not in members]
    if not missing:
        return frozenset()
    table = Member.__table__
    await session.execute(
        insert_for(session, table).on_conflict_do_nothing(
            index_elements=[table.c.program_id, table.c.external_id]
        ),
        [
            {
                "program_id": program.id,
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
    created = await member_ids_by_external_id(session, program.id, missing)
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
    return EventRow(
        proposal.event, proposal.member_id, status.value, entry_status.value, proposal.points, message
    )
