"""The background loop that creates the history tables' monthly partitions ahead (PostgreSQL).

Every pass (hourly, and at start) creates the partitions of the current month and the
`AHEAD` next ones that are missing (`domain.db.partitions.ensure_months`). Missing one is
never an outage: the DEFAULT partition takes the rows, and the month's creation moves
them out. Several processes may run it: an advisory lock serialises the passes.
"""

from __future__ import annotations

import logging

from domain.clock import Clock
from domain.db.engine import Database
from domain.db.partitions import ensure_months

log = logging.getLogger(__name__)


class PartitionUpkeep:
    name = "partition-upkeep"
    interval = 3600.0
    topics: frozenset[str] = frozenset()

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def run_once(self) -> bool:
        if self.db.dialect != "postgresql":
            return False
        async with self.db.unit_of_work() as uow:
            created = await ensure_months(uow.session, self.clock.now())
        if created:
            log.info("created partitions %s", ", ".join(created))
        return False
