"""The review queue: held accruals (PENDING_REVIEW) and the admin decisions on them.

Approval posts the entry as of the approval (`posting.approve_held`: balances,
aggregates, the standings feed, and the change the message bus hands to segments and
challenges before the commit). Rejection only releases the pending points.
Both happen in one unit of work, under the member's and the entry's row locks,
and record who decided when (and, for a rejection, why). A second decision is CONFLICT.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics.recording import record_conversions
from domain.audit import Finding
from domain.auth.principal import Principal, PrincipalKind
from domain.auth.stepup import require_step_up
from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork
from domain.enums import AccrualStatus, EntryKind, EventStatus, Verdict
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.governance.audit_log import record_change
from domain.ledger.posting import approve_held, release_held
from domain.members.service import lock_members
from domain.models import Event, FraudFinding, LedgerEntry, Member
from domain.referrals.progress import AcceptedEvent, note_qualifying_events
from fraud.compliance import Compliance

MAX_QUEUE = 500
MAX_REASON = 500
#: The finding a reviewer's rejection leaves (it counts as a block towards `non-compliant`).
REVIEWER_RULE = "reviewer"


@dataclass(frozen=True)
class AccrualReview:
    entry_id: int
    member_external_id: str
    event_external_id: str
    points: int
    findings: tuple[Finding, ...]
    created_at: datetime


def require_decision_step_up(principal: Principal, now: datetime) -> None:
    """Only an admin decides on held accruals, and every decision needs step-up (domain.auth.stepup)."""
    if principal.kind != PrincipalKind.ADMIN:
        raise Forbidden("only an admin can decide on held accruals")
    require_step_up(principal, now, "this decision")


class ReviewService:
    def __init__(self, db: Database, clock: Clock, compliance: Compliance | None = None) -> None:
        self.db = db
        self.clock = clock
        #: A rejection counts as a block towards the non-compliant tag (None: tagging off).
        self.compliance = compliance

    async def review_queue(self, program_id: int, first: int = 50) -> list[AccrualReview]:
        if not 1 <= first <= MAX_QUEUE:
            raise InvalidInput(f"first: between 1 and {MAX_QUEUE}, got {first}")
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(LedgerEntry, Member.external_id, Event.external_id)
                    .join(Member, Member.id == LedgerEntry.member_id)
                    .join(Event, Event.id == LedgerEntry.event_id)
                    .where(
                        LedgerEntry.program_id == program_id,
                        LedgerEntry.status == AccrualStatus.PENDING_REVIEW.value,
                    )
                    .order_by(LedgerEntry.created_at, LedgerEntry.id)
                    .limit(first)
                )
            ).all()
            findings = await _findings(session, [entry.event_id for entry, _, _ in rows if entry.event_id])
        return [
            AccrualReview(
                entry.id,
                member_external_id,
                event_external_id,
                entry.points,
                tuple(findings.get(entry.event_id or 0, ())),
                entry.created_at,
            )
            for entry, member_external_id, event_external_id in rows
        ]

    async def approve(self, reviewer: Principal, entry_id: int) -> LedgerEntry:
        """Post a held accrual of the reviewer's program; the reviewer needs a step-up."""
        now = self.clock.now()
        require_decision_step_up(reviewer, now)
        program_id, actor = reviewer.program_id, reviewer.operator
        async with self.db.unit_of_work() as uow:
            session = uow.session
            entry, event = await self._pending(session, program_id, entry_id)
            before = await audited_decision(session, entry)
            entry.decided_at = now
            entry.decided_by = actor[:200]
            event.status = EventStatus.ACCEPTED.value
            event.points_awarded = entry.points
            await approve_held(session, program_id, entry, event, now)
            accepted = AcceptedEvent(entry.member_id, event.id, event.type, event.occurred_at)
            await note_qualifying_events(session, program_id, [accepted])
            await uow.dispatch()  # the entries the approval logs get their stored conversions too
            await record_conversions(session, program_id, [(entry.member_id, event)])
            await _record(uow, entry, actor, "approveAccrual", before, now)
        return entry

    async def reject(self, reviewer: Principal, entry_id: int, reason: str) -> LedgerEntry:
        """Release a held accrual's pending points; the reviewer needs a step-up."""
        program_id, actor = reviewer.program_id, reviewer.operator
        reason = reason.strip()
        if not reason:
            raise InvalidInput("reason: must not be empty")
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"reason: at most {MAX_REASON} characters")
        now = self.clock.now()
        require_decision_step_up(reviewer, now)
        async with self.db.unit_of_work() as uow:
            session = uow.session
            entry, event = await self._pending(session, program_id, entry_id)
            before = await audited_decision(session, entry)
            entry.decided_at = now
            entry.decided_by = actor[:200]
            entry.decision_reason = reason
            event.status = EventStatus.BLOCKED.value
            event.points_awarded = 0
            event.message = f"rejected by reviewer: {reason}"
            await release_held(session, entry)
            session.add(
                FraudFinding(
                    program_id=program_id,
                    event_id=event.id,
                    member_id=entry.member_id,
                    ledger_entry_id=entry.id,
                    rule=REVIEWER_RULE,
                    verdict=Verdict.BLOCK.value,
                    detail=f"rejected by {entry.decided_by}: {reason}"[:500],
                    shadow=False,
                    at=now,
                )
            )
            await session.flush()
            if self.compliance is not None:
                await self.compliance.settle(session, program_id, now, member_ids=[entry.member_id])
            await _record(uow, entry, actor, "rejectAccrual", before, now)
        return entry

    async def _pending(
        self, session: AsyncSession, program_id: int, entry_id: int
    ) -> tuple[LedgerEntry, Event]:
        """The held entry and its event, the member's row and then the entry's row locked."""
        member_id = await session.scalar(
            select(LedgerEntry.member_id).where(
                LedgerEntry.id == entry_id, LedgerEntry.program_id == program_id
            )
        )
        if member_id is None:
            raise NotFound(f"id: no ledger entry {entry_id} in this program")
        await lock_members(session, [member_id])  # the pipeline's lock order: member, then its entries
        entry = (
            await session.execute(select(LedgerEntry).where(LedgerEntry.id == entry_id).with_for_update())
        ).scalar_one()
        if entry.status != AccrualStatus.PENDING_REVIEW.value:
            if entry.decided_at is not None:
                raise Conflict(
                    f"id: entry {entry_id} was already {_decided(entry.status)} "
                    f"at {entry.decided_at.isoformat()} by {entry.decided_by}",
                    status=entry.status,
                )
            raise Conflict(
                f"id: entry {entry_id} is {entry.status}, not awaiting review", status=entry.status
            )
        if entry.kind != EntryKind.ACCRUAL.value or entry.event_id is None:
            raise InvalidInput(f"id: entry {entry_id} is not an event's accrual")
        event = (
            await session.execute(select(Event).where(Event.id == entry.event_id).with_for_update())
        ).scalar_one()
        return entry, event


