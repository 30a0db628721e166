"""Warns when PostgreSQL's table statistics go stale: ingest then slows down by orders of magnitude.

Without current statistics the planner takes a big table for a tiny one and
turns the pipeline's `IN (...)` lookups into scans of a program's rows: a drill
saw ingest go from p50 119 ms to 3-6 s within minutes, until a manual ANALYZE
(docs/benchmarks.md, "Findings"). Autovacuum's analyze keeps them current, or a
scheduled ANALYZE does. This module names two risks: a hot table whose
statistics are stale now (with "autovacuum is off" as the cause when it is), and
a hot table on which autovacuum is disabled. `StatisticsCheck` checks at start
and then at most once a minute; /readyz shows which risks there are (no table
names or figures: /readyz is public), the log the details.
docs/operations.md ("Table statistics") says what to set. SQLite has no such
risk here: nothing to check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from domain.clock import Clock
from domain.db.engine import Database

log = logging.getLogger(__name__)

#: The tables ingest, segments and the loops read per request or per pass.
HOT_TABLES = (
    "events",
    "members",
    "ledger_entries",
    "event_aggregates",
    "segment_memberships",
    "segment_changes",
    "member_tags",
    "standings_feed",
    "outbox",
    "fraud_findings",
)
#: A table is stale when more rows than this, plus STALE_FRACTION of its rows, changed since its last analyse
#: (autovacuum's own default trigger is 50 rows + 10 %).
STALE_ROWS = 1000
STALE_FRACTION = 0.2
#: How long a check's result is served before the next request checks again.
CHECK_EVERY = timedelta(minutes=1)
#: Longest a check may take; beyond it the statistics count as not checked.
CHECK_TIMEOUT_S = 2.0
HELP = 'see docs/operations.md, "Table statistics"'

#: The public names of the risks (what /readyz lists).
STALE = (
    f"table statistics are stale: ingest slows down by orders of magnitude until they are analysed ({HELP})"
)
DISABLED = f"autovacuum is disabled on a hot table: its statistics will go stale ({HELP})"
NOT_CHECKED = "table statistics could not be checked (see the server's log)"


@dataclass(frozen=True)
class TableStatistics:
    name: str
    #: autovacuum_enabled is set to false on the table (in any of the spellings PostgreSQL accepts)
    autovacuum_disabled: bool
    analysed: bool
    modified_since_analyse: int
    live_rows: int


@dataclass(frozen=True)
class Risk:
    #: Which risk, for anyone (STALE or DISABLED).
    public: str
    #: Where and how much, and what to do: for the operator's log.
    detail: str


def statistics_risks(server_autovacuum: bool, tables: Sequence[TableStatistics]) -> list[Risk]:
    """The risks to the hot tables' statistics now (none when they are looked after).

    Autovacuum off for the whole server is no risk by itself (a scheduled ANALYZE
    may look after the statistics): it is named as the cause of a stale table.
    """
    risks = []
    for table in tables:
        if table.autovacuum_disabled:
            risks.append(
                Risk(
                    DISABLED,
                    f"autovacuum is disabled on {table.name}: its statistics go stale and ingest slows down; "
                    f"re-enable it (ALTER TABLE {table.name} RESET (autovacuum_enabled)) ({HELP})",
                )
            )
        if table.modified_since_analyse > STALE_ROWS + STALE_FRACTION * table.live_rows:
            when = "since its last analyse" if table.analysed else "and it was never analysed"
            cause = (
                ""
                if server_autovacuum
                else "; autovacuum is off: turn it on or ANALYZE the hot tables on a schedule"
            )
            risks.append(
                Risk(
                    STALE,
                    f"statistics of {table.name} are stale: {table.modified_since_analyse} rows changed "
                    f"{when}; run ANALYZE {table.name}{cause} ({HELP})",
                )
            )
    return risks


def autovacuum_off(value: str | None) -> bool:
    """Whether a table's autovacuum_enabled option, as PostgreSQL stored it (as written), is false:
    a prefix of "false" or "no", "of", "off" or "0", in any case."""
    if value is None:
        return False
    word = value.strip().lower()
    return bool(word) and ("false".startswith(word) or "no".startswith(word) or word in ("of", "off", "0"))


async def read_risks(db: Database) -> list[Risk]:
    """The risks for this database (PostgreSQL; always none on SQLite)."""
    if db.dialect != "postgresql":
        return []
    async with db.engine.connect() as connection:
        autovacuum = (await connection.execute(text("SHOW autovacuum"))).scalar_one() == "on"
        rows = await connection.execute(
            text(
                "SELECT s.relname,"
                " (SELECT o.option_value FROM pg_options_to_table(c.reloptions) o"
                "  WHERE o.option_name = 'autovacuum_enabled'),"
                " s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL,"
                " s.n_mod_since_analyze, s.n_live_tup"
                " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
                " WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)"
                " ORDER BY s.relname"
            ),
            {"tables": list(HOT_TABLES)},
        )
        tables = [
            TableStatistics(name, autovacuum_off(enabled), bool(analysed), mods, live)
            for name, enabled, analysed, mods, live in rows
        ]
    return statistics_risks(autovacuum, tables)


class StatisticsCheck:
    """The process's view of the risks: checked at start (`refresh`), then again when a reader asks
    (`warnings`) and the last check is older than CHECK_EVERY, so frequent probes cost one query a minute."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._checked_at: datetime | None = None
        self._warnings: list[str] = []
        self._lock = asyncio.Lock()

    async def warnings(self) -> list[str]:
        """The risks' public names, from a check at most CHECK_EVERY old."""
        async with self._lock:
            now = self.clock.now()
            if self._checked_at is None or not self._checked_at <= now < self._checked_at + CHECK_EVERY:
                await self._check(now)
            return list(self._warnings)

    async def refresh(self) -> list[str]:
        """Check now (at start); the risks' public names."""
        async with self._lock:
            await self._check(self.clock.now())
            return list(self._warnings)

    async def _check(self, now: datetime) -> None:
        """Check, and log the details when the risks differ from the last check's (and at the first)."""
        try:
            risks = await asyncio.wait_for(read_risks(self.db), timeout=CHECK_TIMEOUT_S)
        except Exception as error:  # a warning's check must never fail a start or a probe
            risks = [Risk(NOT_CHECKED, f"not checked ({type(error).__name__}: {error})")]
        warnings = list(dict.fromkeys(r.public for r in risks))
        if self._checked_at is None or warnings != self._warnings:
            for risk in risks:
                log.warning("table statistics: %s", risk.detail)
            if not risks and self._checked_at is not None:
                log.info("table statistics: no risk left")
        self._checked_at, self._warnings = now, warnings
