"""Row-lock races on PostgreSQL: wait until another transaction queues on a lock held by the test."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from api.runtime import Services

LOCK_WAIT_S = 30


async def waiting_on_a_lock(services: Services) -> None:
    """Return once some session of the test's database waits for a lock (the racer reached it)."""
    async with asyncio.timeout(LOCK_WAIT_S):
        while True:
            async with services.db.read() as session:
                waiting = await session.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE NOT l.granted AND a.datname = current_database()"
                    )
                )
            if waiting:
                return
            await asyncio.sleep(0.01)
