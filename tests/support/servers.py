"""Real server processes (`loyalty serve`) on the test database and Redis prefix, and a
graphql-transport-ws client for them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from domain.settings import Settings

PROTOCOL = "graphql-transport-ws"
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    port: int
    #: The `loyalty serve` process (tests that stop it themselves signal it).
    process: asyncio.subprocess.Process | None = field(default=None, compare=False)
    #: Where its stderr goes, when the caller asked for a file (`running_server(stderr_to=...)`).
    stderr_path: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    async def graphql(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.http, timeout=30) as http:
            response = await http.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {token}"},
            )
        body: dict[str, Any] = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    log_level: str = "warning",
    stderr_to: Path | None = None,
) -> AsyncIterator[Server]:
    """`loyalty serve` in its own process, on a free port, until the block ends; `environ` adds to
    or overrides the environment made from `settings`.

    Its stderr is a pipe read when it fails to start, or the file `stderr_to`.
    """
    port = free_port()
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": settings.database_url,
        "LOYALTY_REDIS_URL": settings.redis_url or "",
        "LOYALTY_REDIS_PREFIX": settings.redis_prefix,
        "LOYALTY_SECRET_KEY": settings.secret_key or "",
        "LOYALTY_DATA_DIR": str(settings.data_dir or ""),
        **(environ or {}),
    }
    stderr = stderr_to.open("wb") if stderr_to else None
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            log_level,
            "--workers",
            str(workers),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr or asyncio.subprocess.PIPE,
        )
    finally:
        if stderr is not None:
            stderr.close()  # the server process has its own descriptor
    server = Server(port, process, stderr_to)
    # a piped log is read all along: a server whose stderr pipe fills up (a long Redis outage) would block
    output: deque[bytes] = deque(maxlen=64)
    reading = asyncio.create_task(_keep(process, output))
    try:
        await _wait_ready(server, process, reading, output)
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reading


async def _keep(process: asyncio.subprocess.Process, output: deque[bytes]) -> None:
    if process.stderr is None:  # logging to a file
        return
    while chunk := await process.stderr.read(65536):
        output.append(chunk)


async def _wait_ready(
    server: Server, process: asyncio.subprocess.Process, reading: asyncio.Task[None], output: deque[bytes]
) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=2) as http:
        for _ in range(300):
            if process.returncode is not None:
                await asyncio.wait_for(asyncio.shield(reading), 10)  # its output, to the end
                logged = server.stderr_path.read_bytes() if server.stderr_path else b"".join(output)
                raise RuntimeError(f"the server exited: {logged.decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become ready within 30 s")


#: How long a test waits for a message that must come. Only a failing test waits it out, so it
#: is generous: two suites share 2 cores in `make test`, and a loaded machine delays delivery.
DELIVERY_S = 30.0


class Subscription:
    """One graphql-transport-ws connection with one subscription on it."""

    def __init__(self, connection: ClientConnection, operation: str) -> None:
        self.connection = connection
        self.operation = operation

    async def next(self, wait: float = DELIVERY_S) -> dict[str, Any]:
        """The next result's data; fails on an error message or after `wait` seconds."""
        while True:
            message = orjson.loads(await asyncio.wait_for(self.connection.recv(), wait))
            if message["type"] == "ping":
                await self.connection.send(orjson.dumps({"type": "pong"}).decode())
                continue
            assert message["type"] == "next", message
            assert message["id"] == self.operation, message
            assert "errors" not in message["payload"], message
            data: dict[str, Any] = message["payload"]["data"]
            return data

    async def message(self, wait: float = DELIVERY_S) -> dict[str, Any]:
        raw: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.connection.recv(), wait))
        return raw

    async def drain(self, into: list[dict[str, Any]]) -> None:
        """Read results into `into` until the connection closes (ConnectionClosed)."""
        while True:
            into.append(await self.next())


@contextlib.asynccontextmanager
async def subscribe(
    server: Server, payload: dict[str, Any], query: str, variables: dict[str, Any] | None = None
) -> AsyncIterator[Subscription]:
    """Connect, initialise with `payload`, subscribe to `query`; the caller reads with `next`."""
    async with connect(server.ws, subprotocols=[PROTOCOL]) as connection:  # type: ignore[list-item]
        await connection.send(orjson.dumps({"type": "connection_init", "payload": payload}).decode())
        ack = orjson.loads(await asyncio.wait_for(connection.recv(), DELIVERY_S))
        assert ack["type"] == "connection_ack", ack
        operation = str(next(_ids))
        await connection.send(
            orjson.dumps(
                {
                    "id": operation,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables or {}},
                }
            ).decode()
        )
        yield Subscription(connection, operation)
