"""Step 4 of the pipeline: the fraud audit, as a port that fraud/ implements.

The domain only knows the shape of a verdict; the rules live in fraud/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from domain.db.engine import UnitOfWork
from domain.enums import Verdict
from domain.events.validation import ValidEvent


@dataclass(frozen=True)
class Finding:
    rule: str
    verdict: Verdict
    detail: str


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
