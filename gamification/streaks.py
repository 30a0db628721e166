"""Streaks: consecutive local days (the program's timezone) with an accepted event of a type, as
`streak(type)` in segment rules.

The days are read by the segment engine's own fact loader and counted by its
evaluator (`Evaluation.measure` of a `streak` metric), so a member's streak and a
`streak(...)` condition cannot disagree: from the per-day buckets in a UTC
program, from the raw events (their local dates) in any other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Member, Program
from domain.programs.calendar import program_timezone
from domain.segments.conditions import Agg, Metric, MetricCompare, Op
from domain.segments.evaluate import Evaluation
from domain.segments.facts import Needs, load_facts

#: (member id, event type)
StreakKey = tuple[int, str]


async def member_streaks(
    session: AsyncSession, keys: Sequence[StreakKey], now: datetime
) -> dict[StreakKey, int]:
    """The streak of each (member, event type) as of `now`, in its program's dates; 0 without events."""
    if not keys:
        return {}
    rows = await session.execute(
        select(Member.id, Member.program_id, Program.settings)
        .join(Program, Program.id == Member.program_id)
        .where(Member.id.in_(sorted({m for m, _ in keys})))
    )
    by_program: dict[int, list[int]] = defaultdict(list)
    settings_of: dict[int, object] = {}
    for member_id, program_id, settings in rows:
        by_program[program_id].append(member_id)
        settings_of[program_id] = settings
    metrics = {t: Metric(t, Agg.STREAK) for t in sorted({t for _, t in keys})}
    found: dict[StreakKey, int] = {}
    for program_id, member_ids in by_program.items():
        settings = settings_of[program_id]
        zone = program_timezone(settings if isinstance(settings, dict) else None)
        needs = Needs.of((MetricCompare(m, Op.GTE, 0) for m in metrics.values()), zone)
        facts = await load_facts(session, program_id, member_ids, needs, now)
        evaluation = Evaluation(now, zone=zone)
        for member_id, member in facts.items():
            for event_type, metric in metrics.items():
                measured = evaluation.measure(metric, member)
                found[(member_id, event_type)] = int(measured or 0)
    return {key: found.get(key, 0) for key in keys}
