"""The program's calendar: its timezone, read from the program's settings (pure period math is in
periods.py)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Program
from domain.programs.calendar import program_timezone


async def program_zone(session: AsyncSession, program_id: int) -> ZoneInfo:
    """The timezone whose midnights bound the program's board and challenge periods (UTC by default)."""
    return program_timezone(await session.scalar(select(Program.settings).where(Program.id == program_id)))