async def audited_decision(session: AsyncSession, entry: LedgerEntry) -> dict[str, Any]:
    """A held accrual as the audit log keeps it around a decision: the entry and the member's balance."""
    await session.flush()
    balance = await session.scalar(select(Member.points_balance).where(Member.id == entry.member_id))
    return {
        "entryId": str(entry.id),
        "status": entry.status,
        "points": entry.points,
        "reason": entry.decision_reason,
        "balance": balance,
    }


async def _record(
    uow: UnitOfWork, entry: LedgerEntry, actor: str, action: str, before: dict[str, Any], now: datetime
) -> None:
    """The audit entry of a decision, targeting the member's externalId."""
    member = await uow.session.scalar(select(Member.external_id).where(Member.id == entry.member_id))
    await record_change(
        uow,
        program_id=entry.program_id,
        actor=actor,
        action=action,
        at=now,
        target=member,
        before=before,
        after=await audited_decision(uow.session, entry),
    )


def _decided(status: str) -> str:
    return {AccrualStatus.POSTED.value: "approved", AccrualStatus.REJECTED.value: "rejected"}.get(
        status, status.lower()
    )


async def _findings(session: AsyncSession, event_ids: list[int]) -> dict[int, list[Finding]]:
    found: dict[int, list[Finding]] = defaultdict(list)
    if not event_ids:
        return found
    rows = await session.execute(
        select(FraudFinding)
        .where(FraudFinding.event_id.in_(sorted(set(event_ids))), FraudFinding.shadow.is_(False))
        .order_by(FraudFinding.id)
    )
    for finding in rows.scalars():
        found[finding.event_id].append(Finding(finding.rule, Verdict(finding.verdict), finding.detail))
    return found
