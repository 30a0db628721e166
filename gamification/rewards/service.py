"""The rewards service: one unit of work per operation (docs/rewards.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork
from domain.errors import Conflict, NotFound
from domain.governance.audit_log import record_change
from domain.ledger.service import LedgerService
from domain.models import LedgerEntry, Reward, RewardWindow
from gamification.rewards.catalogue import (
    CatalogueItem,
    RewardDraft,
    add_stock,
    audited_reward,
    catalogue,
    reward_by_key,
    store_reward,
    take_one,
)
from gamification.rewards.redemption import (
    RedemptionRequest,
    RedemptionView,
    ledger_reason,
    record,
    recorded,
    redeemable,
)
from gamification.rewards.windows import (
    WindowSpec,
    admit,
    freeze,
    open_window,
    remove_window,
    store_window,
    unfrozen_open_window,
)


class RewardService:
    def __init__(self, db: Database, clock: Clock, ledger: LedgerService) -> None:
        self.db = db
        self.clock = clock
        self.ledger = ledger

    # ---------- the catalogue ----------

    async def set_reward(self, program_id: int, draft: RewardDraft, *, actor: str) -> CatalogueItem:
        """Create or replace a reward by key (stock is set as given: see `restock` for adding)."""
        try:
            async with self.db.unit_of_work() as uow:
                before = await self._audited(uow.session, program_id, draft.key)
                reward = await store_reward(uow.session, program_id, draft, self.clock.now())
                return await self._record(uow, program_id, reward.key, actor, "setReward", before)
        except IntegrityError:
            raise Conflict(f"key: reward {draft.key!r} was created by a concurrent request; retry") from None

    async def restock(self, program_id: int, key: str, add: int, *, actor: str) -> CatalogueItem:
        async with self.db.unit_of_work() as uow:
            before = await self._audited(uow.session, program_id, key)
            await add_stock(uow.session, program_id, key, add, self.clock.now())
            return await self._record(uow, program_id, key, actor, "restockReward", before)

    async def get(self, program_id: int, key: str, *, active_only: bool = False) -> CatalogueItem | None:
        async with self.db.read() as session:
            items = await catalogue(session, program_id, active_only=active_only, keys=[key])
        return items[0] if items else None

    async def list_rewards(self, program_id: int, *, active_only: bool) -> list[CatalogueItem]:
        async with self.db.read() as session:
            return await catalogue(session, program_id, active_only=active_only)

    # ---------- priority windows ----------

    async def set_window(
        self, program_id: int, reward_key: str, spec: WindowSpec, *, actor: str
    ) -> CatalogueItem:
        async with self.db.unit_of_work() as uow:
            reward = await self._locked(uow.session, program_id, reward_key)
            before = await self._audited(uow.session, program_id, reward_key)
            await store_window(uow.session, reward, spec)
            return await self._record(uow, program_id, reward_key, actor, "setRewardWindow", before)

    async def remove_window(
        self, program_id: int, reward_key: str, starts_at: datetime, *, actor: str
    ) -> CatalogueItem:
        """Remove the window starting at `starts_at` (NOT_FOUND when there is none)."""
        async with self.db.unit_of_work() as uow:
            reward = await self._locked(uow.session, program_id, reward_key)
            before = await self._audited(uow.session, program_id, reward_key)
            if not await remove_window(uow.session, reward, starts_at):
                raise NotFound(
                    f"startsAt: reward {reward_key!r} has no window starting at {starts_at.isoformat()}"
                )
            return await self._record(uow, program_id, reward_key, actor, "removeRewardWindow", before)

    # ---------- redeeming ----------

    async def redeem(
        self, program_id: int, member_external_id: str, reward_key: str, idempotency_key: str
    ) -> RedemptionView:
        """Spend the reward's cost and take one unit of stock, in one transaction, once per key.

        Out of stock: CONFLICT; beyond the balance: BAD_USER_INPUT; outside the top N
        during a priority window: FORBIDDEN. A replay returns the first redemption.
        """
        request = RedemptionRequest(program_id, member_external_id, reward_key, idempotency_key)
        request.check()
        now = self.clock.now()
        await self._freeze_open_window(request, now)

        async def attempt(session: AsyncSession) -> RedemptionView:
            member, reward = await redeemable(session, request)
            window = await open_window(session, reward.id, now)
            if window is not None:
                await admit(session, program_id, reward, window, member.id, now)
            entry = await self.ledger.spend(
                session,
                program_id,
                member.id,
                reward.cost_points,
                ledger_reason(reward),
                request.ledger_key,
                request.fingerprint,
            )
            await take_one(session, reward)
            return await record(session, request, member, reward, entry, now)

        async def replay(session: AsyncSession, entry: LedgerEntry) -> RedemptionView:
            return await recorded(session, program_id, entry, now)

        return await self.ledger.once(
            program_id,
            request.ledger_key,
            request.fingerprint,
            attempt,
            replay,
            shown_key=request.idempotency_key,
        )

    async def _freeze_open_window(self, request: RedemptionRequest, now: datetime) -> None:
        """Freeze the open window's ranking in a transaction of its own.

        A refused redemption rolls back, and would take a ranking frozen inside it
        along; frozen here, every later request of the window reads the stored rows.
        """
        async with self.db.read() as session:
            found = await unfrozen_open_window(
                session, request.program_id, request.reward_key, request.member_external_id, now
            )
        if found is None:
            return
        window_id, member_id = found
        async with self.db.unit_of_work() as uow:  # concurrent freezers agree on the first snapshot
            window = await uow.session.get(RewardWindow, window_id)
            if window is not None and window.snapshot_id is None:
                await freeze(uow.session, request.program_id, window, member_id, now)

    async def _locked(self, session: AsyncSession, program_id: int, key: str) -> Reward:
        reward = await reward_by_key(session, program_id, key, field="rewardKey")
        await session.refresh(reward, with_for_update=True)
        return reward

    async def _item(self, session: AsyncSession, program_id: int, key: str) -> CatalogueItem:
        (item,) = await catalogue(session, program_id, active_only=False, keys=[key])
        return item

    async def _audited(self, session: AsyncSession, program_id: int, key: str) -> dict[str, Any] | None:
        """The reward as the audit log keeps it, None when there is none yet."""
        items = await catalogue(session, program_id, active_only=False, keys=[key])
        return audited_reward(items[0]) if items else None

    async def _record(
        self,
        uow: UnitOfWork,
        program_id: int,
        key: str,
        actor: str,
        action: str,
        before: dict[str, Any] | None,
    ) -> CatalogueItem:
        """Write the audit entry of a change to reward `key` (in its transaction); the item after it."""
        item = await self._item(uow.session, program_id, key)
        await record_change(
            uow,
            program_id=program_id,
            actor=actor,
            action=action,
            at=self.clock.now(),
            target=key,
            before=before,
            after=audited_reward(item),
        )
        return item
