"""The promotions service: definitions (audited), listing, and the simulation (docs/promotions.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork
from domain.errors import Conflict
from domain.governance.audit_log import record_change
from domain.models import Program, Promotion
from domain.programs.calendar import program_timezone
from domain.promotions.definitions import (
    PromotionDraft,
    audited,
    check_draft,
    check_segments,
    promotion_by_key,
    write,
)
from domain.promotions.simulation import SimulationReport, simulate
from domain.segments.lifecycle import LifecycleThresholds


class PromotionService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(self, program_id: int, draft: PromotionDraft, *, actor: str) -> Promotion:
        """A new promotion; CONFLICT when its key is taken. Nothing is stored on bad input."""
        checked = check_draft(draft)
        now = self.clock.now()
        try:
            async with self.db.unit_of_work() as uow:
                await check_segments(uow.session, program_id, checked.tree)
                taken = await uow.session.scalar(
                    select(Promotion.id).where(Promotion.program_id == program_id, Promotion.key == draft.key)
                )
                if taken is not None:
                    raise Conflict(f"key: promotion {draft.key!r} exists; use updatePromotion")
                row = Promotion(program_id=program_id, key=draft.key, spent_points=0, created_at=now)
                write(row, checked, now)
                uow.session.add(row)
                await uow.session.flush()
                await self._record(uow, program_id, actor, "createPromotion", row, None)
                return row
        except IntegrityError:
            raise Conflict(f"key: promotion {draft.key!r} was created by a concurrent request") from None

    async def update(self, program_id: int, draft: PromotionDraft, *, actor: str) -> Promotion:
        """Replace the definition of the promotion `draft.key` names (its spent points stay)."""
        checked = check_draft(draft)
        async with self.db.unit_of_work() as uow:
            await check_segments(uow.session, program_id, checked.tree)
            row = await promotion_by_key(uow.session, program_id, draft.key, lock=True)
            before = audited(row)
            write(row, checked, self.clock.now())
            await uow.session.flush()
            await self._record(uow, program_id, actor, "updatePromotion", row, before)
            return row

    async def set_active(self, program_id: int, key: str, active: bool, *, actor: str) -> Promotion:
        async with self.db.unit_of_work() as uow:
            row = await promotion_by_key(uow.session, program_id, key, lock=True)
            before = {"active": row.active}
            row.active = active
            row.updated_at = self.clock.now()
            await uow.session.flush()
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="setPromotionActive",
                at=self.clock.now(),
                target=key,
                before=before,
                after={"active": active},
            )
            return row

    async def list_promotions(self, program_id: int, *, active_only: bool = False) -> list[Promotion]:
        """The program's promotions by priority (highest first), then key."""
        query = select(Promotion).where(Promotion.program_id == program_id)
        if active_only:
            query = query.where(Promotion.active.is_(True))
        async with self.db.read() as session:
            return list(await session.scalars(query.order_by(Promotion.priority.desc(), Promotion.key)))

    async def simulate(self, program_id: int, draft: PromotionDraft, days: int) -> SimulationReport:
        """Replay the last `days` days of recorded events through the draft; nothing is written."""
        checked = check_draft(draft)
        async with self.db.read() as session:
            await check_segments(session, program_id, checked.tree)
            settings: dict[str, Any] = (
                await session.scalar(select(Program.settings).where(Program.id == program_id))
            ) or {}
            return await simulate(
                session,
                program_id,
                checked,
                days,
                self.clock.now(),
                program_timezone(settings),
                LifecycleThresholds.from_settings(settings),
            )

    async def _record(
        self, uow: UnitOfWork, program_id: int, actor: str, action: str, row: Promotion, before: Any
    ) -> None:
        await record_change(
            uow,
            program_id=program_id,
            actor=actor,
            action=action,
            at=self.clock.now(),
            target=row.key,
            before=before,
            after=audited(row),
        )
