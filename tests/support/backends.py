"""Which database and Redis the suite runs against, chosen once per run.

PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 when reachable (a
fresh database and a fresh key prefix per run), else SQLite and embedded Redis.
LOYALTY_TEST_BACKEND=sqlite forces the embedded pair. LOYALTY_TEST_REDIS=cluster (`make test-scale`)
runs the app's Redis on a Redis Cluster the run starts itself (tests/support/redis_cluster.py): its
address is known once the session fixture `redis_cluster` started it, so the `backends` fixture
(tests/conftest.py) fills it in with `on_cluster`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RUN_ID = uuid.uuid4().hex[:10]
#: LOYALTY_TEST_REDIS=cluster: the app's Redis is a Redis Cluster started by the run.
CLUSTER = "cluster"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Backends:
    database_url: str
    redis_url: str | None  # None: embedded
    redis_prefix: str
    data_dir: Path
    pg_database: str | None
    #: A Redis Cluster started by the run (`redis_url` is its address once started).
    redis_cluster: bool = False

    @property
    def description(self) -> str:
        database = f"PostgreSQL (database {self.pg_database})" if self.pg_database else "SQLite (fallback)"
        if self.redis_cluster:
            redis = "a Redis Cluster started by the run (3 masters, 3 replicas)"
        else:
            redis = "Redis at 127.0.0.1:6379" if self.redis_url else "embedded Redis (fallback)"
        return f"{database} + {redis}, key prefix {self.redis_prefix}"

    def on_cluster(self, url: str) -> Backends:
        """These backends with the app's Redis on the cluster at `url`."""
        return replace(self, redis_url=url)


def choose() -> Backends:
    forced_sqlite = os.environ.get("LOYALTY_TEST_BACKEND") == "sqlite"
    data_dir = Path(tempfile.mkdtemp(prefix=f"loyalty-test-{RUN_ID}-"))
    if not forced_sqlite and reachable(PG_HOST, PG_PORT):
        name = f"loyalty_test_{RUN_ID}"
        database_url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
        pg_database: str | None = name
    else:
        database_url = f"sqlite+aiosqlite:///{data_dir / 'test.db'}"
        pg_database = None
    on_cluster = os.environ.get("LOYALTY_TEST_REDIS") == CLUSTER
    redis_url = (
        f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
        if not forced_sqlite and not on_cluster and reachable(REDIS_HOST, REDIS_PORT)
        else None
    )
    return Backends(database_url, redis_url, f"test:{RUN_ID}:", data_dir, pg_database, on_cluster)


async def _run_on_maintenance_database(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_pg_database(name: str) -> None:
    await _run_on_maintenance_database(f'CREATE DATABASE "{name}"')


async def drop_pg_database(name: str) -> None:
    await _run_on_maintenance_database(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(backends: Backends, name: str) -> Iterator[str]:
    """A migrated database of its own, beside the run's (PostgreSQL) or in its data dir (SQLite), for
    tests that must know every row in it; dropped afterwards. Call it outside the event loop."""
    import migrations

    pg_database = f"{backends.pg_database}_{name}" if backends.pg_database else None
    if pg_database:
        asyncio.run(create_pg_database(pg_database))
        url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{pg_database}"
    else:
        url = f"sqlite+aiosqlite:///{backends.data_dir / f'{name}.db'}"
    try:
        migrations.upgrade(url)
        yield url
    finally:
        if pg_database:
            asyncio.run(drop_pg_database(pg_database))
