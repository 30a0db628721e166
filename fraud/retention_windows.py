"""How far back the fraud rules read history (`loyalty prune --events-retention` refuses less).

Every rule parameter that is a window counts, enabled or not (a rule may be switched on
again): `days`, `hours` and `windowMinutes`, as each program set them or by default.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Program
from domain.ops.event_retention import Window
from fraud.config import load_config

#: window parameter -> its unit in days
UNITS = {"days": 1.0, "hours": 1 / 24, "windowMinutes": 1 / 1440}


async def fraud_windows(session: AsyncSession) -> list[Window]:
    windows: list[Window] = []
    programs = (await session.execute(select(Program.id, Program.key).order_by(Program.id))).all()
    for program_id, program_key in programs:
        config = await load_config(session, program_id)
        for name, rule in sorted(config.rules.items()):
            for param, unit in UNITS.items():
                if param in rule.params:
                    source = f"fraud rule {name!r} ({param}) of program {program_key!r}"
                    windows.append(Window(rule.params[param] * unit, source))
    return windows
