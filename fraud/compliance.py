"""The `non-compliant` tag: members with more than maxBlocks blocked accruals in the last days.

Blocks are counted from the stored findings: distinct events with a BLOCK finding
that acted (not shadow) within the window, a reviewer's rejection included. The tag
(source `fraud`) is set in the transaction that records the block (the pipeline's
step "settle compliance", after the findings are stored), so segment conditions on
`has_tag("non-compliant")` follow in that transaction; `ComplianceSweeper` takes
it off when old blocks leave the window (and applies a changed threshold).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import MembersChanged
from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database, collect
from domain.enums import Verdict
from domain.models import FraudFinding, MemberTag, Program
from domain.segments.tags import FRAUD
from fraud.config import load_config

log = logging.getLogger(__name__)

NON_COMPLIANT = "non-compliant"
SOURCE = FRAUD


class Compliance:
    """Implements the pipeline's `Compliance` port (domain/events/service.py); the sweeper uses it too."""

    async def settle(
        self,
        session: AsyncSession,
        program_id: int,
        now: datetime,
        *,
        member_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], list[int]]:
        """Tag the members over the threshold and untag the others (all of the program's, or `member_ids`),
        counting the stored findings. Returns (tagged, untagged) member ids; the segment engine hears of
        them through the message bus."""
        add, remove = await self.unsettled(session, program_id, now, member_ids=member_ids)
        if add:
            await session.execute(
                insert_for(session, MemberTag.__table__).on_conflict_do_nothing(),
                [
                    {
                        "member_id": m,
                        "key": NON_COMPLIANT,
                        "source": SOURCE,
                        "program_id": program_id,
                        "since": now,
                    }
                    for m in add
                ],
            )
        if remove:
            await session.execute(
                delete(MemberTag).where(
                    MemberTag.member_id.in_(remove),
                    MemberTag.key == NON_COMPLIANT,
                    MemberTag.source == SOURCE,
                )
            )
        if add or remove:
            tag = frozenset({NON_COMPLIANT})
            collect(session, MembersChanged(program_id, tags=dict.fromkeys(add + remove, tag), at=now))
        return add, remove

    async def unsettled(
        self,
        session: AsyncSession,
        program_id: int,
        now: datetime,
        *,
        member_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], list[int]]:
        """What `settle` would tag and untag now (reads only)."""
        config = await load_config(session, program_id)
        settings = config["non_compliant"]
        blocks = await _blocks(session, program_id, now - timedelta(days=settings["days"]), member_ids)
        over = (
            {m for m, count in blocks.items() if count > settings["maxBlocks"]} if settings.enabled else set()
        )
        tagged_now = await _tagged(session, program_id, member_ids)
        return sorted(over - tagged_now), sorted(tagged_now - over)


async def _blocks(
    session: AsyncSession, program_id: int, since: datetime, member_ids: Sequence[int] | None
) -> dict[int, int]:
    query = (
        select(FraudFinding.member_id, func.count(distinct(FraudFinding.event_id)))
        .where(
            FraudFinding.program_id == program_id,
            FraudFinding.verdict == Verdict.BLOCK.value,
            FraudFinding.shadow.is_(False),
            FraudFinding.at > since,
        )
        .group_by(FraudFinding.member_id)
    )
    if member_ids is not None:
        query = query.where(FraudFinding.member_id.in_(sorted(set(member_ids))))
    return {member_id: count for member_id, count in await session.execute(query)}  # noqa: C416


async def _tagged(session: AsyncSession, program_id: int, member_ids: Sequence[int] | None) -> set[int]:
    query = select(MemberTag.member_id).where(
        MemberTag.program_id == program_id, MemberTag.key == NON_COMPLIANT, MemberTag.source == SOURCE
    )
    if member_ids is not None:
        query = query.where(MemberTag.member_id.in_(sorted(set(member_ids))))
    return set((await session.execute(query)).scalars())


class ComplianceSweeper:
    """A background loop: re-settles every program (blocks age out of the window; thresholds change)."""

    name = "compliance-sweeper"
    interval = 600.0
    topics = frozenset({"fraud-settings"})

    def __init__(self, db: Database, clock: Clock, compliance: Compliance) -> None:
        self.db = db
        self.clock = clock
        self.compliance = compliance

    async def run_once(self) -> bool:
        now = self.clock.now()
        async with self.db.read() as session:
            programs = list((await session.execute(select(Program.id).order_by(Program.id))).scalars())
        for program_id in programs:
            await self.sweep(program_id, now)
        return False

    async def sweep(self, program_id: int, now: datetime) -> tuple[list[int], list[int]]:
        """Settle one program; a unit of work only when something changes (a pass over every program
        would otherwise take SQLite's write lock once per program, back to back)."""
        async with self.db.read() as session:
            if await self.compliance.unsettled(session, program_id, now) == ([], []):
                return [], []
        async with self.db.unit_of_work() as uow:
            added, removed = await self.compliance.settle(uow.session, program_id, now)
        if added or removed:
            log.info("program %s: non-compliant +%d -%d", program_id, len(added), len(removed))
        return added, removed
