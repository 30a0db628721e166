"""A stand-in auditor for the event pipeline: tests choose each event's verdict."""

from __future__ import annotations

from collections.abc import Sequence

from domain.audit import AuditOutcome, Finding, ProposedAccrual
from domain.db.engine import UnitOfWork
from domain.enums import Verdict


class VerdictFromProperties:
    """Returns the verdict an event carries in properties.verdict (ALLOW when absent)."""

    async def audit(self, uow: UnitOfWork, accruals: Sequence[ProposedAccrual]) -> list[AuditOutcome]:
        outcomes = []
        for accrual in accruals:
            verdict = Verdict(accrual.event.properties.get("verdict", "ALLOW"))
            findings = (
                () if verdict == Verdict.ALLOW else (Finding("test_rule", verdict, f"{verdict} on request"),)
            )
            outcomes.append(AuditOutcome(verdict, findings))
        return outcomes
