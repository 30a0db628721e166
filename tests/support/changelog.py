"""The segment change log written and read directly, as the engine's transactions would, for the
relay and bus tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from domain.live.messages import LiveChange
from domain.live.relay import read_changes, stored_position
from domain.models import Member, Segment, SegmentChange

if TYPE_CHECKING:
    from api.runtime import Services
    from tests.support.graphql import ProgramFixture


def log_row(program: ProgramFixture, segment_id: int, member_id: int, change: str) -> dict[str, object]:
    return {
        "program_id": program.id,
        "segment_id": segment_id,
        "member_id": member_id,
        "change": change,
        "at": datetime.now(UTC),
    }


async def log_rows(services: Services, program: ProgramFixture, members: list[int], segment_id: int) -> None:
    """Commit an ENTERED row per member, as a transaction of the engine would."""
    async with services.db.unit_of_work() as uow:
        await uow.session.execute(
            insert(SegmentChange), [log_row(program, segment_id, m, "ENTERED") for m in members]
        )


async def member_ids(services: Services, program: ProgramFixture) -> list[int]:
    async with services.db.read() as session:
        return list(
            await session.scalars(
                select(Member.id).where(Member.program_id == program.id).order_by(Member.id)
            )
        )


async def segment_id(services: Services, program: ProgramFixture, key: str) -> int:
    async with services.db.read() as session:
        query = select(Segment.id).where(Segment.program_id == program.id, Segment.key == key)
        found: int = (await session.scalars(query)).one()
        return found


async def program_changes(services: Services, program: ProgramFixture) -> list[LiveChange]:
    """The program's change log, in log order, as it goes on the wire."""
    async with services.db.read() as session:
        return await read_changes(session, SegmentChange.program_id == program.id, 100_000)


async def relayed_through(services: Services) -> int:
    """The relay's stored position (0 before it first ran)."""
    async with services.db.read() as session:
        return await stored_position(session) or 0
