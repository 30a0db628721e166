"""The fraud rules' scenarios, recorded through the services' real pipeline on one calendar day.

`services.events.record_events` audits with `fraud.default_auditor()`; `configure` sets a rule's
parameters as an admin would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from domain.auth.principal import Principal, PrincipalKind
from domain.auth.roles import ROLE_SCOPES
from domain.clock import Clock
from domain.enums import AdminRole, EventStatus
from domain.events.service import EventOutcome
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import Event, FraudFinding, LedgerEntry

if TYPE_CHECKING:
    from api.runtime import Services
    from tests.support.graphql import ProgramFixture

ACCEPTED = EventStatus.ACCEPTED
HELD = EventStatus.HELD_FOR_REVIEW
BLOCKED = EventStatus.BLOCKED
#: Midnight UTC two days ago: every scenario's events fall on this calendar day unless said otherwise.
DAY = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)

#: (event externalId, rule, verdict, detail, shadow, status of the finding's ledger entry)
Stored = tuple[str, str, str, str, bool, str | None]


def reviewer(program_id: int, clock: Clock, label: str = "admin:reviewer@example.com") -> Principal:
    """A REVIEWER admin who has just checked a TOTP code: what ReviewService's decisions need."""
    return Principal(
        PrincipalKind.ADMIN,
        program_id,
        0,
        label,
        ROLE_SCOPES[AdminRole.REVIEWER],
        totp_verified_at=clock.now(),
        role=AdminRole.REVIEWER,
    )


def at(hours: float = 10, minutes: float = 0, seconds: float = 0) -> datetime:
    """That time of DAY."""
    return DAY + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def purchase(
    external_id: str, member: str, when: datetime, amount: int | str, properties: dict[str, Any] | None = None
) -> EventDraft:
    """A purchase earning 1 point per whole unit (the default earning rule)."""
    return EventDraft(external_id, member, "purchase", when, Decimal(amount), properties)


async def enrol(services: Services, program: ProgramFixture, *members: str | MemberUpsert) -> None:
    upserts = [m if isinstance(m, MemberUpsert) else MemberUpsert(m) for m in members]
    await services.members.upsert_members(program.id, upserts)


async def record_drafts(
    services: Services, program: ProgramFixture, *drafts: EventDraft
) -> list[EventOutcome]:
    """Record the drafts in one batch through the services (no GraphQL); their outcomes."""
    return await services.events.record_events(program.id, list(drafts))


async def points(services: Services, program: ProgramFixture, member: str) -> tuple[int, int]:
    """(pointsBalance, pendingPoints) of the member."""
    found = await services.members.get(program.id, member)
    assert found is not None
    return found.points_balance, found.pending_points


async def stored_findings(services: Services, program: ProgramFixture) -> list[Stored]:
    async with services.db.read() as session:
        rows = await session.execute(
            select(
                Event.external_id,
                FraudFinding.rule,
                FraudFinding.verdict,
                FraudFinding.detail,
                FraudFinding.shadow,
                LedgerEntry.status,
            )
            .join(Event, Event.id == FraudFinding.event_id)
            .outerjoin(LedgerEntry, LedgerEntry.id == FraudFinding.ledger_entry_id)
            .where(FraudFinding.program_id == program.id)
            .order_by(FraudFinding.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def configure(services: Services, program: ProgramFixture, rule: str, **params: float) -> None:
    await services.fraud_settings.set_rule(program.id, rule, params=params, actor="test")
