"""A request id for every HTTP request and WebSocket connection, in its log lines and its response,
and the client's address, resolved once for everything that handles the request.

An incoming `X-Request-ID` is kept when it is 1-64 characters of letters, digits
and `._:-` (it comes from anyone: anything else is replaced, never echoed);
otherwise a random one is made. The id is bound in the log context for the
whole request or connection (domain/ops/logcontext.py) and returned in the
`X-Request-ID` response header (on a WebSocket, in the handshake's answer).

The client's address (api/client_ip.py: the TCP peer, or what a trusted proxy forwarded)
is bound in the log context as `client_ip` and replaces the peer in the ASGI scope's
`client` (with port 0 when a proxy named it, as uvicorn's own --proxy-headers does), so
uvicorn's access line, `request.client` and the GraphQL context all name the client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.client_ip import Network, client_ip
from domain.ops import logcontext

HEADER = b"x-request-id"
FORWARDED_FOR = b"x-forwarded-for"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def accepted_id(value: bytes | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if value is not None and _VALID.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


class RequestId:
    """Outermost ASGI layer: resolves the client's address and binds it and the id, then adds the id
    to the response's headers. `trusted` are the proxies whose X-Forwarded-For is believed."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        incoming = [v for k, v in headers if k == HEADER]
        request_id = accepted_id(incoming[0] if len(incoming) == 1 else None)
        peer = scope.get("client")
        forwarded = [v.decode("latin-1") for k, v in headers if k == FORWARDED_FOR]
        address = client_ip(peer[0] if peer else None, forwarded, self.trusted)
        if peer and address != peer[0]:
            scope["client"] = (address, 0)
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        with logcontext.bound(request_id=request_id, client_ip=address):
            await self.app(scope, receive, send_with_id)
