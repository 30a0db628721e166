"""The audit log: one row per configuration or points-changing mutation, written by the service
that makes the change, in the change's own transaction (DESIGN.md, "Privacy and governance").

`before`/`after` hold the definition or value as JSON: null before a create, null after a delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from domain.db.engine import Database, UnitOfWork
from domain.errors import InvalidInput
from domain.models import AuditEntry

#: The actor of changes no person or key asked for: triggers, sweepers, background loops.
SYSTEM = "system"
#: The actions whose target is a member's externalId (the rest target a key or the program).
MEMBER_ACTIONS = frozenset(
    {"adjustPoints", "reverseLedgerEntry", "approveAccrual", "rejectAccrual", "decideReferral"}
)


async def record_change(
    uow: UnitOfWork,
    *,
    program_id: int,
    actor: str,
    action: str,
    at: datetime,
    target: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one entry; it commits or rolls back with the change it describes."""
    await uow.session.execute(
        insert(AuditEntry).values(
            program_id=program_id,
            at=at,
            actor=actor[:260],
            action=action,
            target=None if target is None else target[:200],
            before=before,
            after=after,
        )
    )


MAX_PAGE = 500


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    has_next: bool


def check_first(first: int) -> None:
    """A page of the log holds 1 to MAX_PAGE entries."""
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput(f"first: must be between 1 and {MAX_PAGE}, got {first}")


class AuditLogService:
    """Reads the log; writing is `record_change`, called by each service inside its change."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(
        self,
        program_id: int,
        *,
        first: int,
        before_id: int | None = None,
        actor: str | None = None,
        action: str | None = None,
    ) -> AuditPage:
        """Newest first: up to `first` entries older than `before_id`, filtered by actor and action."""
        check_first(first)
        query = select(AuditEntry).where(AuditEntry.program_id == program_id)
        if before_id is not None:
            query = query.where(AuditEntry.id < before_id)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        async with self.db.read() as session:
            rows = list(
                (await session.execute(query.order_by(AuditEntry.id.desc()).limit(first + 1))).scalars()
            )
        return AuditPage(rows[:first], len(rows) > first)


async def pseudonymise_target(uow: UnitOfWork, program_id: int, external_id: str, pseudonym: str) -> int:
    """Name an erased member by its pseudonym in the entries that target it (adjustments,
    reversals, review decisions); their before/after hold amounts and balances, no identity.
    Returns the entries rewritten. For eraseMember, inside its transaction."""
    result = await uow.session.execute(
        update(AuditEntry)
        .where(
            AuditEntry.program_id == program_id,
            AuditEntry.action.in_(sorted(MEMBER_ACTIONS)),
            AuditEntry.target == external_id,
        )
        .values(target=pseudonym[:200])
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
