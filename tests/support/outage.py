"""Fault drills against real Redis: a redis-server of the test's own that it stops and starts again on
the same port (tests/support/proxy.py cuts one process off from it while others still reach it), and
bounded polling for what a drill waits on."""

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
