"""Fault drills against real Redis: a redis-server of the test's own that it stops and starts again on
the same port, and a TCP link that cuts a server process off from Redis while others still reach it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

from tests.support.servers import free_port

#: Generous bound for a process to start, stop or accept connections on a loaded 2-core machine.
WITHIN_S = 30


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = WITHIN_S) -> bool:
    """Poll `check()` (sync or async) every 50 ms until it is true (True) or `within` s pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, within: float = WITHIN_S) -> None:
    """`eventually`, failing with `what` when it does not come within `within` s."""
    if not await eventually(check, within):
        raise AssertionError(f"not within {within} s: {what}")


class RedisServer:
    """Debian's redis-server on a free loopback port, without persistence: a restart starts empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = tempfile.mkdtemp(prefix="loyalty-outage-redis-")
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await until(lambda: not refuses(self.port), f"redis-server listening on {self.port}")

    async def stop(self) -> None:
        """Kill it (an outage, not a shutdown) and wait until the port refuses connections."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await asyncio.wait_for(self._process.wait(), WITHIN_S)
        self._process = None
        await until(lambda: refuses(self.port), f"port {self.port} refusing connections")


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


class Link:
    """A TCP relay from a free local port to `target_port`; `cut` drops every connection through it and
    refuses new ones until `mend`. A process that reaches Redis through it sees an outage of its own."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._listener: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def mend(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await until(lambda: refuses(self.port), f"port {self.port} refusing connections")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._pipes.discard(task)
            return
        try:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
        finally:
            for end in (writer, upstream_writer):
                end.transport.abort()
            self._pipes.discard(task)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
    sink.transport.abort()  # one side closed: the whole connection goes, as a dropped link would


@contextlib.asynccontextmanager
async def link(target_port: int) -> AsyncIterator[Link]:
    opened = Link(target_port)
    await opened.mend()
    try:
        yield opened
    finally:
        await opened.cut()
