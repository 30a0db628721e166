"""A PostgreSQL streaming replica for the reads that may lag, and the primary as its fallback.

`Database.lagging_read()` is the one way in: it opens a read transaction here while the replica
answers, and on the primary while it does not. An outage is noticed when a connection cannot be
checked out (refused, timed out, the standby starting up or out of connections); the replica is
then left alone for `recheck` and tried again by the first lagging read after that. Each outage
is logged once as a warning, and the recovery once as information (docs/scaling.md, "Read replica").

A failure in the middle of a read (the replica killed under a running query) fails that read, as
it would on the primary; the pool's pre-ping finds the dead connection at the next checkout, which
then falls back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.clock import Clock
from domain.transient import is_transient

log = logging.getLogger(__name__)


class Replica:
    """The replica's engine and what is known of its health (shared by every read of the process)."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        recheck: timedelta,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.clock = clock
        self.recheck = recheck
        #: When the current outage began; None while the replica answers.
        self.down_since: datetime | None = None
        self._retry_at: datetime | None = None

    @property
    def available(self) -> bool:
        """True unless an outage is known and its recheck is not yet due."""
        return self._retry_at is None or self.clock.now() >= self._retry_at

    async def begin(self) -> AsyncSession | None:
        """A session whose read transaction holds a replica connection; None when the replica is down
        (known, or found now). The caller closes the session."""
        if not self.available:
            return None
        session = self.sessions()
        try:
            await session.begin()
            await session.connection()  # check a connection out now: an outage shows here, not mid-read
        except Exception as error:
            await session.close()
            if not is_transient(error):
                raise
            self._went_down(error)
            return None
        self._answered()
        return session

    def _went_down(self, error: BaseException) -> None:
        now = self.clock.now()
        self._retry_at = now + self.recheck
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "read replica unreachable (%s): reads that may lag go to the primary; "
                "trying the replica again every %d s",
                _describe(error),
                self.recheck.total_seconds(),
            )

    def _answered(self) -> None:
        if self.down_since is not None:
            log.info(
                "read replica answers again after %d s: reads that may lag go to it",
                (self.clock.now() - self.down_since).total_seconds(),
            )
        self.down_since = self._retry_at = None

    async def dispose(self) -> None:
        await self.engine.dispose()


def _describe(error: BaseException) -> str:
    """The error's type and first line, for the log (no traceback: an outage is not a bug)."""
    cause = getattr(error, "orig", None) or error.__cause__ or error
    first_line = (str(cause).splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__
