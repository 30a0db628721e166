"""Locks: on PostgreSQL, wait until another transaction queues on a row lock held by the test; on
SQLite, whether the database's one write lock is free."""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy import text
from sqlalchemy.engine import make_url

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


def sqlite_write_lock_free(database_url: str) -> bool:
    """Whether another connection takes SQLite's write lock right now (BEGIN IMMEDIATE within 0.2 s):
    False while some transaction of the database holds it."""
    connection = sqlite3.connect(make_url(database_url).database or "", timeout=0.2, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:  # database is locked
        return False
    else:
        connection.execute("ROLLBACK")
        return True
    finally:
        connection.close()
