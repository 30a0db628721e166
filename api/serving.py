"""A server process's start and stop, for `loyalty serve` and `loyalty demo`.

The listening socket is bound first, so a taken port is a clear error before anything
starts; uvicorn then serves on it (its workers too). SIGINT and SIGTERM stop the server
gracefully: WebSockets are closed with 1012, requests still running get SHUTDOWN_GRACE_S,
then the app's lifespan stops the background loops. The caller's `finally` blocks run in
every case (the embedded Redis server is stopped there).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

import uvicorn
from uvicorn.supervisors import Multiprocess

from api.cli_errors import CommandError

#: Seconds a stopping server gives open requests and WebSockets before it cancels them.
SHUTDOWN_GRACE_S = 5


class Stopped(BaseException):
    """SIGTERM outside uvicorn's own handling (before it started, or re-raised after it stopped)."""


def listen(host: str, port: int) -> socket.socket:
    """The listening socket; PORT_IN_USE (naming the port and --port) when another program has it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            raise CommandError(
                "PORT_IN_USE",
                f"{shown} is already in use; choose another with --port (make demo PORT={port + 1})",
            ) from None
        raise CommandError("CANNOT_LISTEN", f"cannot listen on {shown}: {error.strerror or error}") from None
    listener.set_inheritable(True)  # worker processes serve on it too
    return listener


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM end the block (uvicorn handles them itself while it serves)."""

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(config: uvicorn.Config, listener: socket.socket) -> None:
    """Serve on `listener` until a signal stops the server."""
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", config.host, config.port
    )
    if config.workers > 1:
        Multiprocess(config, sockets=[listener]).run()
        return
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listener])
    except SystemExit:  # uvicorn's way out of a failed start-up, after logging why
        server.started = False
    if not server.started and not server.should_exit:
        raise CommandError("STARTUP_FAILED", "the server did not start; see the log lines above")
