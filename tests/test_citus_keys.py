"""The Citus plan holds for every table (docs/scaling.md, "Distributing with Citus").

Every table is either distributed by `program_id` (it grows with members: it has a `member_id`,
or is one of the logs that grow with their events) or a reference table (configuration, copied
to every node). A distributed table holds `program_id` in its primary key (Citus needs the
distribution column in every key; it goes last, after the columns the reads name, see migration
0019), or is a documented surrogate-id exception; each of its unique keys holds `program_id`, or
is a documented exception.
A new table, key or member column that breaks the plan fails here until it is classified.
Then migration 0019 on data: the keys it changes, on both databases.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlalchemy import Table, UniqueConstraint, inspect
from sqlalchemy.ext.asyncio import create_async_engine

import migrations
from domain.models import Base
from tests.support.migrated import database_url, run_sql

__all__ = ["database_url"]  # the scratch database fixture

SCALING = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"

#: Distributed by program_id, all colocated with `members`.
DISTRIBUTED = {
    "members",
    "events",
    "ledger_entries",
    "points_lots",
    "event_aggregates",
    "segment_memberships",
    "segment_changes",
    "member_tiers",
    "member_tags",
    "fraud_findings",
    "fraud_receipts",
    "fraud_devices",
    "messages",
    "outbox",
    "standings_feed",
    "leaderboard_snapshot_entries",
    "challenge_completions",
    "reward_redemptions",
    "experiment_exposures",
    "audit_log",
    "coupon_codes",
    "referrals",
    "promotion_usage",
    "promotions",  # its budget is spent by accruals: written with the members, not a reference table
}
#: Copied to every node: configuration and identities, small and rarely written.
REFERENCE = {
    "programs",
    "organizations",
    "segments",
    "segment_triggers",
    "webhook_endpoints",
    "earning_rules",
    "tier_ladders",
    "fraud_rule_settings",
    "leaderboards",
    "leaderboard_snapshots",
    "challenges",
    "rewards",
    "reward_segments",
    "reward_windows",
    "experiments",
    "churn_models",
    "admin_users",
    "admin_sessions",
    "api_keys",
    "relay_positions",
    "coupon_pools",
    "referral_programs",
}
#: Distributed tables keyed by a surrogate id from one sequence: `PRIMARY KEY (id)` now, turned
#: into `(program_id, id)` by the distribution step (docs/scaling.md). The first five are being
#: partitioned by month (migration 0018), which re-keys them.
SURROGATE_ID = {
    "events",
    "ledger_entries",
    "segment_changes",
    "messages",
    "outbox",
    "members",
    "points_lots",
    "fraud_findings",
    "fraud_devices",
    "standings_feed",
    "reward_redemptions",
    "audit_log",
    "coupon_codes",
    "referrals",
    "promotions",
}
#: Partitioned by month on PostgreSQL (migration 0018): the partition column follows the id in the key.
PARTITIONED_BY = {"events": ["occurred_at"], "segment_changes": ["at"]}
#: Unique keys of distributed tables without program_id -> the key they become at distribution.
UNIQUE_EXCEPTIONS = {
    ("ledger_entries", ("reverses_entry_id",)): ("program_id", "reverses_entry_id"),
    ("outbox", ("delivery_id",)): ("program_id", "delivery_id"),
}


def _tables() -> dict[str, Table]:
    return dict(Base.metadata.tables)


def _unique_keys(table: Table) -> list[tuple[str, ...]]:
    keys = [
        tuple(c.name for c in constraint.columns)
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    return keys + [tuple(c.name for c in index.columns) for index in table.indexes if index.unique]


def test_every_table_is_distributed_or_a_reference_table() -> None:
    assert not DISTRIBUTED & REFERENCE
    assert set(_tables()) == DISTRIBUTED | REFERENCE, "classify the new table in the Citus plan"


def test_every_table_with_members_is_distributed() -> None:
    with_members = {name for name, table in _tables().items() if "member_id" in table.c}
    assert with_members <= DISTRIBUTED


def test_distributed_tables_hold_program_id_in_their_keys() -> None:
    for name in sorted(DISTRIBUTED):
        table = _tables()[name]
        assert "program_id" in table.c, name
        assert not table.c.program_id.nullable, name
        primary = [c.name for c in table.primary_key.columns]
        if name in SURROGATE_ID:
            # (id) now; a partitioned table adds its partition column after it
            assert primary[0] == "id", f"{name}: a surrogate-id exception keyed otherwise: {primary}"
        else:
            assert "program_id" in primary, f"{name}: primary key {primary}"
        for key in _unique_keys(table):
            if "program_id" not in key:
                assert (name, key) in UNIQUE_EXCEPTIONS, f"{name}: unique key {key} without program_id"


def test_reference_tables_refer_to_no_distributed_table() -> None:
    """Citus refuses a foreign key from a reference table to a distributed one."""
    for name in sorted(REFERENCE):
        referred = {fk.referred_table.name for fk in _tables()[name].foreign_key_constraints}
        assert not referred & DISTRIBUTED, name


def test_the_documented_plan_names_every_table() -> None:
    doc = SCALING.read_text()
    distributed = set(re.findall(r"create_distributed_table\('(\w+)'", doc))
    reference = set(re.findall(r"create_reference_table\('(\w+)'", doc))
    assert distributed == DISTRIBUTED
    assert reference == REFERENCE
    for name in SURROGATE_ID | {table for table, _ in UNIQUE_EXCEPTIONS}:
        assert f"`{name}`" in doc, f"docs/scaling.md does not name the exception {name}"


# ------------------------------------------------------------------------- migration 0019 on data

SEED = [
    "INSERT INTO programs (id, key, name, kind, settings, created_at) "
    "VALUES (7, 'p', 'P', 'B2C', '{}', '2026-01-01 00:00:00+00')",
    "INSERT INTO members (id, program_id, external_id, kind, attributes, channels, joined_at, created_at, "
    "updated_at, points_balance, pending_points) VALUES (3, 7, 'm', 'PERSON', '{}', '[]', "
    "'2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', 0, 0)",
    "INSERT INTO segments (id, program_id, key, name, kind, created_at, updated_at) "
    "VALUES (5, 7, 's', 'S', 'STATIC', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')",
    "INSERT INTO segment_memberships (segment_id, member_id, since) VALUES (5, 3, '2026-01-02 00:00:00+00')",
    "INSERT INTO leaderboard_snapshots (id, program_id, label, board_key, scope, period, as_of, size, "
    "created_at) VALUES (9, 7, 'l', 'points', 'program', 'ALL_TIME', '2026-01-01 00:00:00+00', 1, "
    "'2026-01-01 00:00:00+00')",
    "INSERT INTO leaderboard_snapshot_entries (snapshot_id, rank, member_id, score, reached_at) "
    "VALUES (9, 1, 3, 10, '2026-01-01 00:00:00+00')",
]


def _primary_keys(url: str) -> dict[str, list[str]]:
    async def run() -> dict[str, list[str]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: {
                        name: inspect(sync).get_pk_constraint(name)["constrained_columns"]
                        for name in _tables()
                        if name in set(inspect(sync).get_table_names())  # tables of later revisions
                    }
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_0019_backfills_program_id_and_rekeys(database_url: str) -> None:
    # given a database at 0017 with a segment membership and a snapshot entry (no program_id yet)
    migrations.upgrade(database_url, "0017")
    run_sql(database_url, SEED)

    # when it is migrated to 0019
    migrations.upgrade(database_url, "0019")

    # then both rows carry their parent's program, and every primary key is the models' own, in order
    assert run_sql(database_url, [], "SELECT program_id, segment_id, member_id FROM segment_memberships") == [
        (7, 5, 3)
    ]
    assert run_sql(
        database_url, [], "SELECT program_id, snapshot_id, rank FROM leaderboard_snapshot_entries"
    ) == [(7, 9, 1)]
    keys = _primary_keys(database_url)
    partitioned = PARTITIONED_BY if database_url.startswith("postgresql") else {}
    assert keys == {
        name: [c.name for c in _tables()[name].primary_key.columns] + partitioned.get(name, [])
        for name in keys
    }
    # and a membership the new key would have to tell apart is still refused
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        run_sql(
            database_url,
            [
                "INSERT INTO segment_memberships (program_id, segment_id, member_id, since) "
                "VALUES (7, 5, 3, '2026-01-03 00:00:00+00')"
            ],
        )

    # and a downgrade to 0017 restores the old keys with the rows
    migrations.downgrade(database_url, "0017")
    keys = _primary_keys(database_url)
    assert keys["segment_memberships"] == ["segment_id", "member_id"]
    assert keys["event_aggregates"] == ["member_id", "event_type", "day"]
    assert run_sql(database_url, [], "SELECT segment_id, member_id FROM segment_memberships") == [(5, 3)]
