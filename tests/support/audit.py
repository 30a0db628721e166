"""A stand-in auditor for the event pipeline: tests choose each event's verdict, and hold accruals for review."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from domain.audit import AuditOutcome, Finding, ProposedAccrual
from domain.db.engine import UnitOfWork
from domain.enums import Verdict

if TYPE_CHECKING:
    from api.runtime import Services
    from tests.support import ShiftableClock
    from tests.support.graphql import GraphQLClient

RECORD = """
mutation($e: [EventInput!]!) {
  recordEvents(events: $e) { results { externalId status pointsAwarded message } }
}"""


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


@asynccontextmanager
async def holding(services: Services) -> AsyncIterator[None]:
    """The pipeline audits with VerdictFromProperties for the duration."""
    auditor = services.events.auditor
    services.events.auditor = VerdictFromProperties()
    try:
        yield
    finally:
        services.events.auditor = auditor


async def hold(
    services: Services,
    integration: GraphQLClient,
    clock: ShiftableClock,
    external_id: str,
    member: str = "m1",
) -> None:
    """Record a purchase (`external_id`) of `member` that the audit holds for review."""
    event = {
        "externalId": external_id,
        "memberExternalId": member,
        "type": "purchase",
        "occurredAt": (clock.now() - timedelta(minutes=1)).isoformat(),
        "properties": {"verdict": "REVIEW"},
    }
    async with holding(services):
        results = (await integration.data(RECORD, {"e": [event]}))["recordEvents"]["results"]
    assert [r["status"] for r in results] == ["HELD_FOR_REVIEW"], results
