"""The HTTP-level answers of the app, all JSON with a code: what strawberry and Starlette refuse
before GraphQL runs, the body's size (413) and time (408) bounds, and any exception that escapes
(503: SERVICE_UNAVAILABLE with Retry-After for a transient fault, else INTERNAL; never a 500).

GraphQL's own errors are api/errors.py's.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import RETRY_AFTER_S, UNAVAILABLE
from domain.transient import is_transient

log = logging.getLogger("api")


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extensions: object
) -> Response:
    return Response(
        orjson.dumps({"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def transport_code(status: int) -> str:
    return {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "BAD_REQUEST")


async def http_exception(_: Request, error: Exception) -> Response:
    """Starlette's own refusals (an unknown path, a method a route does not take) as JSON too."""
    assert isinstance(error, StarletteHTTPException)
    code = transport_code(error.status_code)
    return json_error(error.status_code, code, error.detail, dict(error.headers or {}))


def escaped(error: Exception) -> Response:
    """The answer to an exception no handler caught: retryable for a transient fault, else INTERNAL."""
    if is_transient(error):
        log.warning("request failed on a transient fault: %r", error)
        return json_error(
            503,
            "SERVICE_UNAVAILABLE",
            UNAVAILABLE,
            {"Retry-After": str(RETRY_AFTER_S)},
            retryAfter=RETRY_AFTER_S,
        )
    log.error("request failed outside GraphQL error handling", exc_info=error)
    return json_error(503, "INTERNAL", "Unexpected error.")


class Guard:
    """Every HTTP request: its whole body read first, within a size (413) and a time (408) bound,
    and any exception that escapes the app answered as JSON (503; never a 500 or a trace)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = json_error(413, "BAD_USER_INPUT", f"request body exceeds {self.max_body_bytes} bytes")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await too_large(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_s:g} s"
            await json_error(408, "REQUEST_TIMEOUT", message, {"Connection": "close"})(scope, receive, send)
            return
        except _BodyTooLarge:
            await too_large(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        started = False

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message: Message = {"type": "http.request", "body": body, "more_body": False}
                body = None
                return message
            return await receive()

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception as error:
            response = escaped(error)
            if not started:
                await response(scope, receive, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _BodyTooLarge(Exception):
    pass
