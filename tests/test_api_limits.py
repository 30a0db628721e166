"""The API never answers with a 500 or a stack trace, and refuses queries that are too expensive."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.exceptions
import sqlalchemy.exc

from api.runtime import Services
from domain.transient import is_transient
from tests.support.graphql import GraphQLClient


async def test_too_deep_is_query_too_complex(integration: GraphQLClient) -> None:
    deep = "{ members { edges { node { organization { members { edges { node { organization { members { edges { node { id } } } } } } } } } } } }"
    error = await integration.error(deep)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert "exceeds maximum operation depth of 10" in error["message"]


async def test_too_many_aliases_is_query_too_complex(integration: GraphQLClient) -> None:
    query = "{ " + " ".join(f"a{i}: program {{ key }}" for i in range(31)) + " }"
    error = await integration.error(query)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_too_many_tokens_is_query_too_complex(integration: GraphQLClient) -> None:
    query = "{ program { " + "key " * 6000 + "} }"
    error = await integration.error(query)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_large_nested_pages_exceed_the_cost_limit(integration: GraphQLClient) -> None:
    query = "{ members(first: 500) { edges { node { ledger(first: 500) { edges { node { id points reason } } } } } } }"
    error = await integration.error(query)
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error["message"].startswith("query cost ")


async def test_a_syntax_error_is_bad_input(integration: GraphQLClient) -> None:
    error = await integration.error("{ program { key ")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("Syntax Error")


async def test_an_unknown_field_is_bad_input(integration: GraphQLClient) -> None:
    error = await integration.error("{ program { colour } }")
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "colour" in error["message"]


async def test_an_unexpected_failure_is_masked(
    integration: GraphQLClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*_: object) -> None:
        raise RuntimeError("connection string postgres://secret@db leaked")

    monkeypatch.setattr(services.programs, "get", explode)
    body = await integration.execute("{ program { key } }")
    assert body["errors"] == [
        {
            "message": "Unexpected error.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["program"],
            "extensions": {"code": "INTERNAL"},
        }
    ]


@pytest.mark.parametrize(
    "transient",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "Connection refused")),
        sqlalchemy.exc.TimeoutError("QueuePool limit of size 20 overflow 20 reached"),
        sqlalchemy.exc.DBAPIError("SELECT 1", {}, asyncpg.exceptions.CannotConnectNowError("starting up")),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
    ],
    ids=[
        "redis-refused",
        "redis-timeout",
        "database-refused",
        "pool-exhausted",
        "database-starting",
        "os-error",
    ],
)
async def test_a_transient_fault_is_retryable_and_not_internal(
    integration: GraphQLClient, services: Services, monkeypatch: pytest.MonkeyPatch, transient: Exception
) -> None:
    async def unavailable(*_: object) -> None:
        raise transient

    monkeypatch.setattr(services.programs, "get", unavailable)
    body = await integration.execute("{ program { key } }")
    assert body["errors"] == [
        {
            "message": "the service is temporarily unavailable; retry in 5 s",
            "locations": [{"line": 1, "column": 3}],
            "path": ["program"],
            "extensions": {"code": "SERVICE_UNAVAILABLE", "retryAfter": 5},
        }
    ]


async def test_a_bug_raised_while_handling_a_transient_fault_is_internal(
    integration: GraphQLClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`raise ... from None` in an except block hides the outage: retrying would only repeat the bug."""

    async def buggy_fallback(*_: object) -> None:
        try:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        except redis.exceptions.ConnectionError:
            raise KeyError("a bug in the fallback") from None

    monkeypatch.setattr(services.programs, "get", buggy_fallback)
    body = await integration.execute("{ program { key } }")
    assert [error["extensions"] for error in body["errors"]] == [{"code": "INTERNAL"}]


def wrap_outage(explicit: bool) -> None:
    """Raise RuntimeError from a Redis outage (`raise ... from`), or while handling it."""
    outage = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
    try:
        raise outage
    except redis.exceptions.ConnectionError:
        if explicit:
            raise RuntimeError("wrapped") from outage
        raise RuntimeError("wrapped")  # noqa: B904 - the implicit context is what is tested


