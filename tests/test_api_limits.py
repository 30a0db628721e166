"""The API never answers with a 500 or a stack trace, and refuses queries that are too expensive."""

from __future__ import annotations

import httpx
import pytest

from api.runtime import Services
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


async def test_a_request_that_is_not_json_gets_a_clear_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.text


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
