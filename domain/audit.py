"""Step 4 of the pipeline: the fraud audit, as a port that fraud/ implements.

The domain only knows the shape of a verdict; the rules live in fraud/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert

from domain.db.engine import UnitOfWork
from domain.enums import Verdict
from domain.events.validation import ValidEvent
from domain.models import FraudFinding


@dataclass(frozen=True)
class Finding:
    rule: str
    verdict: Verdict
    detail: str
    #: Found by a rule in shadow mode: recorded, never acted on.
    shadow: bool = False


@dataclass(frozen=True)
class ProposedAccrual:
    program_id: int
    member_id: int
    event: ValidEvent
    points: int


@dataclass(frozen=True)
class AuditOutcome:
    verdict: Verdict = Verdict.ALLOW
    findings: tuple[Finding, ...] = field(default_factory=tuple)


ALLOW = AuditOutcome()


class Auditor(Protocol):
    async def audit(self, uow: UnitOfWork, accruals: Sequence[ProposedAccrual]) -> list[AuditOutcome]:
        """One outcome per accrual, in order. Runs inside the batch's transaction."""
        ...


class AllowAll:
    """The audit step before any rule is configured: everything is allowed."""

    async def audit(self, uow: UnitOfWork, accruals: Sequence[ProposedAccrual]) -> list[AuditOutcome]:
        return [ALLOW for _ in accruals]


async def store_findings(
    uow: UnitOfWork,
    accruals: Sequence[ProposedAccrual],
    outcomes: Sequence[AuditOutcome],
    inserted: Mapping[str, int],
    entries: Mapping[int, int],
    now: datetime,
) -> None:
    """Keep every non-ALLOW finding of the events this batch inserted, linked to the ledger entry
    it judged (`entries`: entry id by event id, from posting)."""
    rows = [
        {
            "program_id": accrual.program_id,
            "event_id": inserted[accrual.event.external_id],
            "member_id": accrual.member_id,
            "ledger_entry_id": entries.get(inserted[accrual.event.external_id]),
            "rule": finding.rule[:64],
            "verdict": finding.verdict.value,
            "detail": finding.detail[:500],
            "shadow": finding.shadow,
            "at": now,
        }
        for accrual, outcome in zip(accruals, outcomes, strict=True)
        if accrual.event.external_id in inserted
        for finding in outcome.findings
        if finding.verdict != Verdict.ALLOW
    ]
    if rows:
        await uow.session.execute(insert(FraudFinding), rows)
