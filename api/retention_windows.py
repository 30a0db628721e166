"""Every stored definition's raw-event window, for `loyalty prune --events-retention` to exceed."""

from __future__ import annotations

from domain.db.engine import Database
from domain.ops.event_retention import Window, churn_windows, segment_windows
from domain.segments.engine import SegmentEngine
from fraud.retention_windows import fraud_windows
from gamification.retention_windows import gamification_windows


async def stored_windows(db: Database, engine: SegmentEngine) -> list[Window]:
    """Segments and tier ladders, boards and challenges, fraud rules and churn models, of every program."""
    async with db.read() as session:
        return [
            *await segment_windows(session, engine),
            *await gamification_windows(session),
            *await fraud_windows(session),
            *await churn_windows(session),
        ]
