"""Alembic revisions and the programmatic `upgrade`/`check` used by the CLI and tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent


class NotMigrated(Exception):
    """The database is not at this version's newest revision."""

    code = "NOT_MIGRATED"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raise when the models and the migrated database differ (`alembic check`)."""
    command.check(alembic_config(database_url))


async def require_current(engine: AsyncEngine) -> None:
    """Raise NotMigrated unless the database is at the newest revision this version knows."""

    def revisions(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as connection:
        current = await connection.run_sync(revisions)
    script = ScriptDirectory(str(ROOT))
    heads = set(script.get_heads())
    if current == heads:
        return
    if not current:
        raise NotMigrated("the database is not migrated: run `loyalty db upgrade`")
    known = {revision.revision for revision in script.walk_revisions()}
    if current - known:
        raise NotMigrated(
            f"the database is at revision {', '.join(sorted(current - known))}, which this version of "
            "loyalty does not know: run the newer version, or restore a matching backup"
        )
    raise NotMigrated(
        f"the database is at revision {', '.join(sorted(current))}, not the newest "
        f"({', '.join(sorted(heads))}): run `loyalty db upgrade`"
    )
