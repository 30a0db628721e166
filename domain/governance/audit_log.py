"""The audit log: one row per configuration or points-changing mutation, written by the service
that makes the change, in the change's own transaction (DESIGN.md, "Privacy and governance").

`before`/`after` hold the definition or value as JSON: null before a create, null after a delete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert

from domain.db.engine import UnitOfWork
from domain.models import AuditEntry

#: The actor of changes no person or key asked for: triggers, sweepers, background loops.
SYSTEM = "system"


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
