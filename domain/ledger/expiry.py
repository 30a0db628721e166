"""The expiry sweep: what is left of a lot at its expiry instant leaves the balance as an EXPIRY entry.

A background loop (domain.background.Loop) like the time-flip scheduler: every pass
claims the members owning the soonest due lots (the partial index `ix_points_lots_due`
holds open lots only, so a pass reads what is due and nothing else: no rescan) and, in
one transaction, posts one EXPIRY entry per due lot through `domain.ledger.posting`.
With a 1 s interval an expiry lands within about a second of its instant (the goal is 60 s).

Several workers may run it: on PostgreSQL the members are claimed `FOR UPDATE SKIP
LOCKED`, and a member held by a redemption or an event batch is left for the next pass.
`loyalty points expire` runs it at once from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.clock import Clock
from domain.db.engine import Database
from domain.ledger.lots import due_members
from domain.ledger.posting import post_expiries


@dataclass(frozen=True)
class SweepPass:
    members: int
    lots: int


class ExpirySweeper:
    """Drains due lots in batches of about `batch` lots per transaction."""

    name = "points-expiry"
    topics: frozenset[str] = frozenset()

    def __init__(self, db: Database, clock: Clock, batch: int = 1000, interval: float = 1.0) -> None:
        self.db = db
        self.clock = clock
        self.batch = batch
        self.interval = interval

    async def run_once(self) -> bool:
        """One batch in one transaction; True when it may not have drained everything due."""
        done = await self.pass_once()
        return done.lots >= self.batch

    async def pass_once(self, program_id: int | None = None) -> SweepPass:
        """One pass over the soonest due lots (of one program, when given); committed on return."""
        now = self.clock.now()
        members = lots = 0
        async with self.db.unit_of_work() as uow:
            claimed = await due_members(uow.session, now, self.batch, program_id)
            for claimed_program, member_ids in sorted(claimed.items()):
                members += len(member_ids)
                lots += await post_expiries(uow.session, claimed_program, member_ids, now)
        return SweepPass(members, lots)

    async def drain(self, program_id: int | None = None) -> int:
        """Expire everything due now (the CLI's `points expire`); returns the lots expired."""
        total = 0
        while True:
            done = await self.pass_once(program_id)
            total += done.lots
            if done.lots == 0:
                return total
