"""A request id for every HTTP request and WebSocket connection, in its log lines and its response.

An incoming `X-Request-ID` is kept when it is 1-64 characters of letters, digits
and `._:-` (it comes from anyone: anything else is replaced, never echoed);
otherwise a random one is made. The id is bound in the log context for the
whole request or connection (domain/ops/logcontext.py) and returned in the
`X-Request-ID` response header (on a WebSocket, in the handshake's answer).
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.ops import logcontext

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def accepted_id(value: bytes | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if value is not None and _VALID.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


class RequestId:
    """Outermost ASGI layer: binds the id, then adds it to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = [v for k, v in scope.get("headers") or [] if k == HEADER]
        request_id = accepted_id(incoming[0] if len(incoming) == 1 else None)
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        with logcontext.bound(request_id=request_id):
            await self.app(scope, receive, send_with_id)
