"""graphql-transport-ws subscriptions to the app in this process, through ASGI without a socket:
for tests that need many subscribers and a hand on the app's own services (the live bus)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.types import ASGIApp, Message

_connections = itertools.count(1)


class InProcessSubscription:
    """One connection with one subscription, driven through the ASGI app's websocket interface."""

    def __init__(self, app: ASGIApp, token: str, query: str, variables: dict[str, Any] | None) -> None:
        n = next(_connections)
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribe = orjson.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}
        ).decode()
        self.acknowledged = asyncio.Event()
        #: (code, reason) once the server closed the connection.
        self.closed: tuple[int, str] | None = None
        self._inbox.put_nowait({"type": "websocket.connect"})
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        self._inbox.put_nowait({"type": "websocket.receive", "text": orjson.dumps(init).decode()})
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"sec-websocket-protocol", b"graphql-transport-ws")],
            "subprotocols": ["graphql-transport-ws"],
            "client": (f"10.250.{n // 256 % 256}.{n % 256}", 40000 + n % 20000),
            "server": ("testserver", 80),
        }
        self._task: asyncio.Task[None] = asyncio.create_task(self._serve(app, scope))

    async def _serve(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        await app(scope, self._inbox.get, self._send)

    async def _send(self, message: Message) -> None:
        if message["type"] == "websocket.close":
            self.closed = (message.get("code", 1000), message.get("reason", ""))
            self._frames.put_nowait({"type": "closed"})
        elif message["type"] == "websocket.send":
            frame = orjson.loads(message.get("text") or message["bytes"])
            if frame["type"] == "connection_ack":
                self.acknowledged.set()
                self._inbox.put_nowait({"type": "websocket.receive", "text": self._subscribe})
            else:
                self._frames.put_nowait(frame)

    async def next(self, wait: float = 10) -> dict[str, Any]:
        """The next result's data; fails on anything else (an error, a close) or after `wait` seconds."""
        frame = await asyncio.wait_for(self._frames.get(), wait)
        assert frame["type"] == "next", (frame, self.closed)
        assert "errors" not in frame["payload"], frame
        data: dict[str, Any] = frame["payload"]["data"]
        return data

    def pending(self) -> int:
        """Frames received and not read yet."""
        return self._frames.qsize()

    async def close(self) -> None:
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 10)


@contextlib.asynccontextmanager
async def subscribed(
    app: ASGIApp, token: str, query: str, variables: list[dict[str, Any] | None]
) -> AsyncIterator[list[InProcessSubscription]]:
    """One subscription per entry of `variables`, each acknowledged, all closed at the end. The
    subscriptions may not have reached the live bus yet: wait for `LiveBus.subscriber_count`."""
    subscriptions = [InProcessSubscription(app, token, query, v) for v in variables]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.acknowledged.wait() for s in subscriptions)), 30)
        yield subscriptions
    finally:
        await asyncio.gather(*(s.close() for s in subscriptions))