@pytest.mark.parametrize("explicit", [True, False], ids=["raised-from", "raised-while-handling"])
def test_an_error_raised_from_or_while_handling_an_outage_is_transient(explicit: bool) -> None:
    with pytest.raises(RuntimeError) as wrapped:
        wrap_outage(explicit)
    assert is_transient(wrapped.value)


async def test_a_fault_before_graphql_runs_is_a_json_503(
    integration: GraphQLClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authentication runs before GraphQL's error handling: a database outage there was a plain 500."""

    async def unreachable(*_: object) -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    monkeypatch.setattr(services.auth, "authenticate", unreachable)
    response = await integration.http.post(
        "/graphql",
        json={"query": "{ program { key } }"},
        headers={"Authorization": f"Bearer {integration.token}"},
    )
    assert (response.status_code, response.headers["retry-after"], response.json()) == (
        503,
        "5",
        {
            "errors": [
                {
                    "message": "the service is temporarily unavailable; retry in 5 s",
                    "extensions": {"code": "SERVICE_UNAVAILABLE", "retryAfter": 5},
                }
            ]
        },
    )

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services.auth, "authenticate", broken)
    response = await integration.http.post(
        "/graphql",
        json={"query": "{ program { key } }"},
        headers={"Authorization": f"Bearer {integration.token}"},
    )
    assert (response.status_code, "retry-after" in response.headers, response.json()) == (
        503,
        False,
        {"errors": [{"message": "Unexpected error.", "extensions": {"code": "INTERNAL"}}]},
    )


async def test_a_request_that_is_not_json_gets_a_clear_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.text


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"null", "null"), (b"123", "a number"), (b"true", "a boolean"), (b'"string"', "a string")],
)
async def test_a_body_that_is_not_a_json_object_is_a_json_400(
    client: httpx.AsyncClient, body: bytes, kind: str
) -> None:
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (
        400,
        {
            "errors": [
                {
                    "message": f'expected a JSON object such as {{"query": "{{ program {{ key }} }}"}}, got {kind}',
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ]
        },
    )


@pytest.mark.parametrize(
    ("method", "path", "content", "content_type", "status", "error"),
    [
        ("POST", "/graphql", b"{not json", "application/json", 400, "Unable to parse request body as JSON"),
        ("POST", "/graphql", b"{}", "application/json", 400, "No GraphQL query found in the request"),
        ("POST", "/graphql", b"{ program { key } }", "text/plain", 400, "Unsupported content type"),
        ("POST", "/graphql", b"[]", "application/json", 400, "Batching is not enabled"),
        ("GET", "/graphql?query={program{key}}", b"", "", 400, "queries are not allowed when using GET"),
        ("PUT", "/graphql", b"", "", 405, "Method Not Allowed"),
        ("GET", "/nowhere", b"", "", 404, "Not Found"),
    ],
)
async def test_transport_errors_are_json_with_a_code(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    content: bytes,
    content_type: str,
    status: int,
    error: str,
) -> None:
    headers = {"content-type": content_type, "accept": "application/json"} if content_type else {}
    response = await client.request(method, path, content=content, headers=headers)
    code = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}[status]
    assert (response.status_code, response.headers["content-type"], response.json()) == (
        status,
        "application/json",
        {"errors": [{"message": error, "extensions": {"code": code}}]},
    )


async def test_an_oversize_body_is_refused_before_parsing(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "errors": [
            {"message": "request body exceeds 8388608 bytes", "extensions": {"code": "BAD_USER_INPUT"}}
        ]
    }


async def test_an_oversize_chunked_body_is_refused_as_json(client: httpx.AsyncClient) -> None:
    """Without a Content-Length, the limit tripped inside Starlette, whose error page (a plain 500) won."""

    async def ten_megabytes() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    response = await client.post(
        "/graphql", content=ten_megabytes(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()) == (
        413,
        {
            "errors": [
                {"message": "request body exceeds 8388608 bytes", "extensions": {"code": "BAD_USER_INPUT"}}
            ]
        },
    )


async def test_batching_is_off(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json=[{"query": "{ program { key } }"}, {"query": "{ program { key } }"}]
    )
    assert 400 <= response.status_code < 500


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    body = ready.json()
    warnings = body.pop("warnings")  # risks that do not make it unready: tests/test_statistics.py
    assert (ready.status_code, body) == (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}})
    assert isinstance(warnings, list)


async def test_graphiql_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
