"""A client that sends its request slowly is answered 408 and disconnected, not held open.

Against a real `loyalty serve` over raw sockets, with both bounds set to 1 s: each connection must
be closed by the server within 10 s (before the bounds it stayed open for as long as the client
liked).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from domain.settings import Settings
from tests.support.servers import Server, running_server

CLOSED_WITHIN_S = 10


@pytest.fixture(scope="module")
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with running_server(
        settings, {"LOYALTY_HEADER_TIMEOUT": "1", "LOYALTY_BODY_TIMEOUT": "1"}
    ) as running:
        yield running


async def _answer_until_closed(server: Server, sent: bytes) -> bytes:
    """Send `sent` and nothing more; everything the server answers until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(sent)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)
    finally:
        writer.close()


def _json_error(answer: bytes) -> tuple[str, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    error: dict[str, object] = orjson.loads(body)["errors"][0]
    return head.split(b"\r\n")[0].decode(), error


async def test_a_request_head_that_never_ends_is_cut_off(server: Server) -> None:
    answer = await _answer_until_closed(server, b"POST /graphql HTTP/1.1\r\nHost: loyalty\r\nX-Slow: 1")
    assert _json_error(answer) == (
        "HTTP/1.1 408 Request Timeout",
        {"message": "request head not received within 1 s", "extensions": {"code": "REQUEST_TIMEOUT"}},
    )


async def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    assert await _answer_until_closed(server, b"") == b""


async def test_a_body_that_never_ends_is_cut_off(server: Server) -> None:
    head = b"POST /graphql HTTP/1.1\r\nHost: loyalty\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    answer = await _answer_until_closed(server, head + b'{"query": ')
    assert _json_error(answer) == (
        "HTTP/1.1 408 Request Timeout",
        {"message": "request body not received within 1 s", "extensions": {"code": "REQUEST_TIMEOUT"}},
    )
