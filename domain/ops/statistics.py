"""Warns when PostgreSQL's table statistics can go stale: ingest then slows down by orders of magnitude.

Without current statistics the planner takes a big table for a tiny one and
turns the pipeline's `IN (...)` lookups into scans of a program's rows: a drill
saw ingest go from p50 119 ms to 3-6 s within minutes, until a manual ANALYZE
(docs/benchmarks.md, "Findings"). Autovacuum's analyze keeps them current; this
module names the risk when it is off (for the server or a hot table) and when a
hot table has changed a lot since it was last analysed. /readyz lists the
warnings and `loyalty serve` logs them at start; docs/operations.md says what to set.
SQLite has no such risk here: nothing to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text

from domain.db.engine import Database

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
HELP = 'see docs/operations.md, "Table statistics"'


@dataclass(frozen=True)
class TableStatistics:
    name: str
    #: autovacuum_enabled=false is set on the table
    autovacuum_disabled: bool
    analysed: bool
    modified_since_analyse: int
    live_rows: int


def statistics_warnings(server_autovacuum: bool, tables: Sequence[TableStatistics]) -> list[str]:
    """What to tell the operator, one sentence each (empty when statistics are looked after)."""
    warnings = []
    if not server_autovacuum:
        warnings.append(
            "autovacuum is off: nothing analyses the tables, their statistics go stale and ingest "
            f"slows down by orders of magnitude within minutes; turn it on or ANALYZE periodically ({HELP})"
        )
    disabled = [t.name for t in tables if t.autovacuum_disabled]
    if disabled:
        warnings.append(
            f"autovacuum is disabled on {', '.join(disabled)}: their statistics go stale and ingest "
            f"slows down; re-enable it (ALTER TABLE ... RESET (autovacuum_enabled)) ({HELP})"
        )
    for table in tables:
        if table.modified_since_analyse > STALE_ROWS + STALE_FRACTION * table.live_rows:
            when = "since its last analyse" if table.analysed else "and it was never analysed"
            warnings.append(
                f"statistics of {table.name} are stale: {table.modified_since_analyse} rows changed {when}; "
                f"run ANALYZE {table.name} ({HELP})"
            )
    return warnings


async def check_statistics(db: Database) -> list[str]:
    """The warnings for this database (PostgreSQL; always none on SQLite)."""
    if db.dialect != "postgresql":
        return []
    async with db.engine.connect() as connection:
        autovacuum = (await connection.execute(text("SHOW autovacuum"))).scalar_one() == "on"
        rows = await connection.execute(
            text(
                "SELECT s.relname,"
                " coalesce('autovacuum_enabled=false' = ANY(c.reloptions), false),"
                " s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL,"
                " s.n_mod_since_analyze, s.n_live_tup"
                " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
                " WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)"
                " ORDER BY s.relname"
            ),
            {"tables": list(HOT_TABLES)},
        )
        tables = [
            TableStatistics(name, bool(off), bool(analysed), mods, live)
            for name, off, analysed, mods, live in rows
        ]
    return statistics_warnings(autovacuum, tables)
