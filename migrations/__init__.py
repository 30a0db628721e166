"""Alembic revisions and the programmatic `upgrade`/`check` used by the CLI and tests."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent

log = logging.getLogger(__name__)


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
    """Raise NotMigrated when the database has no revision or is behind the newest one this version
    knows. A revision this version does not know is a newer release's: every revision only adds
    (docs/operations.md, "Upgrades"), so this version runs on it, with a warning, as an old process
    does while a rolling upgrade runs or after a rollback."""

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
        log.warning(
            "the database is at revision %s, newer than this version of loyalty knows (%s): "
            "running on it, as during a rolling upgrade",
            ", ".join(sorted(current - known)),
            ", ".join(sorted(heads)),
        )
        return
    raise NotMigrated(
        f"the database is at revision {', '.join(sorted(current))}, not the newest "
        f"({', '.join(sorted(heads))}): run `loyalty db upgrade`"
    )
