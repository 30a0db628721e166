"""A server process's start and stop, for `loyalty serve` and `loyalty demo`.

The listening socket is bound first, so a taken port is a clear error before anything
starts; the embedded Redis server (when no LOYALTY_REDIS_URL is set) is started by this
process, so workers come and go without it; uvicorn then serves on the socket (its workers
too). SIGINT and SIGTERM stop the server
gracefully: WebSockets are closed with 1012, requests still running get SHUTDOWN_GRACE_S,
then the app's lifespan stops the background loops. The caller's `finally` blocks run in
every case (the embedded Redis server is stopped there).

uvicorn builds the app (and its HTTP protocol) in each worker from the environment
(`Settings.from_env()`), so `serve` first writes into it what the command decided beyond
the environment (`loyalty demo`'s generated secret key and its introspection): the
`settings` it is given are the ones the workers run with.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import NoReturn

import uvicorn
from uvicorn.supervisors import Multiprocess

from api.cli_errors import CommandError
from api.logs import uvicorn_config
from domain import embedded_redis
from domain.settings import ConfigurationError, Settings

#: Seconds a stopping server gives open requests and WebSockets before it cancels them.
SHUTDOWN_GRACE_S = 5
#: Seconds uvicorn's supervisor (--workers > 1) waits for a worker to answer its health ping before
#: it kills and restarts it. uvicorn's 5 s is less than a worker takes to import the app on a busy
#: machine (52 s at load average 13): every worker was killed while starting, again and again, and
#: the server never answered.
WORKER_HEALTHCHECK_S = 120


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    workers: int
    log_level: str


def serve(
    settings: Settings, options: Options, embedded_dir: Path | None, listener: socket.socket | None = None
) -> None:
    """Serve the app until SIGINT or SIGTERM, on `listener` (bound here when None), with the
    embedded Redis server of `embedded_dir` when given."""
    _export(settings)
    with stopped_by_signals(), _metrics_directory(options.workers):
        listener = listener or listen(options.host, options.port)
        embedded = None
        try:
            if embedded_dir is not None:
                embedded = embedded_redis.acquire(embedded_dir)
            config = uvicorn.Config(
                "api.app:create_app",
                factory=True,
                host=options.host,
                port=options.port,
                workers=options.workers,
                log_level=options.log_level,
                log_config=uvicorn_config(settings.log_format, options.log_level),
                proxy_headers=False,  # X-Forwarded-For is read by the app, from LOYALTY_TRUSTED_PROXIES only
                http="api.http_protocol:HeadTimeoutProtocol",  # bounds a slow client's request head
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            )
            run(config, listener)
        finally:
            listener.close()
            if embedded is not None:
                embedded_redis.release(embedded)


def _export(settings: Settings) -> None:
    """Write `settings` where the workers read theirs: the variables the command may have decided
    itself; every other setting already comes from this environment (checked)."""
    os.environ["LOYALTY_SECRET_KEY"] = settings.require_secret()
    os.environ["LOYALTY_INTROSPECTION"] = settings.introspection.value
    read = Settings.from_env()
    differing = [f.name for f in fields(Settings) if getattr(read, f.name) != getattr(settings, f.name)]
    if differing:
        raise ConfigurationError(
            f"the server's settings differ from its environment in {', '.join(differing)}"
        )


class Stopped(BaseException):
    """SIGTERM outside uvicorn's own handling (before it started, or re-raised after it stopped)."""


def listen(host: str, port: int, hint: str = "") -> socket.socket:
    """The listening socket; PORT_IN_USE (naming the port, --port and `hint`) when another program has it."""
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
                f"{shown} is already in use; choose another with --port{hint}",
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


@contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """Under --workers N, the workers' metrics live in files a scrape of any of them adds up
    (prometheus-client's multiprocess mode): a fresh directory of this run's own in the system's
    temporary directory (never one another host or container could share), removed at the end.
    A killed run leaves its directory to the system's temporary-file cleaning."""
    if workers <= 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    directory = tempfile.mkdtemp(prefix="loyalty-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(directory, ignore_errors=True)
