"""A running server whose PostgreSQL or Redis goes away answers with a retryable code, and recovers.

The outage is real: the server reaches its database (or Redis) through a TCP proxy that the test
cuts, so pooled connections break and new ones are refused.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from domain.settings import Settings
from tests.support.backends import PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT, Backends
from tests.support.graphql import ProgramFixture
from tests.support.proxy import tcp_proxy
from tests.support.servers import running_server

PROGRAM = {"query": "{ program { key } }"}
LOGIN = {
    "query": 'mutation { login(email: "nobody@example.com", password: "wrong", totpCode: "000000") { token } }'
}
UNAVAILABLE = {
    "message": "the service is temporarily unavailable; retry in 5 s",
    "extensions": {"code": "SERVICE_UNAVAILABLE", "retryAfter": 5},
}


async def test_a_database_outage_is_a_retryable_503_until_it_ends(
    settings: Settings, backends: Backends, program: ProgramFixture
) -> None:
    if not backends.pg_database:
        pytest.skip("the outage is drilled on PostgreSQL (SQLite is a file)")
    auth = {"Authorization": f"Bearer {program.api_key}"}
    async with tcp_proxy(PG_HOST, PG_PORT) as database:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{database.port}/{backends.pg_database}"
        async with (
            running_server(settings, {"LOYALTY_DATABASE_URL": url, "LOYALTY_BACKGROUND": "0"}) as server,
            httpx.AsyncClient(base_url=server.http, timeout=30) as http,
        ):
            assert (await http.post("/graphql", json=PROGRAM, headers=auth)).status_code == 200
            await database.cut()

            # the API key is checked before GraphQL runs: this was a plain-text 500
            refused = await http.post("/graphql", json=PROGRAM, headers=auth)
            assert (refused.status_code, refused.headers["retry-after"], refused.json()) == (
                503,
                "5",
                {"errors": [UNAVAILABLE]},
            )
            # without a token GraphQL runs, and the resolver's failure was INTERNAL
            assert _errors(await http.post("/graphql", json=LOGIN)) == [UNAVAILABLE]

            await database.restore()
            recovered = await http.post("/graphql", json=PROGRAM, headers=auth)
            assert (recovered.status_code, recovered.json()) == (
                200,
                {"data": {"program": {"key": program.key}}},
            )


async def test_a_redis_outage_is_retryable(settings: Settings, backends: Backends) -> None:
    if not backends.redis_url:
        pytest.skip("the outage is drilled on a Redis server (the embedded one listens on a file)")
    async with (
        tcp_proxy(REDIS_HOST, REDIS_PORT) as redis,
        running_server(settings, {"LOYALTY_REDIS_URL": redis.redis_url, "LOYALTY_BACKGROUND": "0"}) as server,
        httpx.AsyncClient(base_url=server.http, timeout=30) as http,
    ):
        await redis.cut()
        assert _errors(await http.post("/graphql", json=LOGIN)) == [UNAVAILABLE]


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    """The errors of a GraphQL response, without their locations and paths."""
    assert response.status_code == 200, response.text
    return [{"message": e["message"], "extensions": e["extensions"]} for e in response.json()["errors"]]
