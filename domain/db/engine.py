"""The async engine and the unit of work (one transaction, its domain events, one commit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from domain.db.replica import Replica
from domain.messagebus import DomainEvent, MessageBus
from domain.segments.sqlite_functions import register as register_segment_functions

#: The execution option of read-only transactions (`Database.read`): on SQLite they begin DEFERRED,
#: without the write lock; a statement that writes in one may fail at once with "database is locked".
READ_ONLY = "loyalty_read_only"


def create_engine(
    database_url: str, *, pool_size: int = 10, connect_timeout_s: float | None = None
) -> AsyncEngine:
    """An engine for PostgreSQL (asyncpg) or SQLite (aiosqlite).

    On SQLite a writing transaction starts with BEGIN IMMEDIATE: writers queue on the
    database lock up front instead of failing when a read lock would be upgraded. A
    read-only one (`READ_ONLY`, what `Database.read` opens) starts with a plain BEGIN:
    in WAL mode it reads a snapshot without the write lock, so it neither waits for a
    writer nor holds one up (nor its own process's unit of work, were it opened inside one).
    `connect_timeout_s` bounds a new PostgreSQL connection (asyncpg's default is 60 s).
    """
    url = make_url(database_url)
    json_options: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **json_options)
        _configure_sqlite(engine)
        return engine
    connect_args = {} if connect_timeout_s is None else {"timeout": connect_timeout_s}
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=connect_args,
        **json_options,
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
        register_segment_functions(dbapi_connection)  # version 2 conditions: local dates, versions

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


_UOW = "loyalty.unit_of_work"


class UnitOfWork:
    """One transaction, and what it collected: domain events for the message bus, announce topics.

    `collect` queues a domain event; `dispatch` (run by `Database.unit_of_work` before the
    commit, or earlier by a service that wants its cascade at a given step) drains the queue
    through the bus. Once committed, the announced topics go out, then the handled events'
    after-commit handlers run.
    """

    def __init__(self, session: AsyncSession, bus: MessageBus) -> None:
        self.session = session
        self.bus = bus
        self.queued: list[DomainEvent] = []
        #: The events dispatched so far, in order: what the after-commit handlers see.
        self.handled: list[DomainEvent] = []
        self.announced: set[str] = set()
        self._depth = 0
        session.info[_UOW] = self

    @staticmethod
    def of(session: AsyncSession) -> UnitOfWork:
        """The unit of work that owns `session` (every writing session has one)."""
        uow = session.info.get(_UOW)
        if not isinstance(uow, UnitOfWork):
            raise RuntimeError("this session has no unit of work: open it with Database.unit_of_work()")
        return uow

    def collect(self, event: DomainEvent) -> None:
        """Queue a domain event; raised while a handler runs, it gets the depth the bus assigned."""
        if event.depth != self._depth:
            event = replace(event, depth=self._depth)  # type: ignore[type-var]
        self.queued.append(event)

    def take(self) -> list[DomainEvent]:
        taken, self.queued = self.queued, []
        return taken

    @contextmanager
    def raising_at(self, depth: int) -> Iterator[None]:
        """Events collected inside get `depth` (the bus sets it around each handler)."""
        outer, self._depth = self._depth, depth
        try:
            yield
        finally:
            self._depth = outer

    async def dispatch(self, *, rounds: int | None = None) -> None:
        await self.bus.dispatch(self, rounds=rounds)


def collect(session: AsyncSession, event: DomainEvent) -> None:
    """Queue a domain event in the unit of work of `session` (code that holds only the session)."""
    UnitOfWork.of(session).collect(event)


def announce(session: AsyncSession, topic: str) -> None:
    """Say, once this session's transaction commits, that `topic` has news (wakes relays and workers).
    A commit's topics go out together, in one wake-up, before its after-commit handlers run."""
    UnitOfWork.of(session).announced.add(topic)


class Database:
    """Owns the engine (and the read replica's, when there is one) and the message bus; hands out
    units of work and read sessions."""

    def __init__(
        self, engine: AsyncEngine, bus: MessageBus | None = None, replica: Replica | None = None
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        #: Sessions of read-only transactions (`read`): the same pool; on SQLite, without the write lock.
        self.read_sessions = session_factory(engine.execution_options(**{READ_ONLY: True}))
        self.bus = bus or MessageBus()
        #: LOYALTY_DATABASE_REPLICA_URL's streaming replica, which `lagging_read` prefers.
        self.replica = replica
        #: Called after a commit with the topics its transaction announced (see `announce`).
        self.on_commit: Callable[[set[str]], None] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self.sessions() as session:
            uow = UnitOfWork(session, self.bus)
            async with session.begin():
                yield uow
                await uow.dispatch()
            if uow.announced and self.on_commit is not None:
                self.on_commit(set(uow.announced))
            await self.bus.committed(uow.handled)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read transaction on the primary: it sees every commit acknowledged before it began.

        Read only: on SQLite it holds no write lock (a write in it fails when another one is under way)."""
        async with self.read_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def lagging_read(self) -> AsyncIterator[AsyncSession]:
        """A read transaction that may lag the primary by the replication delay: on the read replica
        when one is configured and answers, else on the primary (domain/db/replica.py).

        For reads that tolerate it and say so (docs/scaling.md, "Read replica", lists them): never
        a read that must see a write this client was just told had succeeded.
        """
        session = await self.replica.begin() if self.replica is not None else None
        if session is None:
            async with self.read() as primary:
                yield primary
            return
        async with session:  # closing it ends the read transaction
            yield session

    @asynccontextmanager
    async def snapshot_read(self) -> AsyncIterator[AsyncSession]:
        """A lagging read whose statements all see one snapshot (REPEATABLE READ on PostgreSQL; a
        SQLite read transaction is one snapshot already): for documents read in several queries."""
        async with self.lagging_read() as session:
            if self.dialect == "postgresql":
                await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.replica is not None:
            await self.replica.dispose()
