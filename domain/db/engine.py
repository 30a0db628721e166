"""The async engine and the unit of work (one transaction, one commit)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None]]


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine for PostgreSQL (asyncpg) or SQLite (aiosqlite).

    On SQLite every transaction starts with BEGIN IMMEDIATE: writers queue on the
    database lock up front instead of failing when a read lock would be upgraded.
    """
    url = make_url(database_url)
    json_options: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **json_options)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **json_options
    )


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


_ANNOUNCED = "loyalty.announced"
_AFTER_COMMIT = "loyalty.after_commit"


def announce(session: AsyncSession, topic: str) -> None:
    """Say, once this session's transaction commits, that `topic` has news (wakes relays and workers).
    A commit's topics go out together, in one wake-up, before its `after_commit` callbacks run."""
    session.info.setdefault(_ANNOUNCED, set()).add(topic)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this session's transaction commits (in the order registered), never when it
    rolls back: metrics, and derived data (leaderboards). A failure is logged and never un-acknowledges
    the commit. The one registry of post-commit work besides `announce`; code that holds only the
    session uses it as code that holds the unit of work does."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


class UnitOfWork:
    """One transaction. Work registered with `after_commit` runs only once it has committed."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def after_commit(self, callback: AfterCommit) -> None:
        after_commit(self.session, callback)


class Database:
    """Owns the engine; hands out units of work and read sessions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        #: Called after a commit with the topics its transaction announced (see `announce`).
        self.on_commit: Callable[[set[str]], None] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self.sessions() as session:
            uow = UnitOfWork(session)
            async with session.begin():
                yield uow
            announced = session.info.pop(_ANNOUNCED, None)
            if announced and self.on_commit is not None:
                self.on_commit(announced)
            for callback in session.info.pop(_AFTER_COMMIT, ()):
                try:
                    await callback()
                except Exception:  # metrics, derived data: never un-acknowledges a commit
                    log.exception("after-commit callback failed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
