"""uvicorn's HTTP protocol with a bound on the time a client takes to send a request's head.

uvicorn closes idle keep-alive connections, but a client that connects and then sends its
request line and headers slowly (or never) holds the connection open for as long as it
likes. Here the head must be complete within LOYALTY_HEADER_TIMEOUT seconds of the
connection opening (or of the first byte of a later request on it); otherwise the client is
answered 408 (when it had begun a request) and disconnected. The body's bound is the
Guard's (api/http_errors.py), which sees the body arrive.

uvicorn builds this protocol in each worker, without the app's settings: the timeout is read
from that worker's environment, once (api/serving.py writes the command's settings there).
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from domain.settings import Settings


@cache
def _head_timeout_s() -> int:
    return Settings.from_env().header_timeout_s


class HeadTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._head_begun = False
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(_head_timeout_s(), self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        idle = self.cycle is None or self.cycle.response_complete  # never cut into a response
        if self._head_begun and idle:
            self.transport.write(_timeout_response(_head_timeout_s()))
        self.transport.close()


def _timeout_response(seconds: int) -> bytes:
    message = f"request head not received within {seconds} s"
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": "REQUEST_TIMEOUT"}}]})
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
