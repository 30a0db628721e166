"""Fixtures: one migrated database and Redis prefix per run, the app over HTTP, fresh programs per test."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import hypothesis
import pytest
from starlette.types import ASGIApp

import migrations
from api.app import create_app
from api.runtime import Services, build_services
from domain.auth import secrets as crypto
from domain.settings import Settings
from tests.backends import Backends, choose, create_pg_database, drop_pg_database
from tests.support import ShiftableClock

# Timing varies on a shared 2-core machine: examples may be slow, never flaky.
hypothesis.settings.register_profile(
    "loyalty", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("loyalty")

BACKENDS: Backends = choose()
SECRET = "test-secret-key-" + "x" * 32
_counter = itertools.count(1)


def pytest_report_header() -> str:
    return f"loyalty backends: {BACKENDS.description}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"loyalty backends: {BACKENDS.description}")


@pytest.fixture(scope="session")
def backends() -> Backends:
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
def settings(backends: Backends, migrated_database: str) -> Settings:
    return Settings(
        database_url=migrated_database,
        redis_url=backends.redis_url,
        redis_prefix=backends.redis_prefix,
        secret_key=SECRET,
        data_dir=backends.data_dir,
    )


@pytest.fixture(scope="session")
def session_clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture
def clock(session_clock: ShiftableClock) -> Iterator[ShiftableClock]:
    yield session_clock
    session_clock.reset()


@pytest.fixture(scope="session")
async def services(settings: Settings, session_clock: ShiftableClock) -> AsyncIterator[Services]:
    built = build_services(settings, clock=session_clock)
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
    transport = httpx.ASGITransport(
        app=app, client=(f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", 5555)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass
class ProgramFixture:
    id: int
    key: str
    api_key: str
    admin_email: str
    admin_password: str
    totp_secret: str


class GraphQLClient:
    """Posts operations to /graphql as one caller."""

    def __init__(self, http: httpx.AsyncClient, token: str | None) -> None:
        self.http = http
        self.token = token

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, (response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.execute(query, variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def error(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The single error of an operation that must fail."""
        body = await self.execute(query, variables)
        assert body.get("errors"), body
        error: dict[str, Any] = body["errors"][0]
        return error


async def new_program(services: Services, *, kind: str = "B2C", auto_create: bool = False) -> ProgramFixture:
    from domain.programs.service import ProgramSettings

    key = f"p{next(_counter)}-{BACKENDS.redis_prefix.split(':')[1]}"
    program = await services.programs.create_program(
        key, f"Program {key}", kind, ProgramSettings(auto_create_members=auto_create)
    )
    email = f"admin-{key}@example.com"
    password = "correct horse battery"
    admin = await services.auth.create_admin(key, email, password)
    api_key = await services.auth.create_api_key(key, "pos", None)
    return ProgramFixture(program.id, key, api_key.key, email, password, admin.totp_secret)


@pytest.fixture
async def program(services: Services) -> ProgramFixture:
    return await new_program(services)


@pytest.fixture
def integration(client: httpx.AsyncClient, program: ProgramFixture) -> GraphQLClient:
    """The program's POS/ERP integration (API key with the default scopes)."""
    return GraphQLClient(client, program.api_key)


async def admin_token(client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock) -> str:
    """Log the program's admin in; moves the clock a TOTP step on so each call gets a fresh code."""
    clock.shift(timedelta(seconds=crypto.TOTP_STEP_S))
    code = crypto.code_at(program.totp_secret, clock.now().timestamp())
    data = await GraphQLClient(client, None).data(
        "mutation($e: String!, $p: String!, $c: String!) { login(email: $e, password: $p, totpCode: $c) { token } }",
        {"e": program.admin_email, "p": program.admin_password, "c": code},
    )
    token: str = data["login"]["token"]
    return token


@pytest.fixture
async def admin(client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock) -> GraphQLClient:
    return GraphQLClient(client, await admin_token(client, program, clock))
